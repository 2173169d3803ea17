"""Shared values of the console's tests."""

from __future__ import annotations

from hydraguard.admin.audit import Actor

SECRET = b"console-test-secret"
ACTOR = Actor("cli:tester")
START = 1_700_000_000.0
