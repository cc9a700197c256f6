"""Helpers for tests, demos and benchmarks: real services on loopback, never mocks."""
