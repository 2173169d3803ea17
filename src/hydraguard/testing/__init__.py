"""Helpers to run hydraguard's servers in-process: used by the test suite, benchmarks and demos."""
