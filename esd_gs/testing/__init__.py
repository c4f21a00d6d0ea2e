"""Scaffolding for tests and benchmarks (not used by the esd-gs command itself)."""
