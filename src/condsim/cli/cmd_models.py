"""``condsim models``: list registered models and schemes, or describe one model."""

from __future__ import annotations

import typer
from rich.table import Table

from condsim.cli.common import DEVICE_HELP, PRECISION_HELP, console, make_encoder
from condsim.registry import list_models


def register(app: typer.Typer, eval_app: typer.Typer, synth_app: typer.Typer) -> None:
    @app.command("models")
    def models(
        name: str = typer.Argument(None, help="Load this model and describe it."),
        device: str = typer.Option(None, help=DEVICE_HELP),
        precision: str = typer.Option("auto", help=PRECISION_HELP),
    ) -> None:
        """List the registered models and name schemes (hf:, open_clip:, combine:, ...) with
        their embedding dimension and the conditions they accept; with NAME, load that model
        and show what identifies its embeddings (dimension, conditions, preprocessing,
        precision, weights revision, cache id)."""
        if name:
            meta = make_encoder(name, device, precision).meta
            console.print(f"[bold]{meta.name}[/]")
            for key, value in (
                ("embedding dim", meta.embedding_dim),
                ("conditions", ", ".join(meta.conditions) or "none"),
                ("preprocessing", meta.preprocessing_id), ("precision", meta.precision),
                ("revision", meta.revision or "-"), ("cache id", meta.cache_id),
            ):
                console.print(f"  {key:14s} {value}", soft_wrap=True, highlight=False)
            return
        table = Table(title="condsim models")
        for col in ("name", "kind", "dim", "conditions", "description"):
            table.add_column(col)
        for entry in list_models():
            table.add_row(
                entry.name + ("<...>" if entry.is_scheme else ""),
                "scheme" if entry.is_scheme else "model",
                str(entry.dim) if entry.dim else "ckpt",
                ", ".join(entry.conditions),
                entry.description,
            )
        console.print(table)
