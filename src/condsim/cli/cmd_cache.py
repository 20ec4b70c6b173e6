"""``condsim cache info|verify|prune``."""

from __future__ import annotations

import shutil
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from condsim.cli.common import console
from condsim.errors import CondsimError


def _spaces(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.glob("*/space.json"))


def _error(msg: str) -> None:
    console.print(f"[bold red]error:[/] {escape(msg)}", soft_wrap=True)


def register(app: typer.Typer, eval_app: typer.Typer, synth_app: typer.Typer) -> None:
    cache_app = typer.Typer(help="Inspect and maintain the embedding cache.",
                            no_args_is_help=True)
    app.add_typer(cache_app, name="cache")

    def root_of(cache_dir: Path | None) -> Path:
        """The cache root: ``--cache-dir`` (an existing folder: a typo is an error, not an
        empty cache) or the default one (which may not exist yet)."""
        from condsim.paths import default_cache_dir

        if cache_dir is None:
            return default_cache_dir()
        if not Path(cache_dir).is_dir():
            raise CondsimError(f"--cache-dir {cache_dir}: no such folder")
        return Path(cache_dir)

    @cache_app.command("info")
    def info(cache_dir: Path = typer.Option(None, help="Cache root (default ~/.cache).")) -> None:
        """One line per model space: rows, shards, size, checksum state of the shards (what
        `cache verify` would find). Reads every shard; changes nothing. Exit 1 when anything
        is damaged."""
        from condsim.cache.store import OK, EmbeddingCache

        table = Table(title=f"embedding cache {root_of(cache_dir)}")
        for col in ("model", "rows", "shards", "MiB", "ok", "damaged", "quarantined files"):
            table.add_column(col)
        problems: list[str] = []
        for space in _spaces(root_of(cache_dir)):
            try:
                i = EmbeddingCache.open_space(space, readonly=True).info()
            except CondsimError as exc:
                problems.append(str(exc))
                table.add_row(f"? ({space.name})", "", "", "", "", "space.json", "")
                continue
            states = i["shard_states"]
            damaged = {s: st for s, st in states.items() if st != OK}
            table.add_row(i["model"], str(i["rows"]), str(i["shards"]),
                          f"{i['bytes'] / 2**20:.1f}", str(len(states) - len(damaged)),
                          str(len(damaged)), str(i["quarantined_files"]))
            problems += [f"{space / stem}: {state} (`condsim cache verify` quarantines it)"
                         for stem, state in damaged.items()]
        console.print(table)
        for msg in problems:
            _error(msg)
        if problems:
            raise typer.Exit(1)

    @cache_app.command("verify")
    def verify(cache_dir: Path = typer.Option(None, help="Cache root."),
               repair: bool = typer.Option(True, help="Quarantine damaged shards (moved to "
                                           "<space>/quarantine/, re-encoded next run).")) -> None:
        """Recompute shard checksums; damaged shards are quarantined (re-encoded next run)."""
        from condsim.cache.store import EmbeddingCache

        total = 0
        failed = False
        for space in _spaces(root_of(cache_dir)):
            try:
                cache = EmbeddingCache.open_space(space, readonly=not repair)
                bad = cache.verify(repair=repair)
            except CondsimError as exc:
                _error(str(exc))
                failed = True
                continue
            total += len(bad)
            for stem in bad:
                console.print(f"[red]damaged[/] {escape(str(space / stem))}: "
                              f"{escape(cache.damage.get(stem, ''))}", soft_wrap=True)
        console.print(f"{total} damaged shard(s)" + (" quarantined" if repair and total else ""))
        if failed or (total and not repair):
            raise typer.Exit(1)

    @cache_app.command("prune")
    def prune(cache_dir: Path = typer.Option(None, help="Cache root."),
              model: str = typer.Option(None, help="Also delete this model's whole space "
                                        "(its cache id or name, see `cache info`).")) -> None:
        """Remove temp files of killed writers, damaged shards and the quarantine folder's
        files; optionally a model's whole space."""
        from condsim.cache.store import EmbeddingCache

        temp = damaged = qfiles = 0
        failed = False
        for space in _spaces(root_of(cache_dir)):
            try:
                cache = EmbeddingCache.open_space(space)
            except CondsimError as exc:
                _error(str(exc))
                failed = True
                continue
            if model and model in (cache.meta.cache_id, cache.meta.name):
                shutil.rmtree(space)
                console.print(f"removed {escape(str(space))} ({escape(cache.meta.cache_id)})")
                continue
            temp += cache.prune_temp()
            damaged += len(cache.verify(repair=True))
            for path in cache.quarantined():
                path.unlink(missing_ok=True)
                qfiles += 1
        console.print(f"removed {temp} temp file(s) and {qfiles} quarantined file(s) "
                      f"({damaged} damaged shard(s) found now)")
        if failed:
            raise typer.Exit(1)
