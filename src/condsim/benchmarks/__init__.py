"""Benchmark protocols, one module each, wired from data/, models/, search/ and metrics/."""
