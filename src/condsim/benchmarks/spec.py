"""A benchmark is one :class:`BenchmarkSpec`: metadata, a typed config, evaluate, submission.

Every consumer (``condsim eval <name>``, the suite, :func:`condsim.evaluate`, ``condsim
compare``, the leaderboard's protocol column, model cards, report views) reads benchmarks
from the registry (:func:`condsim.registry.list_benchmarks`), never from a hand-written table.

Config fields are declared with :func:`option`: one default, one help text, and the checks
(type, range, choices) that :class:`BenchmarkConfig` runs at construction, so a bad value is
refused the same way from the CLI, a suite file or Python. The options every benchmark shares
live once in :class:`SharedOptions`.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any

from condsim.errors import ConfigError

#: metadata key of condsim's option description on a dataclass field
_OPT = "condsim"


@dataclass(frozen=True)
class Opt:
    """How one config field is documented, parsed and checked."""

    help: str
    ge: float | None = None  # numeric lower bound (every element of a tuple)
    le: float | None = None
    choices: tuple[str, ...] | None = None  # allowed values (every element of a tuple)
    aliases: tuple[str, ...] = ()  # extra CLI spellings, e.g. ("--bootstrap",)
    short: str | None = None  # e.g. "-m"
    off_flag: str | None = None  # for booleans: the CLI flag that sets False
    split_commas: bool = True  # tuples: "a,b" on the CLI is two values
    distinct: bool = False  # tuples: no repeated value
    nonempty: bool = False  # tuples: at least one value
    check: Callable[[Any], str | None] | None = None  # extra check: a message or None
    path: bool | str = False  # a filesystem path (PATH in --help); "dir": must be a folder


def option(default: Any = MISSING, *, help: str, **kw: Any) -> Any:
    """A config field with its help text, default and checks (see :class:`Opt`)."""
    meta = {_OPT: Opt(help=help, **kw)}
    if default is MISSING:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


def opt_of(f: dataclasses.Field) -> Opt:
    """The :class:`Opt` of a config field (a bare field gets an empty help)."""
    return f.metadata.get(_OPT) or Opt(help="")


_DEVICE_RE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")


def check_device(device: str | None) -> str | None:
    """``None`` when ``device`` (cpu, cuda, cuda:N, mps) is usable on this machine, else why
    not and what to use instead."""
    if device is None or device == "cpu":
        return None
    if not _DEVICE_RE.match(device):
        return f"must be cpu, cuda, cuda:N or mps, got {device!r}"
    import torch

    if device == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            return "'mps' requested but Apple MPS is not available here; use cpu"
        return None
    if not torch.cuda.is_available():
        build = "a CPU-only torch build" if torch.version.cuda is None else "no visible GPU"
        return (f"{device!r} requested but CUDA is not available ({build}); use cpu, or "
                "install a CUDA build of torch on a GPU machine")
    count = torch.cuda.device_count()
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= count:
        return f"{device!r}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})"
    return None


def existing_dir(path: str | None) -> str | None:
    """``None`` when ``path`` is an existing folder (or unset), else why not."""
    if path is None or Path(path).is_dir():
        return None
    if Path(path).exists():
        return f"{path} is not a folder"
    return f"{path}: no such folder"


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True, kw_only=True)
class BenchmarkConfig:
    """Base of every benchmark config: typed, frozen, checked at construction.

    Lists are accepted where a field holds a tuple (YAML and JSON have no tuples); every other
    type mismatch, out-of-range number or unknown choice raises :class:`ConfigError` naming
    the field.
    """

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            fixed = _check_field(f, hints[f.name], value)
            if fixed is not value:
                object.__setattr__(self, f.name, fixed)

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-ready data (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True, kw_only=True)
class SharedOptions(BenchmarkConfig):
    """The options every benchmark takes, each with one name and one default."""

    seed: int = option(0, help="Seed of every random draw (bootstrap CIs, sampled galleries); "
                       "recorded in results.json.")
    n_bootstrap: int = option(1000, ge=1, aliases=("--bootstrap",),
                              help="Bootstrap resamples for confidence intervals.")
    max_missing: int = option(0, ge=0, help="Missing or undecodable image files tolerated "
                              "(their queries are skipped and counted); more is an error.")
    batch_size: int = option(64, ge=1, help="Images per forward pass.")
    num_workers: int = option(2, ge=0, aliases=("--workers",),
                              help="Decode threads overlapped with the forward pass "
                              "(0: decode inline).")
    cache_dir: str | None = option(None, path=True,
                                   help="Embedding cache folder (default: ~/.cache/condsim "
                                   "or $CONDSIM_HOME/cache).")
    device: str | None = option(None, check=check_device,
                                help="cpu | cuda | cuda:N | mps (default: cuda when "
                                "available).")
    precision: str = option("auto", choices=PRECISIONS,
                            help="Forward precision: auto (bf16 autocast on CUDA, fp32 on "
                            "CPU) | fp32 | bf16 | fp16. Part of the cache identity.")
    condition_test: bool = option(False, help="Also score the queries with conditions "
                                  "shuffled among them (a seeded derangement) and with empty "
                                  "conditions; results.json gets metrics.condition_reliance "
                                  "(headline drop with a paired CI, share of changed top-1). "
                                  "The main metrics are unchanged.")


SHARED_FIELDS = tuple(f.name for f in dataclasses.fields(SharedOptions))


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _check_scalar(name: str, tp: Any, value: Any, opt: Opt) -> Any:
    """``value`` checked against ``tp`` (int, float, str, bool) and the option's bounds."""
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        value = float(value)
    elif tp is str:
        if isinstance(value, Path):
            value = str(value)
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
    if opt.ge is not None and value < opt.ge:
        raise ConfigError(f"{name}: must be >= {opt.ge:g}, got {value!r}")
    if opt.le is not None and value > opt.le:
        raise ConfigError(f"{name}: must be <= {opt.le:g}, got {value!r}")
    if opt.choices is not None and value not in opt.choices:
        from condsim.registry import did_you_mean

        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(opt.choices)}."
                          f"{did_you_mean(str(value), list(opt.choices))}")
    return value


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``(T, True)`` for ``T | None``, ``(tp, False)`` otherwise."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return (args[0] if len(args) == 1 else tp), len(args) < len(typing.get_args(tp))
    return tp, False


def _check_field(f: dataclasses.Field, tp: Any, value: Any) -> Any:
    """The checked (possibly converted) value of field ``f`` of declared type ``tp``."""
    opt = opt_of(f)
    tp, optional = _unwrap_optional(tp)
    origin = typing.get_origin(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{f.name}: a value is required")
    if origin is tuple:
        elem = typing.get_args(tp)[0]
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{f.name}: expected a list of {_type_name(elem)}, got {value!r}")
        items = tuple(_check_scalar(f"{f.name}[{i}]", elem, v, opt) for i, v in enumerate(value))
        if opt.nonempty and not items:
            raise ConfigError(f"{f.name}: give at least one value")
        if opt.distinct and len(set(items)) != len(items):
            dupes = sorted({v for v in items if items.count(v) > 1})
            raise ConfigError(f"{f.name}: repeated value(s) {dupes}; give each once")
        value = items if items != value or not isinstance(value, tuple) else value
    elif origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{f.name}: expected a mapping, got {value!r}")
    else:
        value = _check_scalar(f.name, tp, value, opt)
    if opt.path == "dir":
        for p in value if isinstance(value, tuple) else (value,):
            problem = existing_dir(p)
            if problem:
                raise ConfigError(f"{f.name}: {problem}")
    if opt.check is not None:
        problem = opt.check(value)
        if problem:
            raise ConfigError(f"{f.name}: {problem}")
    return value


def make_config(cls: type, fields: dict[str, Any], where: str) -> Any:
    """``cls(**fields)``, every unknown field named with did-you-mean, every missing required
    field named, every bad value refused (:class:`ConfigError`)."""
    from condsim.registry import did_you_mean

    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - set(known))
    if unknown:
        hints = "".join(did_you_mean(u, list(known)) for u in unknown)
        raise ConfigError(f"{where}: unknown field(s) {unknown}.{hints} Fields: "
                          f"{', '.join(sorted(known))}")
    missing = [n for n, f in known.items() if f.default is MISSING
               and f.default_factory is MISSING and n not in fields]  # type: ignore[misc]
    if missing:
        raise ConfigError(f"{where}: missing required field(s) {missing}")
    try:
        return cls(**fields)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


@dataclass(frozen=True)
class Pairing:
    """How two runs of a benchmark pair for ``condsim compare`` and the report.

    ``kind="queries"``: per-query values at ``metrics[<group>][per_query][key]`` (or
    ``metrics[per_query][key]`` without groups), matched by ``query_ids``; ``group_key``
    names the metrics entry holding groups (GeneCIS tasks, FashionIQ categories).
    ``kind="folds"``: per-fold values (LRVS-F); ``must_agree`` lists the protocol fields two
    runs must share to be paired, ``per_group_agree`` a protocol mapping whose entries must
    agree for every group (distractor count) both runs hold.
    """

    kind: str
    label: str
    key: str = ""
    group_key: str | None = None
    must_agree: tuple[str, ...] = ()
    #: a protocol entry ``{group: digest}`` (e.g. LRVS-F's draws per distractor count) that
    #: must agree for every group both runs hold
    per_group_agree: str | None = None


@dataclass(frozen=True)
class BenchmarkSpec:
    """Everything condsim knows about one benchmark, declared in the benchmark's own file."""

    name: str
    description: str
    main_score: str
    split: str
    protocol_version: str
    reference: str
    dataset_type: str  # model-card dataset type (e.g. the official repository)
    dataset_name: str  # model-card dataset name
    config: type  # a frozen BenchmarkConfig subclass (SharedOptions fields included)
    evaluate: Callable[..., Any]  # evaluate(model, cfg, *, progress) -> RunResult
    synthetic: Callable[[Path, int], dict[str, Any]]  # writes a small set; config fields
    pairing: Pairing
    submit: Callable[..., Any] | None = None  # submit(model, cfg, out_dir, *, progress)
    submit_splits: tuple[str, ...] = ()  # config ``split`` values that mean "submission"
    variants: tuple[str, ...] = ()  # config fields that change the protocol's numbers
    model_card: Callable[[Any], dict[str, Any]] | None = None  # default: generic CIR card
    render: Callable[[Any], list[Any]] | None = None  # CLI tables (default: generic)
    chance: Callable[[Any], float] | None = None  # main score of a constant model
    #: ``check(cfg, progress) -> DataReport`` (:mod:`condsim.benchmarks.datacheck`): the
    #: dataset on disk against the official files and counts (``condsim data check``)
    check: Callable[..., Any] | None = None

    def __post_init__(self) -> None:
        if not dataclasses.is_dataclass(self.config) or not issubclass(self.config,
                                                                       SharedOptions):
            raise TypeError(f"{self.name}: config must be a SharedOptions dataclass")
        names = {f.name for f in dataclasses.fields(self.config)}
        bad = [v for v in self.variants if v not in names]
        if bad:
            raise TypeError(f"{self.name}: variant fields {bad} are not config fields")

    def meta(self) -> dict[str, Any]:
        """The metadata recorded in every run's ``protocol``."""
        return {"name": self.name, "description": self.description,
                "main_score": self.main_score, "split": self.split,
                "protocol_version": self.protocol_version, "reference": self.reference}

    def make_config(self, where: str | None = None, **fields: Any) -> Any:
        return make_config(self.config, fields, where or f"benchmark {self.name!r}")

    def variant_of(self, cfg_or_protocol: Any) -> str:
        """The protocol variant of a config or of a result's ``protocol``/``config`` dict:
        the variant fields' values joined by ``-`` (``""`` without variant fields)."""
        values = []
        for v in self.variants:
            x = cfg_or_protocol.get(v) if isinstance(cfg_or_protocol, dict) else \
                getattr(cfg_or_protocol, v, None)
            if x is not None:
                values.append("+".join(map(str, x)) if isinstance(x, (list, tuple)) else str(x))
        return "-".join(values)


def config_fields(spec: BenchmarkSpec) -> list[dataclasses.Field]:
    """The spec's config fields, benchmark-specific first, then the shared ones."""
    fields = dataclasses.fields(spec.config)
    own = [f for f in fields if f.name not in SHARED_FIELDS]
    return own + [f for f in fields if f.name in SHARED_FIELDS]


def parse_cli_list(text: str, elem: type, split: bool) -> list[Any]:
    """``"10K,100K"`` -> ``[10000, 100000]`` for ints (``K``/``M`` suffixes, ``_``
    separators); strings split on commas when ``split``."""
    parts = [p.strip() for p in text.split(",")] if split else [text]
    out: list[Any] = []
    for part in parts:
        if not part:
            continue
        if elem is int:
            p = part.upper().replace("_", "")
            mult = {"K": 1000, "M": 1_000_000}.get(p[-1:], 1)
            p = p[:-1] if mult > 1 else p
            try:
                number = float(p) * mult
            except ValueError:
                raise ConfigError(f"cannot read {text!r} as integers") from None
            if number != int(number):
                raise ConfigError(f"{part!r} is not an integer")
            out.append(int(number))
        elif elem is float:
            try:
                out.append(float(part))
            except ValueError:
                raise ConfigError(f"cannot read {part!r} as a number") from None
        else:
            out.append(part)
    return out


def field_elem_type(spec_field: dataclasses.Field, hints: dict[str, Any]) -> tuple[Any, bool,
                                                                                       bool]:
    """``(scalar type, is_tuple, optional)`` of a config field."""
    tp, optional = _unwrap_optional(hints[spec_field.name])
    if typing.get_origin(tp) is tuple:
        return typing.get_args(tp)[0], True, optional
    return tp, False, optional


__all__ = ["BenchmarkConfig", "BenchmarkSpec", "Opt", "Pairing", "SharedOptions",
           "SHARED_FIELDS", "check_device", "existing_dir", "config_fields", "make_config",
           "option", "opt_of", "parse_cli_list", "field_elem_type"]
