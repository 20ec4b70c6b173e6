"""Reports: the HTML parses and is self-contained, plots are real PNGs, the failure gallery
shows the runs' real failures, views plug in by registry, significance methods, bad input,
and (when Debian's chromium is installed) no console errors in a real browser."""

from __future__ import annotations

import importlib.util
import io
import json
import math
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from condsim.benchmarks.genecis import GenecisConfig
from condsim.benchmarks.lrvsf import LRVSFConfig
from condsim.benchmarks.run import run_benchmark
from condsim.cli.main import main
from condsim.data.lrvsf import read_products
from condsim.errors import DataError
from condsim.results import report as rep
from condsim.results.failures import collect_failures, file_ref, is_case, load_ref_image
from condsim.results.leaderboard import load_runs
from condsim.results.run_result import RunResult
from condsim.synthetic.genecis import write_genecis
from condsim.synthetic.lrvsf import write_lrvsf

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_clip) -> dict[str, Path]:
    """Real runs: LRVS-F and GeneCIS, tiny-clip and its image-only baseline."""
    from condsim import create_model

    tmp = tmp_path_factory.mktemp("runs")
    write_lrvsf(tmp / "lr", n_products=30, n_distractors=100, files=2, seed=0)
    g = write_genecis(tmp / "g", n_per_task=8, seed=0)
    image_only = create_model("combine:image-only/test/tiny-clip", device="cpu")
    for name, model in (("tiny", tiny_clip), ("img", image_only)):
        run_benchmark(model, LRVSFConfig(data_root=str(tmp / "lr"), n_dists=(20, 80),
                                          folds="seeded", num_workers=0,
                                          cache_dir=str(tmp / "c")), tmp / "runs" / f"lr_{name}")
        run_benchmark(model, GenecisConfig(
            annotations=str(g / "annotations"), coco_root=str(g / "coco" / "val2017"),
            vg_roots=(str(g / "vg" / "VG_100K"), str(g / "vg" / "VG_100K_2")),
            cache_dir=str(tmp / "c"), n_bootstrap=100), tmp / "runs" / f"g_{name}")
    return {"runs": tmp / "runs", "lr": tmp / "lr"}


@pytest.fixture(scope="module")
def report(world, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("report") / "report.html"
    return rep.build_report([world["runs"]], out)


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.hrefs: list[str] = []
        self.tags: list[str] = []
        self.classes: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if "src" in a:
            self.srcs.append(a["src"] or "")
        if "href" in a:
            self.hrefs.append(a["href"] or "")
        self.classes += (a.get("class") or "").split()


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def _check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1024, path
    img = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert img.shape[0] > 100 and img.shape[1] > 100
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 20, f"{path}: nearly blank"


# --- the report -----------------------------------------------------------------------------


def test_report_is_self_contained_html_with_real_plots(report, world):
    page = _parse(report["html"])
    assert "script" not in page.tags and "link" not in page.tags
    assert page.srcs and all(s.startswith("data:image/") for s in page.srcs)
    assert all(h.startswith("#") for h in page.hrefs)
    ks = json.loads((world["runs"] / "lr_tiny" / "results.json").read_text())["protocol"]["ks"]
    plots = {f"lrvsf_recall_at_{k}" for k in ks} | {"genecis_recall_at_1"}
    assert plots <= set(report)
    for name in plots:
        assert report[name].parent == report["html"].parent
        _check_png(report[name])
    # every plot is also inlined in the HTML
    assert sum(s.startswith("data:image/png") for s in page.srcs) == len(plots)


def test_markdown_summary_tables_and_plot_links(report):
    md = report["markdown"].read_text()
    assert md.startswith("# condsim report")
    assert "## LRVS-Fashion" in md and "## GeneCIS" in md and "| model |" in md
    for link in (line.split("](")[1].rstrip(")") for line in md.splitlines()
                 if line.startswith("![")):
        assert (report["markdown"].parent / link).is_file()


def test_gallery_lists_the_runs_real_failures(report, world, tiny_clip):
    page = _parse(report["html"])
    runs = load_runs([world["runs"]])
    expected = sum(min(rep.DEFAULT_MAX_FAILURES, len(rep.run_failures(r, rep.view_for(r))))
                   for r in runs)
    assert expected > 0 and page.classes.count("case") == expected
    assert page.classes.count("wrong") >= expected and page.classes.count("target") == expected

    # LRVS-F: recorded cases are failures of tiny-clip against the products' targets
    res = json.loads((world["runs"] / "lr_tiny" / "results.json").read_text())
    cases = res["extra"]["failures"]
    assert cases and all(is_case(c) for c in cases)
    products = read_products(world["lr"], "category")
    q = tiny_clip.encode_queries(products.query_images, products.conditions).numpy()
    t = tiny_clip.encode_targets(products.target_images).numpy()
    scores = q @ t.T
    for c in cases:
        i = c["query"]["image"]["row"]
        assert c["target"]["row"] == i and c["query"]["condition"] == products.conditions[i]
        others = np.delete(scores[i], i)
        assert others.max() >= scores[i, i] - 1e-4  # a real failure
        top_rows = [x["image"]["row"] for x in c["top"]]
        assert i not in top_rows and top_rows[0] == int(np.argmax(np.where(
            np.arange(len(t)) == i, -np.inf, scores[i])))
        assert c["target_rank"] >= 1 and c["top"][0]["score"] >= c["target_score"]
        assert load_ref_image(c["query"]["image"]).size[0] > 0

    # GeneCIS: each recorded query has R@1 < 1 in the run's own per-query values
    g = json.loads((world["runs"] / "g_tiny" / "results.json").read_text())
    assert g["extra"]["failures"]
    for f in g["extra"]["failures"]:
        assert f["schema"] == "condsim.failures/1" and f["target_rank"] > 1 or f["n_ties"] > 0
        task = g["metrics"]["tasks"][f["group"]]
        assert task["per_query"]["1"][task["query_ids"].index(f["query_id"])] < 1.0


def test_comparison_marks_use_paired_tests(world):
    runs = [r for r in load_runs([world["runs"]]) if r.result.benchmark == "genecis"]
    table = rep.comparison_table(runs, rep.view_for(runs[0]))
    assert table.methods == {"paired-bootstrap", "stratified-paired-bootstrap"}
    lr = [r for r in load_runs([world["runs"]]) if r.result.benchmark == "lrvsf"]
    table = rep.comparison_table(lr, rep.view_for(lr[0]), reference="img")
    assert table.reference.label.startswith("combine:image-only")
    assert table.methods == {"paired-folds"}


# --- collect_failures -------------------------------------------------------------------------


def test_collect_failures_ranks_ties_padding_and_bounds():
    scores = np.array([
        [0.9, 0.1, 0.2, -np.inf],   # target 0 first: no failure
        [0.5, 0.7, 0.5, -np.inf],   # target 1 tied with column 2? no: 0.7 > 0.5 -> fine
        [0.8, 0.3, 0.3, 0.9],       # target 2: two above, one tie
        [0.4, 0.4, -np.inf, np.nan],  # target 0 tied with column 1, padding ignored
    ])
    cases = collect_failures(
        scores, [0, 1, 2, 0], query_image=lambda i: {"kind": "file", "path": f"q{i}"},
        condition=["a", "b", "c", "d"], candidate_image=lambda i, j: {"kind": "x", "j": j},
        group="t", query_ids=[10, 11, 12, 13])
    assert [c["query_id"] for c in cases] == [12, 13]
    c2, c3 = cases
    assert c2["target_rank"] == 3 and c2["n_ties"] == 1 and c2["gallery_size"] == 4
    assert [t["image"]["j"] for t in c2["top"]] == [3, 0, 1]
    assert c3["target_rank"] == 1 and c3["n_ties"] == 1 and c3["gallery_size"] == 2
    assert [t["image"]["j"] for t in c3["top"]] == [1]
    assert c2["query"] == {"image": {"kind": "file", "path": "q2"}, "condition": "c"}
    many = collect_failures(np.zeros((50, 3)), np.zeros(50, int), query_image=lambda i: {},
                            condition=lambda i: "", candidate_image=lambda i, j: {}, limit=5)
    assert [c["query_id"] for c in many] == [0, 12, 24, 37, 49]  # spread, deterministic
    with pytest.raises(ValueError, match="target columns"):
        collect_failures(np.zeros((2, 3)), [0, 3], query_image=[{}, {}], condition=["", ""],
                         candidate_image=lambda i, j: {})


def test_legacy_lrvsf_failures_still_render(world, tmp_path):
    res = json.loads((world["runs"] / "lr_tiny" / "results.json").read_text())
    res["extra"]["failures"] = [{"query_row": 3, "condition": "Bags", "target_row": 3,
                                 "rank": 4, "top_rows": [1, 2, 5]},
                                {"something": "else"},  # unknown layouts are skipped
                                {"schema": "condsim.failures/1", "query": "not a dict"}]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "results.json").write_text(json.dumps(res))
    written = rep.build_report([tmp_path / "old"], tmp_path / "out" / "r.html")
    page = _parse(written["html"])
    assert page.classes.count("case") == 1 and page.classes.count("wrong") == 3
    assert "missing" not in page.classes


# --- views plug in by registry ------------------------------------------------------------


def _cirr_like(model: str, r1: float, ids: list[int], benchmark: str = "newbench") -> RunResult:
    per_query = [1.0] * int(r1 * len(ids)) + [0.0] * (len(ids) - int(r1 * len(ids)))
    ci = {"mean": r1, "ci_low": max(0, r1 - 0.05), "ci_high": min(1, r1 + 0.05)}
    return RunResult(
        benchmark=benchmark, model={"name": model}, protocol={"name": benchmark,
                                                               "protocol_version": "1"},
        seed=0, headline={"name": "recall_at_1", **ci},
        metrics={"recall": {"1": ci, "5": {**ci, "mean": min(1, r1 + 0.2)}},
                 "recall_subset": {"1": ci}, "per_query": {"recall_at_1": per_query},
                 "query_ids": ids},
        extra={"failures": [{"schema": "condsim.failures/1", "group": None, "query_id": 0,
                             "query": {"image": file_ref("/nonexistent.jpg"),
                                       "condition": "c"},
                             "target": file_ref("/nonexistent2.jpg"), "top": []}]})


def test_unregistered_benchmark_uses_interval_view_and_custom_views_plug_in(tmp_path, caplog):
    ids = list(range(200))
    for name, r1 in (("m1", 0.2), ("m2", 0.6)):
        _cirr_like(name, r1, ids).save(tmp_path / "runs" / name / "results.json")
    _cirr_like("m3", 0.25, list(range(1, 201))).save(tmp_path / "runs" / "m3" / "results.json")
    runs = load_runs([tmp_path / "runs"])
    assert rep.view_for(runs[0]) is rep.CI_VIEW
    table = rep.comparison_table(runs, rep.CI_VIEW)
    assert table.columns == ["R@1", "R@5", "Rsubset@1"]
    cells = {run.label: dict(zip(table.columns, c, strict=True)) for run, c in table.rows}
    # an unregistered benchmark has no pairing: every comparison is the CI overlap
    assert {c[1].method for cs in cells.values() for c in cs.values() if c[1]} == {"ci-overlap"}
    assert cells["m2"]["R@1"][1].verdict == 1 and cells["m2"]["R@1"][1].mark() == "▲†"
    # the same runs of a registered benchmark pair as its spec says (as condsim compare does)
    for name, r1, q in (("m1", 0.2, ids), ("m2", 0.6, ids), ("m3", 0.25, list(range(1, 201))),
                        ("m4", 0.25, list(range(1000, 1200)))):
        _cirr_like(name, r1, q, "cirr").save(tmp_path / "cirr" / name / "results.json")
    cirr = load_runs([tmp_path / "cirr"])
    table = rep.comparison_table(cirr, rep.view_for(cirr[0]))
    cells = {run.label: dict(zip(table.columns, c, strict=True)) for run, c in table.rows}
    assert cells["m2"]["R@1"][1].method == "paired-bootstrap"
    assert cells["m2"]["R@1"][1].verdict == 1 and cells["m2"]["R@1"][1].mark() == "▲"
    assert cells["m2"]["R@5"][1].method == "ci-overlap"  # no per-query values for R@5
    assert cells["m3"]["R@1"][1].method == "paired-bootstrap"  # the 199 shared query ids
    assert cells["m3"]["R@1"][1].n == 199
    assert cells["m4"]["R@1"][1].method == "ci-overlap"  # no shared query: cannot pair
    written = rep.build_report([tmp_path / "runs"], tmp_path / "out" / "report.html")
    _check_png(written["newbench_metrics"])
    assert _parse(written["html"]).classes.count("missing") >= 2  # moved images: placeholders

    drawn = []
    view = rep.View(title="My bench", columns=lambda run: {"x": rep.Estimate(0.5, 0.5, 0.5,
                                                                             "none")},
                    plots=lambda runs: drawn.append(len(runs)) or [])
    rep.register_view("newbench", view)
    try:
        written = rep.build_report([tmp_path / "runs"], tmp_path / "out2" / "report.html")
        assert drawn == [3] and "My bench" in written["html"].read_text()
    finally:
        del rep.VIEWS["newbench"]


def test_estimates_and_overlap_rules():
    a = rep.Estimate(0.50, 0.45, 0.55, "std")
    b = rep.Estimate(0.70, 0.65, 0.75, "std")
    assert a.text() == "50.00 ± 5.00"
    lo, hi = a.interval95()
    assert math.isclose(hi - lo, 2 * 1.959963984540054 * 0.05)
    assert rep.compare(a, b).verdict == 1 and rep.compare(b, a).verdict == -1
    assert rep.compare(a, rep.Estimate(0.55, 0.50, 0.60, "std")).verdict == 0
    assert rep.compare(a, rep.Estimate(0.5, 0.5, 0.5, "none")) is None
    # paired folds are computed by condsim.metrics.significance (the report computes none)
    from condsim.metrics.significance import paired_folds

    c = paired_folds(np.array([0.4, 0.5, 0.6]), np.array([0.42, 0.52, 0.62]))
    assert c.method == "paired-folds" and c.verdict == 1 and math.isclose(c.diff, 0.02)


# --- bad input ------------------------------------------------------------------------------


def test_bad_inputs_give_clear_errors(tmp_path, world):
    with pytest.raises(DataError, match="no such run"):
        rep.build_report([tmp_path / "missing"], tmp_path / "r.html")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "results.json").write_text(json.dumps({"schema": "other/9"}))
    with pytest.raises(DataError, match=r"bad/results.json: schema 'other/9'"):
        rep.build_report([bad], tmp_path / "r.html")
    (bad / "results.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        rep.build_report([bad], tmp_path / "r.html")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no results.json"):
        rep.build_report([empty], tmp_path / "r.html")
    with pytest.raises(DataError, match="HTML file"):
        rep.build_report([world["runs"] / "lr_tiny"], tmp_path / "r.pdf")
    broken = json.loads((world["runs"] / "lr_tiny" / "results.json").read_text())
    del broken["metrics"]["recall"][next(iter(broken["metrics"]["recall"]))]["1"]
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text(json.dumps(broken))
    with pytest.raises(DataError, match="lack the metrics"):
        rep.build_report([tmp_path / "broken"], tmp_path / "r.html")
    with pytest.raises(DataError, match="--reference 'nomatch' matches no run"):
        rep.build_report([world["runs"]], tmp_path / "r.html", reference="nomatch")
    assert main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "r.html")]) == 2
    assert not (tmp_path / "r.html").exists()


def test_cli_report(world, tmp_path, capsys):
    out = tmp_path / "cli" / "report.html"
    assert main(["report", str(world["runs"] / "lr_tiny"), str(world["runs"] / "lr_img"),
                 "--out", str(out), "--max-failures", "2"]) == 0
    page = _parse(out)
    assert page.classes.count("case") == 4
    assert (out.parent / "report.md").is_file() and (out.parent / "lrvsf_recall_at_1.png").is_file()


# --- a real browser -------------------------------------------------------------------------


def _screenshot_module():
    path = Path(__file__).parents[1] / "scripts" / "screenshot_report.py"
    spec = importlib.util.spec_from_file_location("screenshot_report", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while it executes
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists() and shutil.which("chromium") is None,
                    reason="Debian chromium not installed")
def test_report_in_headless_chromium_has_no_console_errors(report, tmp_path):
    shot = _screenshot_module()
    check = shot.check_page(report["html"], width=1400, height=1600)
    assert check.problems == []
    assert check.requests and all(u.startswith(("data:", "file:")) for u in check.requests)
    img = np.asarray(Image.open(io.BytesIO(check.png)).convert("RGB"))
    assert img.shape[:2] == (1600, 1400) and len(np.unique(img.reshape(-1, 3), axis=0)) > 50
    # and the checker does catch errors
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><img src='nope.png'>"
                   "<script>throw new Error('boom')</script></body></html>")
    problems = shot.check_page(bad, width=400, height=300).problems
    assert any("boom" in p for p in problems) and any("nope.png" in p for p in problems)


def test_no_matplotlib_state_touched(tmp_path):
    import subprocess

    code = ("import sys\nimport condsim.results.report as r\n"
            "assert 'matplotlib' not in sys.modules, 'imported at import time'\n"
            "from condsim.results.plots import BarPlot, Series, render_png\n"
            "render_png(BarPlot('b', 't', 'y', ('a',), (Series('s', (1.0,), (0.5,), (2.0,)),),"
            " 'ci'))\n"
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot used'\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


def test_protocol_variants_get_their_own_sections_and_never_compare(world, tmp_path):
    """LRVS-F runs with category conditions and with captions are different protocols: two
    sections, each compared with its own reference, plots named apart; the leaderboard's
    protocol column says which."""
    from condsim.results.leaderboard import leaderboard_rows, load_runs

    for name in ("lr_tiny", "lr_img"):
        res = json.loads((world["runs"] / name / "results.json").read_text())
        res["protocol"]["conditioning"] = "text"
        (tmp_path / "runs" / f"{name}_text").mkdir(parents=True)
        (tmp_path / "runs" / f"{name}_text" / "results.json").write_text(json.dumps(res))
    written = rep.build_report([world["runs"] / "lr_tiny", world["runs"] / "lr_img",
                                tmp_path / "runs"], tmp_path / "out" / "r.html")
    md = written["markdown"].read_text()
    assert md.count("## LRVS-Fashion · conditioning: category") == 1
    assert md.count("## LRVS-Fashion · conditioning: text") == 1
    assert md.count("(reference)") == 2  # one reference per variant
    assert {"lrvsf_recall_at_1_category", "lrvsf_recall_at_1_text"} <= set(written)
    protocols = sorted(r.protocol for r in leaderboard_rows(load_runs(
        [world["runs"] / "lr_tiny", tmp_path / "runs" / "lr_tiny_text"])))
    assert protocols == ["lrvsf/v2 category", "lrvsf/v2 text"]
    single = rep.build_report([world["runs"] / "lr_tiny"], tmp_path / "one" / "r.html")
    assert "lrvsf_recall_at_1" in single  # one variant: plain names, as before
