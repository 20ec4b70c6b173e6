"""Seeded synthetic datasets in the benchmarks' real file formats (no downloads)."""
