"""Simulated hardware (relay boards, scanners) for tests, benchmarks and demos without a bench."""
