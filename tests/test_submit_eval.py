"""``condsim eval <benchmark> --submit``: a submitit ``local:2`` job gives the metrics of one
process and prints them; launch options are checked first; the tasks' command line
reproduces the options given (lists, boolean flags, paths) without the launch options."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from condsim.cli.main import main


def _cirr(tmp_path: Path) -> Path:
    from condsim.synthetic.cirr import write_cirr

    return write_cirr(tmp_path / "cirr", n_queries=20, n_train=0, seed=0)


def test_local_two_tasks_give_the_metrics_of_one_process(tmp_path, monkeypatch, capsys):
    pytest.importorskip("submitit")
    monkeypatch.setenv("CONDSIM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    root = _cirr(tmp_path)
    common = ["eval", "cirr", "--model", "test/tiny-clip", "--root", str(root),
              "--n-bootstrap", "50", "--num-workers", "0"]
    two, one = tmp_path / "two", tmp_path / "one"
    assert main([*common, "--out", str(two), "--cache-dir", str(tmp_path / "c2"),
                 "--submit", "local:2"]) == 0
    printed = capsys.readouterr().out
    assert main([*common, "--out", str(one), "--cache-dir", str(tmp_path / "c1")]) == 0
    alone = capsys.readouterr().out
    r2 = json.loads((two / "results.json").read_text())
    r1 = json.loads((one / "results.json").read_text())
    assert json.dumps(r2["metrics"], sort_keys=True) == json.dumps(r1["metrics"],
                                                                   sort_keys=True)
    assert r2["extra"]["world_size"] == 2 and r1["extra"]["world_size"] == 1
    # both tasks ran (one log each); the job printed rank 0's results as a run here does
    assert len(list((two / "submitit").glob("*_log.out"))) == 2
    headline = next(line for line in alone.splitlines() if line.startswith("recall"))
    assert headline in printed and "finished; results.json in" in printed
    assert f"wrote {two / 'results.json'}" in printed.replace("\n", "")


def test_bad_launch_options_fail_before_anything_runs(tmp_path, monkeypatch, capsys):
    import condsim.training.launch as launch

    def no_submit(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("submitted")

    monkeypatch.setattr(launch, "submit", no_submit)
    root = _cirr(tmp_path)
    out = tmp_path / "out"
    base = ["eval", "cirr", "--model", "test/no-such-model", "--root", str(root), "--out",
            str(out)]
    for bad in ("foo", "slurm:0", "local:", "moon:2"):
        assert main([*base, "--submit", bad]) == 2
        err = capsys.readouterr().err
        assert "--submit takes slurm:NODES or local:TASKS" in err and "Traceback" not in err
    assert main([*base, "--submit", "local:2", "--gpus-per-node", "0"]) == 2  # usage error
    assert main([*base, "--submit", "local:2", "--batch-size", "0"]) == 2  # config error
    assert "batch_size" in capsys.readouterr().err
    assert main([*base, "--submit", "local:2"]) == 2  # the model name, checked, not loaded
    assert "Unknown model 'test/no-such-model'" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")  # a torchrun rank or a submitit task
    assert main([*base, "--submit", "local:2"]) == 2
    assert "already one of 2 ranks" in capsys.readouterr().err
    assert not out.exists()


def test_task_command_line_round_trips_the_options(tmp_path, monkeypatch):
    """The argv the tasks run (argv_from_context) repeats list flags, writes boolean flags as
    given (on or off), keeps paths; parsed again it gives the same config and argv."""
    import condsim.cli.cmd_eval as cmd_eval
    import condsim.training.launch as launch

    submitted: list[tuple[list[str], str, dict[str, Any]]] = []
    configs: list[Any] = []

    class Job:
        job_id = "42"

    def fake_submit(argv: list[str], out: Path, target: Any, **kw: Any) -> Job:
        submitted.append((list(argv), launch.job_name(argv), kw))
        return Job()

    real = cmd_eval.config_from_flags

    def recording(*args: Any) -> Any:
        configs.append(real(*args))
        return configs[-1]

    monkeypatch.setattr(launch, "submit", fake_submit)
    monkeypatch.setattr(cmd_eval, "config_from_flags", recording)
    root, out = tmp_path / "fiq root", tmp_path / "out dir"
    root.mkdir()
    for flag in ("--condition-test", "--no-condition-test"):
        argv = ["eval", "fashioniq", "-m", "test/tiny-clip", "--root", str(root), "--out",
                str(out), "--categories", "dress", "--categories", "shirt,toptee", flag,
                "--seed", "3", "--submit", "slurm:2", "--gpus-per-node", "4",
                "--partition", "gpu", "--slurm-hours", "2"]
        assert main(argv) == 0
        task, name, kw = submitted[-1]
        assert task == ["eval", "fashioniq", "--model", "test/tiny-clip", "--out", str(out),
                        "--root", str(root), "--categories", "dress", "--categories",
                        "shirt,toptee", "--seed", "3", flag]
        assert name == "condsim-eval-fashioniq"
        assert kw == {"gpus_per_node": 4, "hours": 2, "partition": "gpu"}
        assert main([*task, "--submit", "slurm:1"]) == 0  # the task's argv, submitted again
        assert submitted[-1][0] == task
        assert configs[-1] == configs[-2]
        assert configs[-1].categories == ("dress", "shirt", "toptee")
        assert configs[-1].condition_test is (flag == "--condition-test")


def test_suite_local_two_tasks_equal_one_process_and_show_failures(tmp_path, monkeypatch,
                                                                     capsys):
    """`condsim eval suite --submit local:2`: the suite's runs shared by 2 tasks give the
    rows and metrics of one process; a failing run (a missing folder) still prints the table
    and exits 1, as a run here does."""
    pytest.importorskip("submitit")
    monkeypatch.setenv("CONDSIM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    root = _cirr(tmp_path)
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"- benchmark: cirr\n  root: {root}\n  n_bootstrap: 50\n  num_workers: 0\n"
                     f"- benchmark: cirr\n  name: gone\n  root: {root}\n  n_bootstrap: 50\n")
    common = ["eval", "suite", "--suite", str(suite), "--model", "test/tiny-clip"]
    assert main([*common, "--out", str(tmp_path / "one"), "--cache-dir",
                 str(tmp_path / "c1")]) == 0
    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path / "two"), "--cache-dir",
                 str(tmp_path / "c2"), "--submit", "local:2"]) == 0
    printed = capsys.readouterr().out
    rows = [json.loads((tmp_path / d / "suite.json").read_text()) for d in ("one", "two")]
    strip = [[{k: v for k, v in r.items() if k != "folder"} for r in x] for x in rows]
    assert strip[0] == strip[1] and [r["status"] for r in rows[1]] == ["done", "done"]
    for run in ("cirr", "gone"):
        a, b = (json.loads((tmp_path / d / "test_tiny-clip" / run / "results.json")
                           .read_text()) for d in ("one", "two"))
        assert a["metrics"] == b["metrics"] and b["extra"]["world_size"] == 2
    assert "suite suite.yaml" in printed and "done" in printed
    # a run that fails while running (a caption file without the fields CIRR needs): the
    # tasks exit 1, the table is still printed and the command exits 1
    import shutil

    bad = tmp_path / "bad-cirr"
    shutil.copytree(root, bad)
    (bad / "captions" / "cap.rc2.val.json").write_text("[{\"pairid\": 1}]")
    suite.write_text(f"- benchmark: cirr\n  root: {bad}\n  n_bootstrap: 50\n")
    assert main([*common, "--out", str(tmp_path / "three"), "--cache-dir",
                 str(tmp_path / "c2"), "--submit", "local:2"]) == 1
    printed = capsys.readouterr().out
    assert "failed" in printed
    assert json.loads((tmp_path / "three" / "suite.json").read_text())[0]["status"] == "failed"
