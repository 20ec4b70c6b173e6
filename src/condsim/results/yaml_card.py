"""The LRVS-F leaderboard's HF model-card YAML (``model-index``), byte-compatible with the
official harness (same keys, order, number formatting)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from condsim.io import atomic_write_text

LEADERBOARD_URL = "https://huggingface.co/spaces/Slep/LRVSF-Leaderboard"


def human_format(num: float) -> str:
    """10000 -> "10K", 1000000 -> "1M", 2000014 -> "2M" (3 significant digits)."""
    num = float(f"{num:.3g}")
    magnitude = 0
    while abs(num) >= 1000:
        magnitude += 1
        num /= 1000.0
    return "{}{}".format(f"{num:f}".rstrip("0").rstrip("."), ["", "K", "M", "B", "T"][magnitude])


def format_pm(mean: float, std: float) -> str:
    """Percent with 2 decimals: ``"93.44 ± 0.83"`` from fractions."""
    return f"{mean * 100:02.2f} ± {std * 100:.2f}"


def lrvsf_model_index(
    model_name: str,
    recalls: Mapping[int, tuple[Sequence[float], Sequence[float]]],
    ks: Sequence[int],
    n_available: int,
    embedding_dim: int,
    conditioning: str,
) -> dict[str, Any]:
    """``recalls[n] = (means per K, stds per K)`` as fractions -> the model-index dict."""
    metrics: list[dict[str, Any]] = [
        {
            "type": f"recall_at_{k}|{n}",
            "value": format_pm(mean[j], std[j]),
            "name": f"R@{k} +{human_format(n)} Dist.",
        }
        for n, (mean, std) in recalls.items()
        for j, k in enumerate(ks)
    ]
    metrics += [
        {"type": "n_dists", "name": "Available Dists.", "value": int(n_available)},
        {"type": "embedding_dim", "name": "Embedding Dimension", "value": int(embedding_dim)},
        {"type": "conditioning", "name": "Conditioning", "value": conditioning},
    ]
    return {
        "tags": ["lrvsf-benchmark"],
        "model-index": [{
            "name": model_name,
            "results": [{
                "task": {"type": "Retrieval"},
                "dataset": {
                    "type": "Slep/LAION-RVS-Fashion",
                    "name": "LAION - Referred Visual Search - Fashion",
                    "split": "test",
                },
                "metrics": metrics,
                "source": {"name": "LRVSF Leaderboard", "url": LEADERBOARD_URL},
            }],
        }],
    }


def dump_yaml(data: Mapping[str, Any]) -> str:
    """Same emitter settings as the official harness (``yaml.dump(..., allow_unicode=True)``)."""
    return yaml.dump(dict(data), allow_unicode=True)


def write_yaml(path: str | Path, data: Mapping[str, Any]) -> Path:
    return atomic_write_text(path, dump_yaml(data))
