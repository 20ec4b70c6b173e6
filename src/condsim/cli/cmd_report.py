"""``condsim report`` and ``condsim leaderboard``."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import typer
from rich.table import Table

from condsim.cli.common import console


def register(app: typer.Typer, eval_app: typer.Typer, synth_app: typer.Typer) -> None:
    @app.command("report")
    def report(
        runs: list[Path] = typer.Argument(..., help="Run directories (or folders of runs)."),
        out: Path = typer.Option(Path("report/report.html"), "--out", help="HTML file."),
    ) -> None:
        """Self-contained HTML report (plots, comparison table with significance marks,
        failure gallery) + PNG plots + report.md."""
        from condsim.results.report import build_report

        written = build_report(runs, out)
        console.print(f"wrote {written['html']} ({len(written) - 2} plots, report.md)")

    @app.command("leaderboard")
    def leaderboard(
        runs: list[Path] = typer.Argument(..., help="Run directories (or folders of runs)."),
        sort: str = typer.Option("headline", help="Column to sort by."),
        out: Path = typer.Option(None, "--out", help="Write .md, .csv or .json."),
    ) -> None:
        """Sortable table of runs: model, benchmark, headline ± interval, seed, protocol."""
        from condsim.results.report import leaderboard_rows, load_runs
        from condsim.results.run_result import atomic_write_text

        rows = leaderboard_rows(load_runs(runs), sort)
        table = Table(title="condsim leaderboard")
        for col in rows[0]:
            table.add_column(col)
        for r in rows:
            table.add_row(*[str(v) for v in r.values()])
        console.print(table)
        if out is not None:
            if out.suffix == ".json":
                text = json.dumps(rows, indent=2)
            elif out.suffix == ".csv":
                buf = io.StringIO()
                w = csv.DictWriter(buf, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
                text = buf.getvalue()
            else:
                head = "| " + " | ".join(rows[0]) + " |"
                text = "\n".join([head, "|" + "---|" * len(rows[0])] + [
                    "| " + " | ".join(str(v) for v in r.values()) + " |" for r in rows]) + "\n"
            atomic_write_text(out, text)
            console.print(f"wrote {out}")
