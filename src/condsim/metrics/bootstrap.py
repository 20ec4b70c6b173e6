"""Seeded bootstrap confidence intervals of one run (:func:`bootstrap_ci`).

Paired tests live in :mod:`condsim.metrics.significance`; :func:`paired_bootstrap` here is a
thin view of it kept for existing callers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from condsim.errors import PairingError
from condsim.metrics import significance as _significance
from condsim.metrics.significance import resampled_means as _resampled_means


@dataclass(frozen=True)
class BootstrapCI:
    """Percentile bootstrap interval of a mean: ``[q_{alpha/2}, q_{1-alpha/2}]`` of resampled
    means, with ``mean`` the plain sample mean."""

    mean: float
    low: float
    high: float
    n_resamples: int
    seed: int
    level: float

    def to_dict(self) -> dict[str, float | int]:
        return {
            "mean": self.mean,
            "ci_low": self.low,
            "ci_high": self.high,
            "n_resamples": self.n_resamples,
            "seed": self.seed,
            "level": self.level,
        }


def bootstrap_ci(
    values: np.ndarray, *, n_resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> BootstrapCI:
    """Percentile bootstrap CI of ``mean(values)`` over items (queries).

    Resample ``n`` items with replacement ``n_resamples`` times (``numpy.random.default_rng(
    seed)``), take each resample's mean ``m_b``; the interval is the ``(1-level)/2`` and
    ``(1+level)/2`` quantiles of ``{m_b}``.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    means = _resampled_means(x, n_resamples, seed)
    a = (1.0 - level) / 2.0
    low, high = np.quantile(means, [a, 1.0 - a])
    return BootstrapCI(float(x.mean()), float(low), float(high), n_resamples, seed, level)


@dataclass(frozen=True)
class PairedTest:
    """Paired bootstrap of the difference ``mean(b - a)`` over the same items."""

    diff: float
    low: float
    high: float
    p_value: float
    n_resamples: int
    seed: int
    level: float

    def to_dict(self) -> dict[str, float | int]:
        return {
            "diff": self.diff,
            "ci_low": self.low,
            "ci_high": self.high,
            "p_value": self.p_value,
            "n_resamples": self.n_resamples,
            "seed": self.seed,
            "level": self.level,
        }


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> PairedTest:
    """Paired bootstrap test of ``d = mean(b_i - a_i)``: a thin view of
    :func:`condsim.metrics.significance.paired_bootstrap` (items resampled jointly, percentile
    CI of the resampled ``d_b``, p-value ``min(1, 2 min(P(d_b <= 0), P(d_b >= 0)))`` with the
    ``(count + 1) / (n_resamples + 1)`` correction).
    """
    try:
        row = _significance.paired_bootstrap(a, b, n_resamples=n_resamples, seed=seed,
                                              level=level)
    except PairingError as exc:
        raise ValueError(f"paired test needs equal lengths: {exc}") from None
    return PairedTest(row.diff, row.ci_low, row.ci_high, row.p_value, n_resamples, seed, level)
