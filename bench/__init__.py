"""Benchmarks that print figures; run on demand, never by the tests (see README.md)."""
