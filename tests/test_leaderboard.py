"""Leaderboard: loading runs, sorting, the three output formats, the CLI, bad input."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from condsim.cli.main import main
from condsim.errors import DataError
from condsim.results.leaderboard import (
    COLUMNS,
    LEADERBOARD_SCHEMA,
    leaderboard_rows,
    load_runs,
    sort_rows,
    write_leaderboard,
)
from condsim.results.run_result import RunResult


def _run(root: Path, folder: str, bench: str, model: str, value: float, *, seed: int = 0,
         created: str = "2026-01-01T00:00:00+00:00", ci: bool = False) -> Path:
    headline = ({"name": "average_recall_at_1", "mean": value, "ci_low": value - 0.02,
                 "ci_high": value + 0.03} if ci else
                {"name": "recall_at_1|1000", "value": value, "std": 0.01})
    RunResult(benchmark=bench, model={"name": model},
              protocol={"name": bench, "protocol_version": "1"}, seed=seed, headline=headline,
              metrics={}, created=created).save(root / folder / "results.json")
    return root / folder


@pytest.fixture()
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    _run(root, "a", "lrvsf", "clip-b16", 0.71, created="2026-01-03T00:00:00+00:00")
    _run(root, "b", "lrvsf", "condvit", 0.75, seed=3, created="2026-01-01T00:00:00+00:00")
    _run(root, "c", "genecis", "clip-b16", 0.14, ci=True, created="2026-01-02T00:00:00+00:00")
    _run(root / "nested", "d", "genecis", "combiner", 0.18, ci=True)
    return root


def test_rows_hold_headline_interval_seed_protocol_date(runs):
    rows = {(r.benchmark, r.model): r for r in leaderboard_rows(load_runs([runs]))}
    assert len(rows) == 4  # nested folders are searched too
    lr = rows[("lrvsf", "condvit")]
    assert (lr.value_pct, lr.std_pct, lr.ci_low_pct, lr.seed) == (75.0, 1.0, None, 3)
    assert lr.headline == "75.00 ± 1.00" and lr.protocol == "lrvsf/v1"
    assert lr.date.startswith("2026-01-01") and lr.run.endswith("b")
    g = rows[("genecis", "combiner")]
    assert g.headline == "18.00 [16.00, 21.00]" and g.std_pct is None


def test_sorting(runs):
    rows = leaderboard_rows(load_runs([runs]))  # default: benchmark A-Z, then best first
    assert [(r.benchmark, r.model) for r in rows] == [
        ("genecis", "combiner"), ("genecis", "clip-b16"), ("lrvsf", "condvit"),
        ("lrvsf", "clip-b16")]
    by_value = sort_rows(rows, "value")
    assert [r.value_pct for r in by_value] == [75.0, 71.0, 18.0, 14.0]
    assert [r.value_pct for r in sort_rows(rows, "value", reverse=True)] == [14, 18, 71, 75]
    assert [r.model for r in sort_rows(rows, "model,value")] == [
        "clip-b16", "clip-b16", "combiner", "condvit"]
    assert sort_rows(rows, "model,value")[0].benchmark == "lrvsf"  # 71 before 14
    assert [r.date[:10] for r in sort_rows(rows, "date")][0] == "2026-01-03"  # newest first
    std_sorted = sort_rows(rows, "std")  # runs without a std go last
    assert [r.std_pct is None for r in std_sorted] == [False, False, True, True]
    with pytest.raises(DataError, match="cannot sort by 'nope'"):
        sort_rows(rows, "nope")


def test_output_formats(runs, tmp_path):
    rows = leaderboard_rows(load_runs([runs]))
    md = write_leaderboard(rows, tmp_path / "lb.md").read_text()
    lines = md.splitlines()
    assert lines[0].startswith("| model | benchmark | metric | headline (%) |")
    assert len(lines) == 2 + len(rows) and "75.00 ± 1.00" in md
    table = list(csv.DictReader(io.StringIO(write_leaderboard(rows, tmp_path / "lb.csv")
                                            .read_text())))
    assert list(table[0]) == list(COLUMNS) and float(table[0]["value_pct"]) == 18.0
    data = json.loads(write_leaderboard(rows, tmp_path / "lb.json").read_text())
    assert data["schema"] == LEADERBOARD_SCHEMA and data["unit"] == "percent"
    assert [r["model"] for r in data["rows"]] == [r.model for r in rows]
    with pytest.raises(DataError, match=r"unknown format '\.xlsx'"):
        write_leaderboard(rows, tmp_path / "lb.xlsx")


def test_cli_prints_and_writes(runs, tmp_path, capsys):
    out = tmp_path / "lb.csv"
    assert main(["leaderboard", str(runs), "--sort", "value", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "condvit" in printed and "leaderboard" in printed
    assert out.read_text().splitlines()[1].startswith("condvit,lrvsf")
    assert main(["leaderboard", str(runs), "--sort", "bogus"]) == 2
    assert main(["leaderboard", str(runs), "--out", str(tmp_path / "x.txt")]) == 2


def test_bad_inputs(tmp_path, runs):
    with pytest.raises(DataError, match="no such run directory"):
        load_runs([tmp_path / "missing"])
    with pytest.raises(DataError, match="no run directories"):
        load_runs([])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "results.json").write_text(json.dumps({"schema": "mteb/2"}))
    with pytest.raises(DataError, match=r"results.json: schema 'mteb/2', expected"):
        load_runs([runs, bad])
    nohead = _run(tmp_path, "nohead", "lrvsf", "m", 0.5)
    data = json.loads((nohead / "results.json").read_text())
    data["headline"] = {"name": "x"}
    (nohead / "results.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="nohead/results.json: headline"):
        leaderboard_rows(load_runs([nohead]))
    assert main(["leaderboard", str(tmp_path / "missing")]) == 2
