"""Rich tables of a run's metrics, for the terminal (``condsim eval``, ``condsim demo``)."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def _is_cell(x: Any) -> bool:
    return isinstance(x, dict) and isinstance(x.get("mean"), (int, float))


def _pct(cell: dict[str, Any]) -> str:
    text = f"{cell['mean'] * 100:.2f}"
    if "ci_low" in cell and "ci_high" in cell:
        text += f" [{cell['ci_low'] * 100:.2f}, {cell['ci_high'] * 100:.2f}]"
    elif "std" in cell:
        text += f" ± {cell['std'] * 100:.2f}"
    return text


def metric_rows(metrics: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """``(label, value)`` of every ``metrics[<metric>][<k>]`` cell (``<metric>@<k>``), every
    top-level cell (``<name>``) and, one level down, every group's cells (``<group>
    <metric>@<k>``), in percent with the CI."""
    rows: list[tuple[str, str]] = []
    for name, node in metrics.items():
        if name in ("per_query", "query_ids", "condition_reliance") or not isinstance(node,
                                                                            dict):
            continue
        if _is_cell(node):
            rows.append((f"{prefix}{name}", _pct(node)))
        elif node and all(_is_cell(v) for v in node.values()):
            rows += [(f"{prefix}{name}@{k}", _pct(v)) for k, v in node.items()]
        elif node and all(isinstance(v, dict) for v in node.values()):
            for group, sub in node.items():
                rows += metric_rows({k: v for k, v in sub.items() if isinstance(v, dict)},
                                    f"{prefix}{group} ")
    return rows


def metrics_table(result: Any) -> Table:
    """A two-column table of every metric cell of a run (95% CIs where recorded)."""
    table = Table(title=f"{result.benchmark}: {result.model.get('name', '?')} (95% CI)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for label, value in metric_rows(result.metrics):
        table.add_row(label, value)
    return table


def lrvsf_table(result: Any) -> Table:
    """Rich table of an LRVS-F result: rows = distractor counts, columns = R@K."""
    ks = result.protocol["ks"]
    table = Table(title=f"LRVS-F: {result.model['name']} ({result.protocol['conditioning']})")
    table.add_column("distractors", justify="right")
    for k in ks:
        table.add_column(f"R@{k}", justify="right")
    mrr, median = result.metrics.get("mrr_at_100"), result.metrics.get("median_rank")
    if mrr and median:  # older results.json files hold recall only
        table.add_column("MRR@100", justify="right")
        table.add_column("median rank", justify="right")
    for n, per_k in result.metrics["recall"].items():
        cells = [f"{per_k[str(k)]['mean'] * 100:.2f} ± {per_k[str(k)]['std'] * 100:.2f}"
                 for k in ks]
        if mrr and median:
            cells += [f"{mrr[n]['mean'] * 100:.2f}", f"{median[n]['mean']:.1f}"]
        table.add_row(f"{int(n):,}", *cells)
    return table
