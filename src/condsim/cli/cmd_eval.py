"""``condsim eval <benchmark>`` for every registered benchmark, and ``condsim benchmarks``.

The commands are generated from each benchmark's :class:`~condsim.benchmarks.spec.
BenchmarkSpec`: one flag per config field (``n_bootstrap`` -> ``--n-bootstrap``, older
spellings kept as aliases), its help and default from the field, and the values checked by
the config itself, so the CLI, a suite file and ``condsim.evaluate(**config)`` accept the same
fields with the same defaults and give the same numbers.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from condsim.cli.common import check_out_dir, console
from condsim.cli.launch import launch, launch_parameters, submit_target

#: command-level options that are not config fields (``ctx``: the click context)
_LAUNCH = tuple(p.name for p in launch_parameters())
_OWN = ("model", "out", "ctx", *_LAUNCH)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _param(f: dataclasses.Field, hints: dict[str, Any]) -> inspect.Parameter:
    """The typer parameter of one config field (``None`` default: the config's default)."""
    from condsim.benchmarks.spec import field_elem_type, opt_of

    opt = opt_of(f)
    elem, is_tuple, _ = field_elem_type(f, hints)
    required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    default = f.default if not required else None
    shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
    help_text = opt.help
    if opt.choices and not is_tuple:
        help_text += f" (one of: {', '.join(opt.choices)})"
    names = [_flag(f.name), *opt.aliases] + ([opt.short] if opt.short else [])
    if elem is bool and not is_tuple:
        names = [f"{_flag(f.name)}/{opt.off_flag or '--no-' + f.name.replace('_', '-')}",
                 *opt.aliases]
        annotation: Any = Optional[bool]  # noqa: UP045 (typer reads the annotation)
    elif is_tuple:
        annotation = Optional[list[str]]  # noqa: UP045
        if opt.split_commas:
            help_text += " Comma-separated or repeated."
        else:
            help_text += " Repeat the flag for several."
    else:
        annotation = Optional[{int: int, float: float}.get(elem, str)]  # noqa: UP045
    show: bool | str = False if required or default is None else str(shown)
    option = typer.Option(... if required else None, *names, help=help_text,
                          show_default=show,
                          metavar="PATH" if opt.path else ("LIST" if is_tuple else None))
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                             annotation=annotation)


def _config_values(spec: Any, given: dict[str, Any]) -> dict[str, Any]:
    """Config fields from the parsed flags: only the flags given (the config holds the
    defaults), lists split on commas where the field says so."""
    from condsim.benchmarks.spec import field_elem_type, opt_of, parse_cli_list
    from condsim.errors import ConfigError

    hints = typing.get_type_hints(spec.config)
    fields = {f.name: f for f in dataclasses.fields(spec.config)}
    out: dict[str, Any] = {}
    for name, value in given.items():
        if value is None:
            continue
        f = fields[name]
        elem, is_tuple, _ = field_elem_type(f, hints)
        if is_tuple:
            items: list[Any] = []
            for text in value:
                try:
                    items += parse_cli_list(str(text), elem, opt_of(f).split_commas)
                except ConfigError as exc:
                    raise ConfigError(f"{_flag(name)}: {exc}") from None
            value = items
        out[name] = value
    return out


def config_parameters(spec: Any, own: tuple[str, ...]) -> list[inspect.Parameter]:
    """One keyword parameter per config field of ``spec`` (benchmark fields first), for a
    command whose own options are ``own`` (a config field of the same name is refused)."""
    from condsim.benchmarks.spec import config_fields

    hints = typing.get_type_hints(spec.config)
    params = []
    for f in config_fields(spec):
        if f.name in own:
            raise TypeError(f"{spec.name}: config field {f.name!r} clashes with a CLI option")
        params.append(_param(f, hints))
    return params


def config_from_flags(spec: Any, given: dict[str, Any], where: str) -> Any:
    """The spec's config from a command's parsed config flags (only those given)."""
    return spec.make_config(where, **_config_values(spec, given))


def print_result(spec: Any, result: Any, out: Path) -> None:
    """What ``condsim eval <benchmark>`` prints after a run: the benchmark's tables, the
    headline with its CI, the condition test, skipped counts and the files written (also for
    a ``--submit local:N`` job, from the ``results.json`` its rank 0 wrote)."""
    from condsim.results.run_result import headline_value
    from condsim.results.tables import metrics_table

    for item in (spec.render(result) if spec.render else [metrics_table(result)]):
        console.print(item)
    h = result.headline
    value = headline_value(h, "results.json")
    std = f" ± {h['std'] * 100:.2f}" if "std" in h else ""  # fold-based: the published form
    ci = f" [{h['ci_low'] * 100:.2f}, {h['ci_high'] * 100:.2f}]" if "ci_low" in h else ""
    console.print(f"{h['name']}: {value * 100:.2f}{std}{ci}")
    rel = result.metrics.get("condition_reliance")
    if rel:  # --condition-test: one line per perturbation
        for kind in ("shuffled", "empty"):
            e = rel[kind]
            if "skipped" in e:
                console.print(f"condition test, {kind}: n/a ({e['skipped']})")
                continue
            d = e["drop"]
            console.print(f"condition test, {kind} conditions: drop {d['mean'] * 100:+.2f} "
                          f"[{d['ci_low'] * 100:+.2f}, {d['ci_high'] * 100:+.2f}]"
                          f"{' (significant)' if d['significant'] else ''}, top-1 changed "
                          f"{e['top1_changed'] * 100:.1f}%")
    skipped = {k: v for k, v in result.skipped.items()
               if isinstance(v, int) and v and k != "examples"}
    if skipped:
        console.print(f"[yellow]skipped: {skipped} (details in results.json)[/]")
    console.print(f"wrote {out / 'results.json'} and {out / 'model_card.yaml'}")


def _files_in(folder: Path) -> dict[Path, int]:
    """The files directly in ``folder`` and their modification times (ns)."""
    if not folder.is_dir():
        return {}
    return {p: p.stat().st_mtime_ns for p in folder.iterdir() if p.is_file()}


def _launch_eval(spec: Any, ctx: typer.Context, out: Path, target: Any, submitting: bool,
                 launching: dict[str, Any]) -> None:
    """``--submit``: run this ``condsim eval`` command as one distributed job; after a
    ``local`` job, print what a run here prints, from what its rank 0 wrote in ``out``."""
    from condsim.results.run_result import load_result

    before = _files_in(out)
    launch(ctx, out, target, gpus_per_node=launching["gpus_per_node"],
           hours=launching["slurm_hours"], partition=launching["partition"],
           outputs="submission files" if submitting else "results.json")
    if target.cluster != "local":
        return
    if submitting:
        written = sorted(p for p, t in _files_in(out).items() if before.get(p) != t)
        console.print("wrote " + " and ".join(str(p) for p in written))
        return
    print_result(spec, load_result(out / "results.json"), out)


def make_command(spec: Any) -> Any:
    """The ``condsim eval <spec.name>`` callback, its signature built from the config."""
    params = [
        inspect.Parameter("model", inspect.Parameter.KEYWORD_ONLY, annotation=str,
                          default=typer.Option(..., "--model", "-m",
                                               help="Model name (see `condsim models`).")),
        inspect.Parameter("out", inspect.Parameter.KEYWORD_ONLY, annotation=Path,
                          default=typer.Option(Path("runs") / spec.name, "--out",
                                               help="Output folder (results.json, "
                                               "model_card.yaml; submission files).")),
    ]
    params += config_parameters(spec, _OWN) + launch_parameters()
    # the click context, for the command line a --submit job runs (argv_from_context)
    params.insert(0, inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY,
                                       annotation=typer.Context))

    def command(**given: Any) -> None:
        from condsim.benchmarks.run import model_from, save_run
        from condsim.distributed import is_main_process, maybe_init_distributed
        from condsim.progress import no_progress, rich_progress

        ctx = given.pop("ctx")
        launching = {name: given.pop(name) for name in _LAUNCH}
        target = submit_target(launching["submit"])  # first: before anything is read
        model_name, out = given.pop("model"), Path(given.pop("out"))
        cfg = config_from_flags(spec, given, f"condsim eval {spec.name}")
        check_out_dir(out)
        if cfg.cache_dir:
            check_out_dir(cfg.cache_dir, "--cache-dir")
        submitting = spec.submit is not None and getattr(cfg, "split", None) in \
            spec.submit_splits
        if target is not None:
            from condsim.registry import check_model_name

            check_model_name(model_name)  # an unknown name fails here, not in the job
            _launch_eval(spec, ctx, out, target, submitting, launching)
            return
        maybe_init_distributed()  # under torchrun: the ranks share encoding; rank 0 reports
        main_rank = is_main_process()
        encoder = model_from(model_name, cfg)
        with (rich_progress() if main_rank else nullcontext(no_progress)) as progress:
            if submitting:
                files = spec.submit(encoder, cfg, out, progress=progress)
                paths = files.values() if isinstance(files, dict) else [files]
                if main_rank:
                    console.print("wrote " + " and ".join(str(p) for p in paths))
                return
            result = spec.evaluate(encoder, cfg, progress=progress)
            save_run(spec, result, out)
        if main_rank:
            print_result(spec, result, out)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__name__ = f"eval_{spec.name}"
    command.__doc__ = (f"{spec.description}. Main score: {spec.main_score}. Protocol "
                       f"{spec.protocol_version}, after {spec.reference}. Several GPUs: run "
                       "it under torchrun (the ranks share encoding and scoring, rank 0 "
                       "writes; same metrics), or launch it with --submit.")
    return command


def register(app: typer.Typer, eval_app: typer.Typer, synth_app: typer.Typer) -> None:
    from condsim.registry import list_benchmarks

    for spec in list_benchmarks():
        eval_app.command(spec.name)(make_command(spec))

    @app.command("benchmarks")
    def benchmarks() -> None:
        """List every benchmark: description, main score, protocol version, reference."""
        table = Table(title="condsim benchmarks (details: condsim eval <name> --help)")
        for col in ("name", "main score", "protocol", "variants", "description / reference"):
            table.add_column(col, no_wrap=col != "description / reference")
        for spec in list_benchmarks():
            table.add_row(spec.name, spec.main_score, spec.protocol_version,
                          ", ".join(spec.variants) or "-",
                          f"{spec.description}\n[dim]{spec.reference}[/]")
        console.print(table)
