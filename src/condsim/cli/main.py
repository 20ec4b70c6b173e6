"""condsim's command line: ``main(argv) -> int``; every command lives in its own module.

Each module in ``COMMAND_MODULES`` exposes ``register(app, eval_app, synth_app)`` and adds
its commands; ``condsim eval <benchmark>`` and ``condsim synth <dataset>`` are sub-apps.
"""

from __future__ import annotations

import importlib
import logging
import sys
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

console = Console(stderr=True)


def build_app() -> typer.Typer:
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
    ) -> None:
        logging.basicConfig(
            level=logging.DEBUG if verbose else logging.INFO,
            format="%(levelname)s %(name)s: %(message)s",
        )

    for mod in COMMAND_MODULES:
        importlib.import_module(mod).register(app, eval_app, synth_app)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    app = build_app()
    try:
        result = app(args=list(argv) if argv is not None else None, standalone_mode=False)
    except CondsimError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}")
        return 2
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        console.print("aborted")
        return 130
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        raise
    return int(result) if isinstance(result, int) else 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
