"""Benchmarks: the main job (compare), sweeps, profiling, soak and the scheduler overhead."""
