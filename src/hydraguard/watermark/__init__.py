"""Keyed green-list output watermarks (Kirchenbauer et al. 2023) with per-account keys and distillation forensics."""
