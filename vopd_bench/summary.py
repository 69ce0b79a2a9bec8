"""The printed summary table of a results.json (rich)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _pct(x: float | None) -> str:
    return "–" if x is None or x != x else f"{100 * x:.1f}"


def _p(p: float | None) -> str:
    if p is None:
        return "–"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def results_table(results: dict[str, Any], title: str = "Regional-to-global gap") -> Table:
    """One row per task (and the average): n, accuracy per view with 95% CI, gap [CI], McNemar p."""
    views: list[str] = []
    for t in results["tasks"].values():
        for v in t["views"]:
            if v not in views:
                views.append(v)
    table = Table(title=title, title_justify="left")
    table.add_column("task")
    table.add_column("n", justify="right")
    for v in views:
        table.add_column(f"{v} % [95% CI]", justify="right")
    table.add_column("gap pts [95% CI]", justify="right")
    table.add_column("McNemar p", justify="right")
    table.add_column("parse fail", justify="right")
    table.add_column("errors", justify="right")
    for name, t in results["tasks"].items():
        cells = []
        for v in views:
            s = t["views"].get(v)
            cells.append("" if s is None else f"{_pct(s['accuracy'])} [{_pct(s['ci_low'])}, {_pct(s['ci_high'])}]")
        g = t.get("gap") or {}
        gap = "–" if g.get("value") is None else f"{g['value']:+.1f} [{g['ci_low']:+.1f}, {g['ci_high']:+.1f}]"
        n = max(s["n"] for s in t["views"].values())
        pf = sum(s["parse_failures"] for s in t["views"].values())
        err = sum(s["errors"] for s in t["views"].values())
        table.add_row(name, str(n), *cells, gap, _p(g.get("p_value")), str(pf), str(err))
    if len(results["tasks"]) > 1:
        avg, n_tasks = results["average"], len(results["tasks"])

        def of(s: dict[str, Any] | None, text: str) -> str:  # say so when a mean is over fewer than all tasks
            k = (s or {}).get("n_tasks", n_tasks)
            return text if k == n_tasks or text == "–" else f"{text} ({k} of {n_tasks} tasks)"

        cells = [of(avg["views"].get(v), _pct(avg["views"].get(v, {}).get("accuracy"))) for v in views]
        g = avg.get("gap")
        table.add_row("average", "", *cells, "–" if not g else of(g, f"{g['value']:+.1f}"), "", "", "", style="bold")
    return table


def print_results(results: dict[str, Any], title: str = "Regional-to-global gap") -> None:
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    console.print(results_table(results, title))
