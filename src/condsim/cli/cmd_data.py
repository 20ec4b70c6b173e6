"""``condsim data check <benchmark>``: validate a dataset on disk before a long run.

One command per benchmark whose spec declares ``check``, with the same path and config
flags as ``condsim eval <benchmark>`` (the config is built the same way). It prints the
counts against the official ones, the missing / corrupt / duplicate files (truncated; the
whole list with ``--out report.json``), the source of every missing piece, and exits:

* ``0`` complete: the published set, every image decodable;
* ``1`` runs, but not on the published set (counts differ, e.g. fewer distractors or a
  synthetic set; or images the run would skip);
* ``2`` cannot run as published with these options (missing or malformed annotation files,
  duplicates the reader refuses, more bad images than ``--max-missing``, unreadable
  parquet fragments, ...). Errors in the options themselves also exit 2.

``--expect any`` keeps count differences in the report without letting them set the code
(a whole but smaller set, e.g. ``condsim synth``'s, then exits 0).
``--workers N`` sets the decode threads.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Optional

import typer

from condsim.cli.common import console

#: command-level options that are not config fields
_OWN = ("out", "expect", "show")


def make_check_command(spec: Any) -> Any:
    """The ``condsim data check <spec.name>`` callback, its signature built from the
    config."""
    from condsim.benchmarks.datacheck import EXPECT_MODES
    from condsim.cli.cmd_eval import config_parameters

    params = [
        inspect.Parameter(
            "out", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],  # noqa: UP045
            default=typer.Option(None, "--out", metavar="PATH",
                                 help="Write the whole report (every file listed) as JSON.")),
        inspect.Parameter(
            "expect", inspect.Parameter.KEYWORD_ONLY, annotation=str,
            default=typer.Option("published", "--expect",
                                 help="published: official counts must match (exit 1 when "
                                 "they differ) | any: report count differences only "
                                 f"(one of: {', '.join(EXPECT_MODES)}).")),
        inspect.Parameter(
            "show", inspect.Parameter.KEYWORD_ONLY, annotation=int,
            default=typer.Option(10, "--show", min=0,
                                 help="Rows shown per list (missing, corrupt, ...).")),
    ]
    params += config_parameters(spec, _OWN)

    def command(**given: Any) -> int:
        from condsim.benchmarks.datacheck import render_report
        from condsim.cli.cmd_eval import config_from_flags
        from condsim.errors import ConfigError
        from condsim.io import atomic_write_json
        from condsim.progress import rich_progress

        out, expect, show = given.pop("out"), given.pop("expect"), given.pop("show")
        if expect not in EXPECT_MODES:
            raise ConfigError(f"--expect {expect!r}: use one of {', '.join(EXPECT_MODES)}")
        if out is not None and Path(out).is_dir():
            raise ConfigError(f"--out {out}: is a folder; give a file name (report.json)")
        cfg = config_from_flags(spec, given, f"condsim data check {spec.name}")
        with rich_progress() as progress:
            report = spec.check(cfg, progress)
        for item in render_report(report, expect=expect, limit=show):
            console.print(item)
        if out is not None:
            atomic_write_json(out, report.to_dict(expect))
            console.print(f"wrote {out}")
        code = report.exit_code(expect)
        if code:
            raise typer.Exit(code)
        return 0

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__name__ = f"check_{spec.name}"
    command.__doc__ = (f"Check a {spec.name} dataset against the official files and counts "
                       "(exit 0 complete, 1 runs but differs from the published set, 2 cannot "
                       f"run). Source: {spec.reference}.")
    return command


def register(app: typer.Typer, eval_app: typer.Typer, synth_app: typer.Typer) -> None:
    from condsim.registry import list_benchmarks

    data_app = typer.Typer(help="Inspect benchmark datasets on disk.", no_args_is_help=True)
    check_app = typer.Typer(
        help="Validate a dataset: layout, official files and counts, every image present and "
        "decodable, duplicates. Exit 0 complete, 1 runs but differs from the published set, "
        "2 cannot run.", no_args_is_help=True)
    app.add_typer(data_app, name="data")
    data_app.add_typer(check_app, name="check")
    for spec in list_benchmarks():
        if spec.check is not None:
            check_app.command(spec.name)(make_check_command(spec))
