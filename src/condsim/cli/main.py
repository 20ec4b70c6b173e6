"""condsim's command line: ``main(argv) -> int``; every command lives in its own module.

Each module in ``COMMAND_MODULES`` exposes ``register(app, eval_app, synth_app)`` and adds
its commands; ``condsim eval <benchmark>`` and ``condsim synth <dataset>`` are sub-apps.

``main`` is the one error boundary: no failure reaches the user as a traceback (unless
``--debug`` or ``CONDSIM_DEBUG=1`` asks for it). Exit codes:

- ``0``: success;
- ``1``: the machine failed the command: permission denied, disk full (ENOSPC), file too
  large (EFBIG), another OS error, an unexpected internal error (rerun with ``--debug``), or
  a command that reports failures itself (``eval suite`` with a failed run,
  ``cache verify --no-repair`` with corrupt shards);
- ``2``: the command line or its inputs need fixing: usage errors (unknown command or
  option, with a did-you-mean, bad option values), condsim's own errors
  (:class:`~condsim.errors.CondsimError`: malformed dataset, unknown model, ...), a missing
  file or folder, a file where a folder is expected or the reverse, a file that is not UTF-8;
- ``130``: interrupted (Ctrl-C).
"""

from __future__ import annotations

import difflib
import errno
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence

import typer
from rich.console import Console
from rich.markup import escape

from condsim.errors import CondsimError

COMMAND_MODULES = (
    "condsim.cli.cmd_models",
    "condsim.cli.cmd_eval",
    "condsim.cli.cmd_synth",
    "condsim.cli.cmd_demo",
    "condsim.cli.cmd_compare",
    "condsim.cli.cmd_report",
    "condsim.cli.cmd_cache",
    "condsim.cli.cmd_encode",
    "condsim.cli.cmd_training",
    "condsim.cli.cmd_download",
    "condsim.cli.cmd_suite",
    "condsim.cli.cmd_data",
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEBUG_ENV = "CONDSIM_DEBUG"

console = Console(stderr=True)
_state = {"debug": False}


def build_app() -> typer.Typer:
    """The ``condsim`` typer app with every command registered."""
    app = typer.Typer(
        name="condsim",
        help="Exact, fast, reproducible benchmarks and training for conditional image "
        "similarity (LRVS-Fashion, GeneCIS, CIRR, MIT-States, FashionIQ, CIRCO).",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    eval_app = typer.Typer(help="Evaluate a model on a benchmark.", no_args_is_help=True)
    synth_app = typer.Typer(
        help="Write a small synthetic dataset in a benchmark's real file format.",
        no_args_is_help=True,
    )
    app.add_typer(eval_app, name="eval")
    app.add_typer(synth_app, name="synth")

    @app.callback()
    def _root(
        verbose: bool = typer.Option(False, "--verbose", "-v", help="Show debug logs."),
        debug: bool = typer.Option(False, "--debug", help="Show the traceback of a failure "
                                   f"(also {DEBUG_ENV}=1)."),
    ) -> None:
        _state["debug"] = _state["debug"] or debug
        logging.basicConfig(
            level=logging.DEBUG if verbose else logging.INFO,
            format="%(levelname)s %(name)s: %(message)s",
        )

    for mod in COMMAND_MODULES:
        importlib.import_module(mod).register(app, eval_app, synth_app)
    return app


def _debug_requested(args: Sequence[str]) -> bool:
    """``--debug`` among the root options (before the command) or ``CONDSIM_DEBUG=1``."""
    if os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    for arg in args:
        if arg == "--debug":
            return True
        if not arg.startswith("-"):  # the command name: later options are the command's
            return False
    return False


def _is_usage_error(exc: BaseException) -> bool:
    """A click usage error, from typer's vendored click (``typer._click``, whose exceptions
    derive from ``typer.TyperException``, not ``click.ClickException``) or from click."""
    if isinstance(exc, typer.TyperException):
        return hasattr(exc, "show")
    try:
        import click
    except ImportError:  # pragma: no cover - typer >= 0.2x vendors click
        return False
    return isinstance(exc, click.ClickException)


def _add_command_suggestion(exc: BaseException) -> None:
    """Append "Did you mean ...?" (or the list of commands) to a "No such command" error
    that has no suggestion yet."""
    ctx = getattr(exc, "ctx", None)
    message = getattr(exc, "message", "")
    if ctx is None or not message.startswith("No such command") or "Did you mean" in message:
        return
    name = message.split("'")[1] if message.count("'") >= 2 else ""
    commands = ctx.command.list_commands(ctx) if hasattr(ctx.command, "list_commands") else []
    close = difflib.get_close_matches(name, commands, n=3, cutoff=0.5)
    hint = (f" Did you mean {' or '.join(repr(c) for c in close)}?" if close
            else f" Commands: {', '.join(commands)}." if commands else "")
    exc.message = message + hint


def _filename(exc: OSError) -> str:
    return str(exc.filename) if exc.filename is not None else "the file"


def _describe(exc: BaseException) -> tuple[str, int]:
    """One line naming the file and what to do, and the exit code, of a known failure."""
    if isinstance(exc, CondsimError):
        return str(exc), EXIT_USAGE
    if isinstance(exc, UnicodeDecodeError):
        return (f"a file is not UTF-8 text (byte {exc.start}: {exc.reason}); save it as "
                "UTF-8", EXIT_USAGE)
    if isinstance(exc, FileNotFoundError):
        return f"{_filename(exc)}: no such file or folder; check the path", EXIT_USAGE
    if isinstance(exc, NotADirectoryError):
        return (f"{_filename(exc)}: not a folder (a file is in the way); give a folder "
                "path", EXIT_USAGE)
    if isinstance(exc, IsADirectoryError):
        return f"{_filename(exc)}: is a folder; give a file path", EXIT_USAGE
    if isinstance(exc, PermissionError):
        return (f"{_filename(exc)}: permission denied; choose a path you can write to or "
                "fix its permissions", EXIT_FAILED)
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return (f"{_filename(exc)}: no space left on the device; free some space (or point "
                "--out / --cache-dir elsewhere) and rerun", EXIT_FAILED)
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        return (f"{_filename(exc)}: file too large for this file system or your file-size "
                "limit (ulimit -f); write elsewhere or raise the limit", EXIT_FAILED)
    if isinstance(exc, OSError):
        return f"{_filename(exc)}: {exc.strerror or exc}", EXIT_FAILED
    return (f"unexpected {type(exc).__name__}: {exc} (a condsim bug: rerun with --debug and "
            "report the traceback)", EXIT_FAILED)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``); return the exit code (see the
    module docstring). Failures are printed as one line on stderr, never raised."""
    args = list(argv) if argv is not None else sys.argv[1:]
    _state["debug"] = _debug_requested(args)
    try:
        app = build_app()
        result = app(args=args, prog_name="condsim", standalone_mode=False)
    except typer.Exit as exc:  # typer turns Ctrl-C into Exit(130)
        if exc.exit_code == EXIT_INTERRUPTED:
            console.print("aborted (interrupted)")
        return int(exc.exit_code or 0)
    except (typer.Abort, KeyboardInterrupt):
        console.print("aborted")
        return EXIT_INTERRUPTED
    except Exception as exc:
        if _is_usage_error(exc):
            _add_command_suggestion(exc)
            if _state["debug"]:
                traceback.print_exc()
            exc.show()  # type: ignore[attr-defined]
            return int(getattr(exc, "exit_code", EXIT_USAGE))
        message, code = _describe(exc)
        if _state["debug"]:
            traceback.print_exc()
        console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
        return code
    if isinstance(result, int) and not isinstance(result, bool):
        if result == EXIT_INTERRUPTED:  # typer returns Ctrl-C as exit code 130
            console.print("aborted (interrupted)")
        return result
    return EXIT_OK


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
