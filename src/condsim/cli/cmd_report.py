"""``condsim report`` and ``condsim leaderboard``: argument parsing only."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from condsim.cli.common import check_out_dir, console


def register(app: typer.Typer, eval_app: typer.Typer, synth_app: typer.Typer) -> None:
    @app.command("report")
    def report(
        runs: list[Path] = typer.Argument(
            ..., help="Run directories, results.json files or folders of runs."),
        out: Path = typer.Option(Path("report/report.html"), "--out", help="HTML file; PNGs "
                                 "and report.md are written beside it."),
        reference: str = typer.Option(None, "--reference", help="Compare each benchmark's "
                                      "runs with the run whose model/folder contains this "
                                      "(default: the first run)."),
        max_failures: int = typer.Option(6, "--max-failures", min=0,
                                         help="Failure cases shown per run."),
    ) -> None:
        """Self-contained HTML report: recall-vs-distractors curves, per-task bars, comparison
        tables with significance marks, failure gallery; PNG plots and report.md beside it.
        The folder of OUT may exist: the report's own files are replaced, others kept; a
        failing report writes nothing."""
        from condsim.errors import CondsimError
        from condsim.results.report import build_report

        if out.is_dir():
            raise CondsimError(f"--out {out}: is a folder; give the HTML file to write "
                               f"(e.g. {out / 'report.html'})")
        check_out_dir(out.parent, "--out")
        written = build_report(runs, out, reference=reference, max_failures=max_failures)
        n_plots = len(written) - 2
        console.print(f"wrote {written['html']} ({n_plots} plot PNGs and "
                      f"{written['markdown'].name} beside it)")

    @app.command("leaderboard")
    def leaderboard(
        runs: list[Path] = typer.Argument(
            ..., help="Run directories, results.json files or folders of runs."),
        sort: str = typer.Option("benchmark,value", "--sort", help="Comma-separated columns: "
                                 "model, benchmark, metric, value, std, ci_low, ci_high, seed, "
                                 "protocol, date, run (numbers and dates best/newest first)."),
        reverse: bool = typer.Option(False, "--reverse", help="Flip the sort order."),
        out: Path = typer.Option(None, "--out", help="Also write the table: .md, .csv or "
                                 ".json."),
    ) -> None:
        """Sortable table of runs: model, benchmark, headline metric ± std or [CI], seed,
        protocol version, date."""
        from condsim.results.leaderboard import (
            DISPLAY_HEADERS,
            display_cells,
            leaderboard_rows,
            load_runs,
            write_leaderboard,
        )

        rows = leaderboard_rows(load_runs(runs), sort, reverse)
        table = Table(title="condsim leaderboard")
        for h in DISPLAY_HEADERS:
            table.add_column(h, justify="right" if h.startswith(("headline", "seed")) else "left")
        for row in rows:
            table.add_row(*[escape(c) for c in display_cells(row)])
        console.print(table)
        if out is not None:
            console.print(f"wrote {write_leaderboard(rows, out)}")
