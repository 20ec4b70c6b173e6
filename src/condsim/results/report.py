"""Reports: one self-contained HTML file (plots and thumbnails inlined), PNG plots beside it,
and a markdown summary.

Each benchmark contributes through a *view* (:data:`VIEWS`): a plot function and table rows;
new benchmarks register a view instead of adding branches here.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from condsim.errors import DataError
from condsim.results.run_result import RunResult, atomic_write_text, load_result

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class View:
    """How a benchmark's runs are drawn: ``plot(runs, ax_factory) -> list of (title, png)``."""

    plot: Callable[[list[RunResult]], list[tuple[str, bytes]]]
    failures: Callable[[RunResult], list[dict[str, Any]]]


def _fig_png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _lrvsf_plots(runs: list[RunResult]) -> list[tuple[str, bytes]]:
    """Recall@K vs number of distractors, mean ± std band over folds, one line per model."""
    plt = _pyplot()
    out = []
    for k in ("1", "10"):
        fig, ax = plt.subplots(figsize=(6.4, 4))
        for run in runs:
            ns = sorted(int(n) for n in run.metrics["recall"])
            if k not in run.metrics["recall"][str(ns[0])]:
                continue
            mean = np.array([run.metrics["recall"][str(n)][k]["mean"] for n in ns]) * 100
            std = np.array([run.metrics["recall"][str(n)][k]["std"] for n in ns]) * 100
            ax.plot(ns, mean, marker="o", label=run.model["name"])
            ax.fill_between(ns, mean - std, mean + std, alpha=0.2)
        ax.set_xscale("log")
        ax.set_xlabel("distractors in the gallery")
        ax.set_ylabel(f"R@{k} (%)")
        ax.set_title(f"LRVS-F: R@{k} vs distractors (band: ± std over folds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        out.append((f"lrvsf_recall_at_{k}", _fig_png(fig)))
    return out


def _genecis_plots(runs: list[RunResult]) -> list[tuple[str, bytes]]:
    """Per-task R@1 bars with 95% bootstrap CIs, one bar group per task."""
    plt = _pyplot()
    tasks = list(dict.fromkeys(t for r in runs for t in r.metrics["tasks"]))
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(1, len(runs))
    x = np.arange(len(tasks))
    for i, run in enumerate(runs):
        rec = [run.metrics["tasks"].get(t, {}).get("recall", {}).get("1") for t in tasks]
        mean = np.array([r["mean"] * 100 if r else np.nan for r in rec])
        lo = np.array([(r["mean"] - r["ci_low"]) * 100 if r else 0 for r in rec])
        hi = np.array([(r["ci_high"] - r["mean"]) * 100 if r else 0 for r in rec])
        ax.bar(x + i * width, mean, width, yerr=[lo, hi], capsize=3, label=run.model["name"])
    ax.set_xticks(x + width * (len(runs) - 1) / 2, tasks, rotation=15, fontsize=8)
    ax.set_ylabel("R@1 (%)")
    ax.set_title("GeneCIS: R@1 per task (95% bootstrap CI)")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return [("genecis_recall_at_1", _fig_png(fig))]


def _thumb(image: Any, size: int = 96) -> str:
    from condsim.data.images import decode_image

    img = decode_image(image).copy()
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _lrvsf_failures(run: RunResult) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    fails = run.extra.get("failures") or []
    root = Path(run.extra.get("config", {}).get("data_root", ""))
    if not fails or not (root / "products.parquet").is_file():
        return []
    from condsim.data.lrvsf import binary_values

    table = pq.read_table(root / "products.parquet", columns=["COMPLEX_IMG", "SIMPLE_IMG"])
    complex_ = binary_values(table.column("COMPLEX_IMG"), "COMPLEX_IMG")
    simple = binary_values(table.column("SIMPLE_IMG"), "SIMPLE_IMG")
    return [{"query": _thumb(complex_[f["query_row"]]), "condition": f["condition"],
             "wrong": [_thumb(simple[r]) for r in f["top_rows"]],
             "target": _thumb(simple[f["target_row"]]),
             "note": f"target rank {f['rank']} among the products' targets"} for f in fails]


def _genecis_failures(run: RunResult) -> list[dict[str, Any]]:
    from condsim.data.crops import ImageRef

    def ref(d: dict[str, Any]) -> ImageRef:
        return ImageRef(d["path"], tuple(d["bbox"]) if d["bbox"] else None, d["crop_mode"])

    out = []
    for f in run.extra.get("failures") or []:
        try:
            out.append({"query": _thumb(ref(f["reference"])), "condition": f["condition"],
                        "wrong": [_thumb(ref(t)) for t in f["top"]],
                        "target": _thumb(ref(f["target"])), "note": f["task"]})
        except DataError as exc:  # images moved since the run
            logger.warning("failure gallery: %s", exc)
    return out


VIEWS: dict[str, View] = {
    "lrvsf": View(_lrvsf_plots, _lrvsf_failures),
    "genecis": View(_genecis_plots, _genecis_failures),
}


def load_runs(paths: Sequence[str | Path]) -> list[RunResult]:
    """Load every ``results.json`` (a run dir or a folder of run dirs)."""
    runs = []
    for p in map(Path, paths):
        if (p / "results.json").is_file() or p.suffix == ".json":
            runs.append(load_result(p))
        elif p.is_dir():
            found = sorted(p.glob("*/results.json"))
            if not found:
                raise DataError(f"{p}: no results.json in it or in its sub-folders")
            runs += [load_result(f) for f in found]
        else:
            raise DataError(f"{p}: no such run directory")
    if not runs:
        raise DataError("no runs given")
    return runs


def _headline(run: RunResult) -> str:
    h = run.headline
    if "ci_low" in h:
        return f"{h['value' if 'value' in h else 'mean'] * 100:.2f} [{h['ci_low'] * 100:.2f}, " \
               f"{h['ci_high'] * 100:.2f}]"
    return f"{h.get('value', h.get('mean', float('nan'))) * 100:.2f} ± {h.get('std', 0) * 100:.2f}"


def comparison_rows(runs: list[RunResult]) -> list[dict[str, str]]:
    """Per benchmark, each run against the first run of that benchmark: paired bootstrap on
    per-query values (GeneCIS) or on per-fold values (LRVS-F, same folds and draws);
    ``*`` marks a 95% CI of the difference that excludes 0."""
    from condsim.metrics.bootstrap import paired_bootstrap

    rows = []
    by_bench: dict[str, list[RunResult]] = {}
    for r in runs:
        by_bench.setdefault(r.benchmark, []).append(r)
    for bench, group in by_bench.items():
        base = group[0]
        for r in group:
            diff = ""
            try:
                a, b = _paired_values(base, r)
                if r is not base and len(a) == len(b) and len(a) > 1:
                    t = paired_bootstrap(a, b, seed=0, n_resamples=1000)
                    mark = "*" if (t.low > 0 or t.high < 0) else ""
                    diff = f"{t.diff * 100:+.2f}{mark} [{t.low * 100:+.2f}, {t.high * 100:+.2f}]"
            except (KeyError, ValueError):
                diff = "n/a"
            rows.append({"benchmark": bench, "model": r.model["name"],
                         "headline": f"{r.headline['name']}: {_headline(r)}",
                         "vs first": diff or ("baseline" if r is base else "")})
    return rows


def _paired_values(a: RunResult, b: RunResult) -> tuple[np.ndarray, np.ndarray]:
    if a.benchmark == "genecis":
        tasks = [t for t in a.metrics["tasks"] if t in b.metrics["tasks"]]
        va = np.concatenate([a.metrics["tasks"][t]["per_query"]["1"] for t in tasks])
        vb = np.concatenate([b.metrics["tasks"][t]["per_query"]["1"] for t in tasks])
        return va, vb
    n = a.headline["name"].split("|")[-1]
    k = a.headline["name"].split("|")[0].split("_")[-1]
    return (np.asarray(a.metrics["recall"][n][k]["folds"]),
            np.asarray(b.metrics["recall"][n][k]["folds"]))


def build_report(paths: Sequence[str | Path], out_html: str | Path) -> dict[str, Path]:
    """Write ``out_html`` (self-contained), its PNG plots beside it and ``report.md``."""
    runs = load_runs(paths)
    out_html = Path(out_html)
    out_dir = out_html.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    sections = []
    for bench in dict.fromkeys(r.benchmark for r in runs):
        view = VIEWS.get(bench)
        group = [r for r in runs if r.benchmark == bench]
        if view is None:
            logger.warning("no report view for benchmark %s; table only", bench)
            continue
        imgs = []
        for name, png in view.plot(group):
            path = out_dir / f"{name}.png"
            tmp = path.with_suffix(".png.tmp")
            tmp.write_bytes(png)
            tmp.replace(path)
            written[name] = path
            imgs.append(f'<img alt="{name}" src="data:image/png;base64,'
                        f'{base64.b64encode(png).decode()}">')
        fails_html = []
        for r in group:
            for f in view.failures(r)[:6]:
                wrong = "".join(f'<img class="t wrong" src="{w}">' for w in f["wrong"])
                fails_html.append(
                    f'<div class="fail"><div class="cap">{html.escape(r.model["name"])}: '
                    f'{html.escape(f["note"])}</div><img class="t" src="{f["query"]}">'
                    f'<span class="cond">{html.escape(f["condition"])}</span> &rarr; {wrong}'
                    f' &nbsp;true: <img class="t ok" src="{f["target"]}"></div>')
        sections.append(
            f"<h2>{html.escape(bench)}</h2>{''.join(imgs)}<h3>Failure gallery</h3>"
            + ("".join(fails_html) or "<p>no failures recorded</p>"))
    rows = comparison_rows(runs)
    table = "".join(
        f"<tr><td>{html.escape(r['benchmark'])}</td><td>{html.escape(r['model'])}</td>"
        f"<td>{html.escape(r['headline'])}</td><td>{html.escape(r['vs first'])}</td></tr>"
        for r in rows)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>condsim report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1100px; color: #222 }}
table {{ border-collapse: collapse }} td, th {{ border: 1px solid #ccc; padding: 4px 8px }}
img {{ max-width: 100% }} .t {{ width: 72px; height: 72px; object-fit: cover; margin: 2px;
 vertical-align: middle; border: 2px solid #999 }} .wrong {{ border-color: #c33 }}
.ok {{ border-color: #3a3 }} .fail {{ margin: 6px 0 }} .cap {{ font-size: 80% }}
.cond {{ background: #eef; padding: 2px 6px; margin: 0 6px }}
</style></head><body>
<h1>condsim report</h1>
<p>{len(runs)} run(s). Differences: paired bootstrap against the first run of each benchmark
(GeneCIS: per-query R@1; LRVS-F: per-fold headline recall); * = 95% CI excludes 0.</p>
<table><tr><th>benchmark</th><th>model</th><th>headline</th><th>vs first</th></tr>{table}
</table>
{''.join(sections)}
</body></html>
"""
    written["html"] = atomic_write_text(out_html, page)
    md = ["| benchmark | model | headline | vs first |", "|---|---|---|---|"]
    md += [f"| {r['benchmark']} | {r['model']} | {r['headline']} | {r['vs first']} |"
           for r in rows]
    written["markdown"] = atomic_write_text(out_dir / "report.md", "\n".join(md) + "\n")
    return written


def leaderboard_rows(runs: list[RunResult], sort: str = "headline") -> list[dict[str, Any]]:
    """One row per run: model, benchmark, headline value and interval, seed, protocol, date."""
    rows = []
    for r in runs:
        h = r.headline
        value = h.get("value", h.get("mean"))
        spread = (f"[{h['ci_low'] * 100:.2f}, {h['ci_high'] * 100:.2f}]" if "ci_low" in h
                  else f"± {h.get('std', 0) * 100:.2f}")
        rows.append({"model": r.model["name"], "benchmark": r.benchmark,
                     "metric": h["name"], "headline": round(float(value) * 100, 4),
                     "interval": spread, "seed": r.seed,
                     "protocol": f"{r.protocol.get('name', r.benchmark)}/"
                                 f"{r.protocol.get('protocol_version', '?')}",
                     "date": r.created})
    if rows and sort not in rows[0]:
        raise DataError(f"cannot sort by {sort!r}; columns: {', '.join(rows[0])}")
    return sorted(rows, key=lambda row: row[sort], reverse=sort == "headline")
