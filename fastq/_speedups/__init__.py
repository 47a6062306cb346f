"""Cython accelerators for the hot path; each has a pure-Python twin elsewhere in the package."""
