"""Typed, versioned results: JSON records, HF model-card YAML, tables."""

from condsim.results.run_result import SCHEMA_VERSION, RunResult, load_result

__all__ = ["SCHEMA_VERSION", "RunResult", "load_result"]
