"""The launch options every ``condsim train ...`` and ``condsim eval <benchmark>`` command
takes, declared once here: ``--submit slurm:NODES|local:TASKS``, ``--gpus-per-node``,
``--partition`` and ``--slurm-hours``.

A command checks ``--submit`` first (:func:`submit_target`, before any model or data is
loaded), then its own inputs, then hands the same command line without the launch options
to :func:`launch` (:func:`condsim.training.launch.submit`): one submitit job whose tasks set up
``torch.distributed`` and run it as ``torchrun`` ranks would.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from condsim.cli.common import console as stdout_console
from condsim.errors import CondsimError

SUBMIT_HELP = ("Launch as one distributed job through submitit instead of running here: "
               "slurm:NODES (one task per GPU, --gpus-per-node/--partition/--slurm-hours) or "
               "local:TASKS (processes on this machine); a requeued job reruns the same "
               "command.")
GPUS_PER_NODE_HELP = "GPUs per node of a SLURM job, one task each (--submit slurm:N)."
SLURM_HOURS_HELP = "Time limit of a submitted job, in hours."
PARTITION_HELP = "SLURM partition of the job (default: the cluster's default)."

def submit_option() -> Any:
    """``--submit slurm:NODES|local:TASKS`` (default: run here)."""
    return typer.Option(None, "--submit", help=SUBMIT_HELP, metavar="slurm:N|local:N")


def gpus_per_node_option() -> Any:
    """``--gpus-per-node`` (default 8)."""
    return typer.Option(8, "--gpus-per-node", min=1, help=GPUS_PER_NODE_HELP)


def slurm_hours_option() -> Any:
    """``--slurm-hours`` (default 24)."""
    return typer.Option(24, "--slurm-hours", min=1, help=SLURM_HOURS_HELP)


def partition_option() -> Any:
    """``--partition`` (default: the cluster's default partition)."""
    return typer.Option(None, "--partition", help=PARTITION_HELP)


def launch_parameters() -> list[inspect.Parameter]:
    """The launch options as keyword parameters, for commands whose signature is built with
    :mod:`inspect` (the generated ``condsim eval <benchmark>`` commands)."""
    kw = inspect.Parameter.KEYWORD_ONLY
    return [
        inspect.Parameter("submit", kw, default=submit_option(),
                          annotation=Optional[str]),  # noqa: UP045 (typer reads it)
        inspect.Parameter("gpus_per_node", kw, default=gpus_per_node_option(), annotation=int),
        inspect.Parameter("slurm_hours", kw, default=slurm_hours_option(), annotation=int),
        inspect.Parameter("partition", kw, default=partition_option(),
                          annotation=Optional[str]),  # noqa: UP045
    ]


def submit_target(submit: str | None) -> Any:
    """``--submit`` checked: ``None`` (run here) or the
    :class:`~condsim.training.launch.SubmitTarget`. :class:`CondsimError` for a malformed
    value, and inside a distributed run (a ``torchrun`` rank or a submitit task), which must
    not launch a job of its own."""
    if not submit:
        return None
    from condsim.training.launch import SubmitTarget

    target = SubmitTarget.parse(submit)
    world = os.environ.get("WORLD_SIZE", "1").strip()
    if world.isdigit() and int(world) > 1:
        raise CondsimError(f"--submit {submit}: this process is already one of {world} ranks "
                           "of a distributed run (torchrun or a submitit task); launch it "
                           "once, either with --submit or under torchrun, not both")
    return target


def launch(ctx: typer.Context, out: Path, target: Any, *, gpus_per_node: int,
           hours: int, partition: str | None, outputs: str,
           console: Console | None = None) -> Any:
    """Submit the command of ``ctx`` (its options minus the launch options) to ``target``
    with its logs in ``OUT/submitit``; a ``local`` job is waited for. Prints where the job
    is (on ``console``, default stdout) and returns it; ``outputs`` names what the job leaves
    in ``out``."""
    from condsim.training.launch import argv_from_context
    from condsim.training.launch import submit as submit_job

    console = console or stdout_console
    job = submit_job(argv_from_context(ctx), out, target, gpus_per_node=gpus_per_node,
                     hours=hours, partition=partition)
    if target.cluster == "local":
        console.print(f"submitit job {job.job_id} ({target.count} task(s)) finished; "
                      f"{outputs} in {out}")
    else:
        console.print(f"submitted SLURM job {job.job_id} ({target.count} node(s) x "
                      f"{gpus_per_node} GPUs); {outputs} in {out} when it is done, logs in "
                      f"{out / 'submitit'}")
    return job
