"""condsim eval suite: models x benchmarks from a YAML file, checked first, resumable, one
failure recorded without losing the others."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from condsim.cli.main import main
from condsim.errors import CondsimError, DataError
from condsim.results.run_result import load_result
from condsim.suite import read_suite
from condsim.synthetic.cirr import write_cirr
from condsim.synthetic.lrvsf import write_lrvsf
from condsim.synthetic.mitstates import write_mitstates


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("suite-data")
    write_lrvsf(root / "lrvsf", n_products=12, n_distractors=30, files=1, seed=0)
    write_cirr(root / "cirr", n_queries=12, n_train=0, seed=0)
    write_mitstates(root / "mit", per_class=2, seed=0)
    return root


def _suite(tmp: Path, data: Path, extra: str = "") -> Path:
    text = f"""
- benchmark: lrvsf
  data_root: {data / 'lrvsf'}
  n_dists: [10, 30]
  folds: seeded
- benchmark: lrvsf
  data_root: {data / 'lrvsf'}
  conditioning: text
  n_dists: [30]
  folds: seeded
- benchmark: cirr
  root: {data / 'cirr'}
  n_bootstrap: 50
- benchmark: mitstates
  root: {data / 'mit'}
  n_bootstrap: 50
{extra}"""
    path = tmp / "suite.yaml"
    path.write_text(text)
    return path


def test_suite_runs_every_model_on_every_benchmark_and_resumes(data, tmp_path):
    suite, out = _suite(tmp_path, data), tmp_path / "out"
    models = ["test/tiny-clip", "combine:image-only/test/tiny-clip"]
    args = ["eval", "suite", "--suite", str(suite), "--out", str(out),
            "--cache-dir", str(tmp_path / "cache"), "--workers", "0"]
    assert main([*args, *(x for m in models for x in ("--model", m))]) == 0
    rows = json.loads((out / "suite.json").read_text())
    names = ["lrvsf-category", "lrvsf-text", "cirr", "mitstates"]
    assert [(r["model"], r["run"], r["status"]) for r in rows] == [
        (m, n, "done") for m in models for n in names]
    text_run = load_result(out / "test_tiny-clip" / "lrvsf-text")
    assert text_run.protocol["conditioning"] == "text"
    assert text_run.protocol["n_dists"] == [30]  # YAML lists became the config's tuples
    assert load_result(out / "combine_image-only_test_tiny-clip" / "cirr").model["name"] == \
        "combine:image-only/test/tiny-clip"
    before = (out / "test_tiny-clip" / "cirr" / "results.json").stat().st_mtime_ns
    assert main([*args, "--model", models[0]]) == 0  # resumes: everything kept
    rows = json.loads((out / "suite.json").read_text())
    assert {r["status"] for r in rows} == {"kept"}
    assert (out / "test_tiny-clip" / "cirr" / "results.json").stat().st_mtime_ns == before


def test_a_failing_run_is_recorded_and_the_others_finish(data, tmp_path):
    (tmp_path / "empty-cirr").mkdir()  # a folder (the suite file is valid) without CIRR
    suite = _suite(tmp_path, data, f"""- benchmark: cirr
  name: cirr-broken
  root: {tmp_path / 'empty-cirr'}
""")
    out = tmp_path / "out"
    assert main(["eval", "suite", "--suite", str(suite), "--out", str(out), "--model",
                 "test/tiny-clip", "--cache-dir", str(tmp_path / "c"), "--workers", "0"]) == 1
    rows = {r["run"]: r for r in json.loads((out / "suite.json").read_text())}
    broken = rows["cirr-broken"]
    assert broken["status"] == "failed" and "empty-cirr" in broken["error"]
    assert all(rows[n]["status"] == "done" for n in ("lrvsf-category", "cirr", "mitstates"))


def test_bad_suite_files_fail_before_anything_runs(data, tmp_path):
    bad = {
        "unknown field(s) ['dataroot']": "- benchmark: lrvsf\n  dataroot: x\n",
        "missing required field(s) ['data_root']": "- benchmark: lrvsf\n",
        "unknown benchmark 'cir'": "- benchmark: cir\n  root: x\n",
        "expected a non-empty list": "benchmark: lrvsf\n",
        "malformed YAML": "- benchmark: [lrvsf\n",
        "several runs are named ['x']": f"- {{benchmark: cirr, root: {data}, name: x}}\n"
                                        f"- {{benchmark: mitstates, root: {data}, name: x}}\n",
        "root: a: no such folder": "- {benchmark: cirr, root: a}\n",
    }
    for message, text in bad.items():
        path = tmp_path / "s.yaml"
        path.write_text(text)
        with pytest.raises(CondsimError, match=message.replace("[", r"\[").replace("]", r"\]")
                           .replace("(", r"\(").replace(")", r"\)")):
            read_suite(path)
    with pytest.raises(DataError, match="not found"):
        read_suite(tmp_path / "missing.yaml")
    out = tmp_path / "never"
    (tmp_path / "s.yaml").write_text(f"- benchmark: cirr\n  root: {data / 'cirr'}\n"
                                     "- benchmark: lrvsf\n  dataroot: x\n")
    assert main(["eval", "suite", "--suite", str(tmp_path / "s.yaml"), "--out", str(out),
                 "--model", "test/tiny-clip"]) == 2
    assert not out.exists()  # the valid first run did not start either


def test_evaluate_runs_one_benchmark_from_keyword_config(data, tmp_path):
    import condsim

    res = condsim.evaluate("test/tiny-clip", "lrvsf", tmp_path / "run",
                           data_root=str(data / "lrvsf"), n_dists=[10], folds="seeded",
                           cache_dir=str(tmp_path / "c"), num_workers=0)
    assert res.protocol["n_dists"] == [10] and (tmp_path / "run" / "results.json").is_file()
    with pytest.raises(CondsimError, match="Did you mean 'cirr'"):
        condsim.evaluate("test/tiny-clip", "cir", root="x")
    with pytest.raises(CondsimError, match=r"unknown field\(s\) \['dataroot'\]"):
        condsim.evaluate("test/tiny-clip", "lrvsf", dataroot="x")


def test_repeated_benchmarks_are_named_by_their_variant_fields(tmp_path):
    """Two FashionIQ runs of a suite differing in the caption join are fashioniq-and and
    fashioniq-dot (the variant is read from the spec, not from a second table)."""
    from condsim.synthetic.fashioniq import write_fashioniq

    root = write_fashioniq(tmp_path / "fiq", seed=0)
    path = tmp_path / "s.yaml"
    path.write_text(f"- benchmark: fashioniq\n  root: {root}\n  join: and\n"
                    f"- benchmark: fashioniq\n  root: {root}\n  join: dot\n")
    assert [r.name for r in read_suite(path)] == ["fashioniq-and", "fashioniq-dot"]


@pytest.mark.parametrize("field, value, message", [
    ("batch_size", -3, "batch_size: must be >= 1"),
    ("batch_size", 0, "batch_size: must be >= 1"),
    ("num_workers", -1, "num_workers: must be >= 0"),
    ("n_dists", "ten", "n_dists: expected a list of int"),
    ("n_dists", [10, 10], r"n_dists: repeated value\(s\) \[10\]"),
    ("n_dists", [10, "x"], r"n_dists\[1\]: expected an integer"),
    ("ks", [0, 5], r"ks\[0\]: must be >= 1"),
    ("device", "tpu", "device: must be cpu, cuda, cuda:N or mps"),
    ("conditioning", "colour", "conditioning: 'colour' is not one of category, text"),
    ("seed", 1.5, "seed: expected an integer"),
    ("dev_run", "yes", "dev_run: expected true/false"),
])
def test_every_run_of_a_suite_is_checked_up_front(data, tmp_path, field, value, message):
    """A bad value in any run (here run 2) is refused when the file is read, naming the run
    and the field: nothing has run yet (issue: `n_dists: "ten"` crashed the suite at run 2)."""
    import yaml

    runs = [{"benchmark": "cirr", "root": str(data / "cirr")},
            {"benchmark": "lrvsf", "data_root": str(data / "lrvsf"), field: value}]
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(runs))
    with pytest.raises(CondsimError, match="run 2 .*" + message):
        read_suite(path)


def test_cuda_device_refused_on_a_cpu_build(data):
    import torch

    from condsim import evaluate

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(CondsimError, match="device: 'cuda' requested but"):
        evaluate("test/tiny-clip", "cirr", root=str(data / "cirr"), device="cuda")


def test_cli_refuses_bad_values_before_opening_the_cache(data, tmp_path, capsys):
    cache = tmp_path / "cache"
    code = main(["eval", "cirr", "--model", "test/tiny-clip", "--root", str(data / "cirr"),
                 "--batch-size", "-3", "--cache-dir", str(cache), "--out", str(tmp_path / "o")])
    assert code != 0
    assert "batch_size: must be >= 1" in capsys.readouterr().err
    assert not cache.exists() and not (tmp_path / "o").exists()
