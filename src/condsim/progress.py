"""A tiny progress interface: the library reports, the CLI draws bars (rich)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol


class ProgressFactory(Protocol):
    def __call__(self, description: str, total: int | None) -> Callable[[int], None]: ...


def _noop(_: int) -> None:
    return None


def no_progress(description: str, total: int | None) -> Callable[[int], None]:
    """The default: report nothing."""
    return _noop


@contextmanager
def rich_progress() -> Iterator[ProgressFactory]:
    """A rich progress display; yields a factory creating one bar per task."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), transient=False,
    ) as prog:

        def factory(description: str, total: int | None) -> Callable[[int], None]:
            task = prog.add_task(description, total=total)
            return lambda n: prog.advance(task, n)

        yield factory
