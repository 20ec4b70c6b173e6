"""Every registered benchmark honours the BenchmarkSpec contract (one test per benchmark)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import typer
import yaml

from condsim.benchmarks.run import evaluate, run_benchmark
from condsim.benchmarks.spec import SHARED_FIELDS, SharedOptions
from condsim.registry import list_benchmarks
from condsim.suite import read_suite
from stubs import ConstantEncoder, HashEncoder

SPECS = {spec.name: spec for spec in list_benchmarks()}


@pytest.fixture(scope="module")
def eval_group():
    from condsim.cli.main import build_app

    return typer.main.get_command(build_app()).commands["eval"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Each benchmark's synthetic set, written once by its spec's writer."""
    root = tmp_path_factory.mktemp("synth")
    return {name: spec.synthetic(root / name, 0) for name, spec in SPECS.items()}


def test_every_builtin_benchmark_is_registered():
    assert {"lrvsf", "genecis", "cirr", "circo", "fashioniq", "mitstates"} <= set(SPECS)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_cli_command_has_every_field_as_a_flag(name, eval_group):
    spec = SPECS[name]
    cmd = eval_group.commands[name]
    flags = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
    for f in dataclasses.fields(spec.config):
        assert "--" + f.name.replace("_", "-") in flags, f.name
    for shared in SHARED_FIELDS:
        assert "--" + shared.replace("_", "-") in flags
    assert {"--bootstrap", "--workers", "--model", "--out"} <= flags


@pytest.mark.parametrize("name", sorted(SPECS))
def test_spec_contract(name):
    spec = SPECS[name]
    assert issubclass(spec.config, SharedOptions)
    assert spec.config.__dataclass_params__.frozen
    names = {f.name for f in dataclasses.fields(spec.config)}
    assert set(spec.variants) <= names
    assert callable(spec.synthetic) and callable(spec.evaluate)
    assert spec.pairing.kind in ("queries", "folds")
    # one default per shared option, whatever the benchmark
    defaults = {f.name: f.default for f in dataclasses.fields(spec.config)
                if f.name in SHARED_FIELDS}
    assert defaults == {f.name: f.default for f in dataclasses.fields(SharedOptions)}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_config_round_trips_through_suite_yaml(name, synthetic, tmp_path):
    spec = SPECS[name]
    fields = synthetic[name]
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump([{"benchmark": name, **fields}]))
    (run,) = read_suite(path)
    assert run.config == spec.make_config(**fields)
    assert run.name == name


@pytest.mark.parametrize("name", sorted(SPECS))
def test_constant_model_scores_exact_chance(name, synthetic, tmp_path):
    spec = SPECS[name]
    cfg = spec.make_config(**synthetic[name], cache_dir=str(tmp_path / "c"), n_bootstrap=20)
    result = run_benchmark(ConstantEncoder(), cfg)
    value = result.headline["mean"]
    assert spec.chance is not None, f"{name}: declare the chance level of its main score"
    assert value == pytest.approx(spec.chance(result), rel=1e-9, abs=1e-12)
    assert 0 < value < 1


@pytest.mark.parametrize("name", sorted(SPECS))
def test_cli_and_python_api_give_identical_metrics(name, synthetic, tmp_path):
    """`condsim eval <name>` with its defaults and condsim.evaluate(**fields) write
    byte-identical metrics (the model is registered by name for the CLI)."""
    from condsim.cli.main import main
    from condsim.registry import register_model

    register_model("test/hash-encoder", description="stub")(lambda **_: HashEncoder())
    fields = synthetic[name]
    cache = str(tmp_path / "cache")
    res = evaluate("test/hash-encoder", name, tmp_path / "api", cache_dir=cache, **fields)
    argv = ["eval", name, "--model", "test/hash-encoder", "--out", str(tmp_path / "cli"),
            "--cache-dir", cache]
    for key, value in fields.items():
        for v in value if isinstance(value, list) else [value]:
            argv += ["--" + key.replace("_", "-"), str(v)]
    assert main(argv) == 0
    api = json.loads((tmp_path / "api" / "results.json").read_text())
    cli = json.loads((tmp_path / "cli" / "results.json").read_text())
    assert json.dumps(api["metrics"], sort_keys=True) == json.dumps(cli["metrics"],
                                                                    sort_keys=True)
    assert api["extra"]["config"] == cli["extra"]["config"] == res.extra["config"]
