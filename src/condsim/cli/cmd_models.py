"""``condsim models``: list registered models and schemes."""

from __future__ import annotations

import typer
from rich.table import Table

from condsim.cli.common import console
from condsim.registry import list_models


def register(app: typer.Typer, eval_app: typer.Typer, synth_app: typer.Typer) -> None:
    @app.command("models")
    def models() -> None:
        """List the registered models and name schemes (hf:, combine:, ...)."""
        table = Table(title="condsim models")
        table.add_column("name")
        table.add_column("kind")
        table.add_column("description")
        for entry in list_models():
            table.add_row(
                entry.name + ("<...>" if entry.is_scheme else ""),
                "scheme" if entry.is_scheme else "model",
                entry.description,
            )
        console.print(table)
