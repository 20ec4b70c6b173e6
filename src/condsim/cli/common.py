"""Shared CLI helpers: parsing lists, checking outputs and devices, printing result tables."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console

from condsim.errors import CondsimError

console = Console()


def _shared_help(name: str) -> str:
    """The help text of a ``SharedOptions`` field, so hand-written commands describe an
    option exactly as every ``condsim eval <benchmark>`` does."""
    import dataclasses

    from condsim.benchmarks.spec import SharedOptions, opt_of

    return next(opt_of(f).help for f in dataclasses.fields(SharedOptions) if f.name == name)


WORKERS_HELP = _shared_help("num_workers")
DEVICE_HELP = _shared_help("device")


def check_out_dir(path: str | Path, what: str = "--out") -> Path:
    """``path`` as an output folder: an existing writable folder, or one that can be created
    (its nearest existing parent is a writable folder). Nothing is created here, so a command
    failing later on another input leaves no empty folder behind.

    Called before any model is loaded or data is read, so a bad ``--out`` fails at once:
    a path that is a file (or has a file among its parents), a parent that cannot be
    written, or a read-only folder raise :class:`CondsimError` naming ``what`` and the path.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise CondsimError(f"{what} {path}: is a file, not a folder; give a folder path "
                           "(or move the file away)")
    existing = next((p for p in (path, *path.absolute().parents) if p.exists()), None)
    if existing is None:  # pragma: no cover - the root always exists
        raise CondsimError(f"{what} {path}: no existing parent folder")
    if not existing.is_dir():
        raise CondsimError(f"{what} {path}: {existing} is a file, not a folder; give another "
                           "path")
    try:  # os.access misses read-only mounts and ACLs: try writing
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".condsim-write-check.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        where = "folder" if existing == path else f"parent folder {existing}"
        raise CondsimError(f"{what} {path}: {where} is not writable ({exc.strerror or exc}); "
                           "choose a folder you can write to or fix its permissions") from exc
    return path


def check_device(device: str | None) -> str | None:
    """``--device``: ``None`` (the default device), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``,
    available on this machine (:func:`condsim.benchmarks.spec.check_device`, the rule every
    benchmark config applies); else :class:`CondsimError` saying what is available."""
    from condsim.benchmarks.spec import check_device as problem_of

    if device is None or not device.strip():
        return None
    device = device.strip().lower()
    problem = problem_of(device)
    if problem:
        raise CondsimError(f"--device {device}: {problem}")
    return device


PRECISION_HELP = _shared_help("precision")


def make_encoder(model: str, device: str | None = None, precision: str = "auto") -> Any:
    """The CLI's ``--device`` checked (:func:`check_device`), then
    :func:`condsim.benchmarks.run.create_encoder`."""
    from condsim.benchmarks.run import create_encoder

    return create_encoder(model, check_device(device), precision)
