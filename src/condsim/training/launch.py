"""Launch a ``condsim`` command (``train ...``, ``eval <benchmark> ...``) as one distributed
job through submitit (extra ``submitit``): on SLURM (``slurm:NODES``, one task per GPU) as
GeneCIS' ``submitit_train_cc3m.sh`` does, or on this machine (``local:N``, N processes; gloo
on CPU), which also tests the whole path.

Each task sets the ``torch.distributed`` environment (``MASTER_ADDR`` = first host, ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``) from submitit's ``JobEnvironment`` and runs the same command
line without its launch options (so a task never submits again); the trainer or the
evaluation then initialises the process group exactly as under ``torchrun``. On preemption or
timeout the job requeues the same command: training resumes from ``OUT/last``, an evaluation
reruns over its embedding cache.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from condsim.errors import CondsimError

#: options that choose how to launch, not what to run (dropped from the tasks' argv)
LAUNCH_OPTIONS = ("submit", "slurm_nodes", "gpus_per_node", "slurm_hours", "partition")


@dataclass(frozen=True)
class SubmitTarget:
    """Where to run: ``slurm`` with ``count`` nodes, or ``local`` with ``count`` tasks."""

    cluster: str
    count: int

    @classmethod
    def parse(cls, spec: str) -> SubmitTarget:
        cluster, _, n = spec.partition(":")
        if cluster not in ("slurm", "local") or not n.isdigit() or int(n) < 1:
            raise CondsimError(f"--submit takes slurm:NODES or local:TASKS, got {spec!r}")
        return cls(cluster, int(n))


#: what the tasks run by default: the ``condsim`` command line's entry point, named as
#: ``module:function`` and loaded by name in the task, so that this module (training layer)
#: does not import the CLI above it (same as running ``python -m condsim.cli ARGV``, but in
#: the task's own process, where submitit's preemption signals arrive)
CLI_ENTRY = "condsim.cli.main:main"

Entry = str | Callable[[list[str]], int]


def resolve_entry(entry: Entry) -> Callable[[list[str]], int]:
    """The callable ``entry`` names (``"package.module:function"``), or ``entry`` itself."""
    if callable(entry):
        return entry
    module, _, func = entry.partition(":")
    if not module or not func:
        raise CondsimError(f"entry point must look like package.module:function, got {entry!r}")
    return getattr(importlib.import_module(module), func)


class SubmititTask:
    """What submitit runs in every task: the distributed environment, then ``entry(argv)``
    (by default ``condsim <argv>``); ``checkpoint`` requeues the same command (a trainer
    resumes from OUT/last, an evaluation finds its encodings in the cache)."""

    def __init__(self, argv: Sequence[str], port: int, entry: Entry = CLI_ENTRY) -> None:
        self.argv = list(argv)
        self.port = port
        self.entry = entry

    def __call__(self) -> int:
        import submitit

        env = submitit.JobEnvironment()
        os.environ.update(
            MASTER_ADDR=env.hostnames[0] if env.num_nodes > 1 else "127.0.0.1",
            MASTER_PORT=str(self.port), RANK=str(env.global_rank),
            WORLD_SIZE=str(env.num_tasks), LOCAL_RANK=str(env.local_rank),
            LOCAL_WORLD_SIZE=str(env.num_tasks // max(1, env.num_nodes)),
        )
        code = resolve_entry(self.entry)(self.argv)
        if code != 0:
            raise CondsimError(f"rank {env.global_rank}: condsim {' '.join(self.argv)} exited "
                               f"with {code}")
        return code

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(
            type(self)(self.argv, self.port, self.entry))


def argv_from_context(ctx: Any, drop: Sequence[str] = LAUNCH_OPTIONS) -> list[str]:
    """The command line (``train <command> --opt value ...``, ``eval <benchmark> ...``) that
    reproduces the options of a click/typer context ``ctx``, without the launch options ``drop``:
    options left unset are left out, a list option repeats its flag per value, a boolean flag
    is written as its on or off flag. (Typer ships its own copy of click, so options are
    recognised by their attributes, not their class.)"""
    argv = [ctx.parent.info_name or "train", ctx.info_name or ""] if ctx.parent else []
    for param in ctx.command.params:
        if getattr(param, "param_type_name", "") != "option" or param.name in drop:
            continue
        value = ctx.params.get(param.name or "")
        if value is None:
            continue
        if param.is_flag:
            on, off = param.opts[0], (param.secondary_opts or [None])[0]
            flag = on if value else off
            if flag:
                argv.append(flag)
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            argv += [param.opts[0], str(v)]
    return argv


def job_name(argv: Sequence[str]) -> str:
    """The job's name: ``condsim-`` and the command's words before its options, e.g.
    ``condsim-train-combiner`` or ``condsim-eval-cirr``."""
    words = []
    for arg in argv:
        if arg.startswith("-"):
            break
        words.append(arg)
    return "-".join(["condsim", *words[:2]])


def submit(argv: Sequence[str], out_dir: str | Path, target: SubmitTarget, *,
           gpus_per_node: int = 8, hours: int = 24, partition: str | None = None,
           wait: bool | None = None, entry: Entry = CLI_ENTRY, name: str | None = None) -> Any:
    """Submit ``condsim <argv>`` (``entry(argv)``: see :data:`CLI_ENTRY`) as one distributed
    job named ``name`` (default: :func:`job_name`) with its logs in ``OUT/submitit``; returns
    the submitit job. ``local`` jobs are waited for (``wait=None``) and their failures
    raised."""
    try:
        import submitit
    except ImportError as exc:
        raise CondsimError("--submit needs submitit: pip install 'condsim[submitit]'") from exc
    folder = Path(out_dir) / "submitit"
    name = name or job_name(argv)
    executor = submitit.AutoExecutor(folder=str(folder), cluster=target.cluster)
    if target.cluster == "slurm":
        executor.update_parameters(
            name=name, nodes=target.count, tasks_per_node=gpus_per_node,
            gpus_per_node=gpus_per_node, cpus_per_task=8, timeout_min=60 * hours,
            slurm_partition=partition, slurm_signal_delay_s=120)
    else:
        executor.update_parameters(name=name, tasks_per_node=target.count,
                                   timeout_min=60 * hours)
    port = 20000 + int.from_bytes(os.urandom(2), "little") % 20000
    job = executor.submit(SubmititTask(list(argv), port, entry))
    if wait if wait is not None else target.cluster == "local":
        try:
            job.results()
        except Exception as exc:  # noqa: BLE001 (submitit wraps the task's failure)
            raise CondsimError(f"submitit job {job.job_id} failed; logs in {folder}: "
                               f"{str(exc)[-2000:]}") from exc
    return job
