"""``condsim cache info|verify|prune``."""

from __future__ import annotations

import shutil
from pathlib import Path

import typer
from rich.table import Table

from condsim.cli.common import console


def _spaces(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.glob("*/space.json"))


def register(app: typer.Typer, eval_app: typer.Typer, synth_app: typer.Typer) -> None:
    cache_app = typer.Typer(help="Inspect and maintain the embedding cache.",
                            no_args_is_help=True)
    app.add_typer(cache_app, name="cache")

    def root_of(cache_dir: Path | None) -> Path:
        from condsim.paths import default_cache_dir

        return Path(cache_dir) if cache_dir else default_cache_dir()

    @cache_app.command("info")
    def info(cache_dir: Path = typer.Option(None, help="Cache root (default ~/.cache).")) -> None:
        """One line per model space: rows, shards, size."""
        from condsim.cache.store import EmbeddingCache

        table = Table(title=f"embedding cache {root_of(cache_dir)}")
        for col in ("model", "rows", "shards", "MiB", "corrupt"):
            table.add_column(col)
        for space in _spaces(root_of(cache_dir)):
            i = EmbeddingCache.open_space(space).info()
            table.add_row(i["model"], str(i["rows"]), str(i["shards"]),
                          f"{i['bytes'] / 2**20:.1f}", str(len(i["corrupt"])))
        console.print(table)

    @cache_app.command("verify")
    def verify(cache_dir: Path = typer.Option(None, help="Cache root."),
               repair: bool = typer.Option(True, help="Delete corrupt shards.")) -> None:
        """Recompute shard checksums; corrupt shards are dropped (re-encoded next run)."""
        from condsim.cache.store import EmbeddingCache

        total = 0
        for space in _spaces(root_of(cache_dir)):
            bad = EmbeddingCache.open_space(space).verify(repair=repair)
            total += len(bad)
            for name in bad:
                console.print(f"[red]corrupt[/] {space / name}")
        console.print(f"{total} corrupt shard(s)" + (" removed" if repair and total else ""))
        if total and not repair:
            raise typer.Exit(1)

    @cache_app.command("prune")
    def prune(cache_dir: Path = typer.Option(None, help="Cache root."),
              model: str = typer.Option(None, help="Also delete this model's whole space "
                                        "(its cache id or name, see `cache info`).")) -> None:
        """Remove temp files of killed writers and corrupt shards; optionally a model."""
        from condsim.cache.store import EmbeddingCache

        removed = 0
        for space in _spaces(root_of(cache_dir)):
            cache = EmbeddingCache.open_space(space)
            if model and model in (cache.meta.cache_id, cache.meta.name):
                shutil.rmtree(space)
                console.print(f"removed {space} ({cache.meta.cache_id})")
                continue
            removed += cache.prune_temp() + len(cache.verify(repair=True))
        console.print(f"removed {removed} temp file(s)/corrupt shard(s)")
