"""``condsim eval suite``: models x benchmarks from one YAML file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from condsim.cli.common import (
    DEVICE_HELP,
    PRECISION_HELP,
    WORKERS_HELP,
    check_device,
    check_out_dir,
    console,
    make_encoder,
)
from condsim.cli.launch import (
    gpus_per_node_option,
    launch,
    partition_option,
    slurm_hours_option,
    submit_option,
    submit_target,
)
from condsim.errors import CondsimError


def _print_rows(suite: Path, models: list[str], n_runs: int, rows: list[dict[str, Any]],
                out: Path) -> bool:
    """The suite's table (one row per model and run) and where its summary is; returns
    whether any run failed."""
    from condsim.results.run_result import headline_value

    table = Table(title=f"suite {suite.name}: {len(models)} model(s) x {n_runs} run(s)")
    for col in ("model", "run", "status", "headline (%)"):
        table.add_column(col)
    for r in rows:
        h = r.get("headline") or {}
        cell = r.get("error", "") if r["status"] == "failed" else \
            f"{h['name']} {headline_value(h, r['folder']) * 100:.2f}"
        table.add_row(r["model"], r["run"], r["status"], cell)
    console.print(table)
    console.print(f"summary: {out / 'suite.json'}; `condsim report {out}` for the report")
    return any(r["status"] == "failed" for r in rows)


def register(app: typer.Typer, eval_app: typer.Typer, synth_app: typer.Typer) -> None:
    @eval_app.command("suite")
    def eval_suite(
        ctx: typer.Context,
        suite: Path = typer.Option(..., help="YAML list of runs: '- benchmark: lrvsf' plus "
                                   "that benchmark's config fields (see docs/suite.md)."),
        model: list[str] = typer.Option(..., "--model", "-m",
                                        help="Model name; repeat for several models."),
        out: Path = typer.Option(..., "--out", help="Results go to OUT/<model>/<run>/."),
        cache_dir: Path = typer.Option(None, help="Embedding cache for runs naming none."),
        workers: int = typer.Option(None, help=WORKERS_HELP + " Overrides the file."),
        device: str = typer.Option(None, help=DEVICE_HELP),
        precision: str = typer.Option("auto", help=PRECISION_HELP),
        submit: str | None = submit_option(), gpus_per_node: int = gpus_per_node_option(),
        slurm_hours: int = slurm_hours_option(), partition: str | None = partition_option(),
    ) -> None:
        """Evaluate each model on every run of the suite file. The file is checked before
        anything runs; finished runs (OUT/<model>/<run>/results.json) are kept, so an
        interrupted suite resumes; a run failing with a clear error is recorded in
        OUT/suite.json and the others go on (exit code 1 if any failed). Under torchrun or
        with --submit, every run is shared by the ranks."""
        import json
        from contextlib import nullcontext

        from condsim.distributed import is_main_process, maybe_init_distributed
        from condsim.progress import no_progress, rich_progress
        from condsim.registry import check_model_name
        from condsim.suite import read_suite, run_suite

        target = submit_target(submit)  # first: before anything is read
        check_out_dir(out)
        if cache_dir is not None:
            check_out_dir(cache_dir, "--cache-dir")
        check_device(device)
        runs = read_suite(suite)
        if target is not None:
            for name in model:  # an unknown name fails here, not in the job
                check_model_name(name)
            summary = out / "suite.json"
            before = summary.stat().st_mtime_ns if summary.is_file() else None
            try:
                launch(ctx, out, target, gpus_per_node=gpus_per_node, hours=slurm_hours,
                       partition=partition, outputs="results and suite.json")
            except CondsimError:
                # a suite with a failed run exits 1 in every task: show its table anyway
                if not summary.is_file() or summary.stat().st_mtime_ns == before:
                    raise
            if target.cluster == "local" and _print_rows(
                    suite, model, len(runs), json.loads(summary.read_text()), out):
                raise typer.Exit(1)
            return
        maybe_init_distributed()  # under torchrun: the ranks share each run; rank 0 reports
        main_rank = is_main_process()
        with (rich_progress() if main_rank else nullcontext(no_progress)) as progress:
            rows = run_suite(model, runs, out, progress=progress,
                             make_model=lambda name: make_encoder(name, device, precision),
                             cache_dir=str(cache_dir) if cache_dir else None,
                             num_workers=workers)
        if not main_rank:
            if any(r["status"] == "failed" for r in rows):
                raise typer.Exit(1)
            return
        failed = _print_rows(suite, model, len(runs), rows, out)
        if failed:
            raise typer.Exit(1)
