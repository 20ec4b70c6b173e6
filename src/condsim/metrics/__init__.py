"""Metric functions: small, pure numpy, each docstring states its formula and tie rule."""

from condsim.metrics.bootstrap import bootstrap_ci, paired_bootstrap
from condsim.metrics.recall import (
    expected_recall_at_k,
    rank_counts,
    recall_from_counts,
    weighted_mean_std,
)

__all__ = [
    "bootstrap_ci",
    "expected_recall_at_k",
    "paired_bootstrap",
    "rank_counts",
    "recall_from_counts",
    "weighted_mean_std",
]
