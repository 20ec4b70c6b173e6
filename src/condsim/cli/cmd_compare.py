"""``condsim compare RUN_A RUN_B``: the :class:`condsim.metrics.significance.Comparison` of two
runs of the same benchmark (paired as its spec's ``pairing`` says), as a table and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from condsim.cli.common import console


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def register(app: typer.Typer, eval_app: typer.Typer, synth_app: typer.Typer) -> None:
    @app.command("compare")
    def compare(
        run_a: Path = typer.Argument(..., help="Baseline run directory (results.json)."),
        run_b: Path = typer.Argument(..., help="Run compared against the baseline."),
        seed: int = typer.Option(0, help="Seed of the paired bootstrap."),
        bootstrap: int = typer.Option(2000, help="Bootstrap resamples."),
        threshold: float = typer.Option(
            0.002, help="Smallest difference called meaningful, as a fraction (GeneCIS paper: "
            "0.2% average R@1 = 0.002)."),
        out: Path = typer.Option(None, "--out", help="Also write the comparison as JSON."),
    ) -> None:
        """Paired bootstrap of B - A per GeneCIS task (R@1) and their average, per FashionIQ
        category (R@10), or over CIRR / MIT-States (R@1) and CIRCO (mAP@10) queries; for two
        LRVS-F runs with the same folds, seed and distractors, paired per-fold differences per
        distractor count and K. Gives the difference, 95% interval, p-value, whether the
        interval excludes 0 and whether |diff| exceeds the threshold."""
        from condsim.io import atomic_write_text
        from condsim.metrics.significance import compare as compare_pair
        from condsim.registry import get_benchmark
        from condsim.results.run_result import load_result

        a, b = load_result(run_a), load_result(run_b)
        cmp = compare_pair(a, b, get_benchmark(a.benchmark).pairing, seed=seed,
                           n_resamples=bootstrap, threshold=threshold)
        table = Table(title=f"{cmp.benchmark}: {cmp.model_b} - {cmp.model_a} "
                            f"({cmp.metric}, {cmp.method})")
        pct = f"{threshold * 100:.1f}%"
        table.add_column("group", no_wrap=True)
        for col in ("n", "A", "B", "diff", "95% CI", "p", "CI excl. 0", f"> {pct}"):
            table.add_column(col)
        for r in (*cmp.rows, *([cmp.average] if cmp.average else [])):
            table.add_row(r.group, str(r.n), f"{r.a * 100:.2f}", f"{r.b * 100:.2f}",
                          f"{r.diff * 100:+.2f}",
                          f"[{r.ci_low * 100:+.2f}, {r.ci_high * 100:+.2f}]",
                          f"{r.p_value:.4f}", _yes(r.significant), _yes(r.exceeds_threshold))
        console.print(table)
        head = cmp.headline
        console.print(
            f"{head.group}: B - A = {head.diff * 100:+.2f} points, 95% CI "
            f"[{head.ci_low * 100:+.2f}, {head.ci_high * 100:+.2f}], p = "
            f"{head.p_value:.4f}: {'significant' if head.significant else 'not significant'}"
            f" (CI {'excludes' if head.significant else 'includes'} 0); |diff| "
            f"{'>' if head.exceeds_threshold else '<='} {pct}")
        for key, (va, vb) in cmp.protocol_differences.items():
            console.print(f"note: protocol differs in {key}: {va!r} vs {vb!r}")
        if out is not None:
            text = json.dumps(cmp.to_dict(), indent=2)
            console.print(f"wrote {atomic_write_text(out, text)}")
