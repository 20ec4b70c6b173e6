"""``condsim demo``: the whole evaluation story on a laptop, no downloads.

Writes a synthetic LRVS-F set, evaluates ``test/tiny-clip`` and its GeneCIS-style baselines
on it, and saves each run's ``results.json`` + ``model_card.yaml``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from condsim.benchmarks.lrvsf import LRVSFConfig, evaluate_lrvsf
from condsim.progress import ProgressFactory, no_progress
from condsim.registry import create_model
from condsim.results.run_result import RunResult

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoSize:
    products: int
    distractors: int
    n_dists: tuple[int, ...]


SIZES = {
    "tiny": DemoSize(40, 200, (100, 400)),
    "small": DemoSize(200, 2000, (1000, 5000, 20000)),
    "medium": DemoSize(1000, 10000, (10000, 50000, 100000)),
}

DEMO_MODELS = (
    "test/tiny-clip",
    "combine:image-only/test/tiny-clip",
    "combine:text-only/test/tiny-clip",
)


def run_demo(
    out: str | Path, size: str = "small", *, seed: int = 0, workers: int = 2,
    progress: ProgressFactory = no_progress,
) -> dict[str, RunResult]:
    """Generate the synthetic world and evaluate the demo models; returns results by model."""
    from condsim.synthetic.lrvsf import write_lrvsf

    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}")
    spec = SIZES[size]
    out = Path(out)
    data_root = out / "data" / "lrvsf"
    if not (data_root / "products.parquet").exists():
        logger.info("writing synthetic LRVS-F set to %s", data_root)
        write_lrvsf(data_root, n_products=spec.products, n_distractors=spec.distractors,
                    seed=seed)
    results: dict[str, RunResult] = {}
    for name in DEMO_MODELS:
        model = create_model(name)
        cfg = LRVSFConfig(
            data_root=str(data_root), conditioning="category", n_dists=spec.n_dists,
            seed=seed, folds="seeded", num_workers=workers,
            cache_dir=str(out / "cache"),
        )
        run_dir = out / "runs" / ("lrvsf__" + name.replace("/", "_").replace(":", "_"))
        results[name] = evaluate_lrvsf(model, cfg, run_dir, progress=progress)
    return results
