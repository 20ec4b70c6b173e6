"""``condsim demo``."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from condsim.cli.common import console, lrvsf_table


def register(app: typer.Typer, eval_app: typer.Typer, synth_app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        out: Path = typer.Option(Path("condsim-demo"), "--out", help="Output folder."),
        size: str = typer.Option("small", help="tiny | small | medium"),
        seed: int = typer.Option(0, help="Seed of the synthetic world and of all draws."),
        workers: int = typer.Option(2, help="Decode worker processes."),
    ) -> None:
        """Generate a synthetic benchmark and evaluate models on it, end to end, offline."""
        from condsim.demo import run_demo
        from condsim.progress import rich_progress

        start = time.perf_counter()
        with rich_progress() as progress:
            results = run_demo(out, size, seed=seed, workers=workers, progress=progress)
        for result in results.values():
            console.print(lrvsf_table(result))
        console.print(
            f"demo finished in {time.perf_counter() - start:.0f} s; results in {out / 'runs'}"
        )
