"""The printed summary of a results.json (rich): the gap table, a per-category table for tasks with
several categories, and a warning for every task or category the model answers no better than chance.

Each function takes `Results` (or results.json's content as a plain dict, as commands/ hold it)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from vopd_bench.schema import Results, TaskResult

ResultsLike = Results | dict[str, Any]


def _typed(results: ResultsLike) -> Results:
    return results if isinstance(results, Results) else Results.from_dict(results)


def _pct(x: float | None) -> str:
    return "–" if x is None or x != x else f"{100 * x:.1f}"


def _p(p: float | None) -> str:
    if p is None:
        return "–"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def _views(results: Results) -> list[str]:
    views: list[str] = []
    for t in results.tasks.values():
        for v in t.views:
            if v not in views:
                views.append(v)
    return views


def _columns(table: Table, views: list[str]) -> None:
    table.add_column("n", justify="right")
    for v in views:
        table.add_column(f"{v} % [95% CI]", justify="right")
    table.add_column("gap pts [95% CI]", justify="right")
    table.add_column("McNemar p", justify="right")
    table.add_column("parse fail", justify="right")
    table.add_column("cut off", justify="right")
    table.add_column("visual tok", justify="right")
    table.add_column("errors", justify="right")


def _cells(block: TaskResult, views: list[str]) -> list[str]:
    """n, accuracy [CI] per view, gap [CI], McNemar p, parse failures and errors of one results block."""
    cells = []
    for v in views:
        s = block.views.get(v)
        cells.append("" if s is None else f"{_pct(s.accuracy)} [{_pct(s.ci_low)}, {_pct(s.ci_high)}]")
    g = block.gap
    gap = "–" if g is None or g.value is None else f"{g.value:+.1f} [{g.ci_low:+.1f}, {g.ci_high:+.1f}]"
    n = max(s.n for s in block.views.values())
    pf = sum(s.parse_failures or 0 for s in block.views.values())
    cut = sum(s.truncated or 0 for s in block.views.values())
    err = sum(s.errors for s in block.views.values())
    vt = " / ".join("–" if block.views.get(v) is None or block.views[v].visual_tokens is None
                    else f"{block.views[v].visual_tokens:.0f}" for v in views if v in block.views)
    return [str(n), *cells, gap, _p(None if g is None else g.p_value), str(pf), str(cut), vt, str(err)]


def results_table(results: ResultsLike, title: str = "Regional-to-global gap") -> Table:
    """One row per task (and the average): n, accuracy per view with 95% CI, gap [CI], McNemar p."""
    results = _typed(results)
    views = _views(results)
    table = Table(title=title, title_justify="left")
    table.add_column("task")
    _columns(table, views)
    for name, t in results.tasks.items():
        table.add_row(name, *_cells(t, views))
    if len(results.tasks) > 1:
        avg, n_tasks = results.average, len(results.tasks)

        def of(s: dict[str, Any] | None, text: str) -> str:  # say so when a mean is over fewer than all tasks
            k = (s or {}).get("n_tasks", n_tasks)
            return text if k == n_tasks or text == "–" else f"{text} ({k} of {n_tasks} tasks)"

        cells = [of(avg["views"].get(v), _pct(avg["views"].get(v, {}).get("accuracy"))) for v in views]
        g = avg.get("gap")
        table.add_row("average", "", *cells, "–" if not g else of(g, f"{g['value']:+.1f}"), "", "", "", "", "",
                      style="bold")
    return table


def _categories(task: TaskResult) -> dict[str, TaskResult]:
    """A task's per-category blocks when it has several categories (one category adds nothing)."""
    cats = task.categories or {}
    return cats if len(cats) > 1 else {}


def categories_table(results: ResultsLike, title: str = "Per category") -> Table | None:
    """One row per category of every task with several categories, with its chance level; None if none has."""
    results = _typed(results)
    views = _views(results)
    table = Table(title=title, title_justify="left")
    table.add_column("task")
    table.add_column("category")
    table.add_column("chance %", justify="right")
    _columns(table, views)
    for name, t in results.tasks.items():
        for cat, block in _categories(t).items():
            table.add_row(name, cat, _pct(block.chance), *_cells(block, views))
    return table if table.row_count else None


def chance_warnings(results: ResultsLike) -> list[str]:
    """A line for each task or category whose crop accuracy (full, for tasks without a crop view) is not
    above chance: its 95% CI reaches down to the chance level of its answers (results block `chance`).

    A model that cannot answer a question even when shown the decisive region zoomed in was never able
    to answer it: its full-vs-crop gap measures noise, not perception.
    """
    out = []
    for name, t in _typed(results).tasks.items():
        blocks = [(name, t)] + [(f"{name}, category {c}", b) for c, b in _categories(t).items()]
        for where, block in blocks:
            view = "crop" if "crop" in block.views else "full"
            s, chance = block.views.get(view), block.chance
            if s is None or chance is None or not s.n or s.ci_low > chance:
                continue
            what = "its gap is not meaningful" if view == "crop" else "its score is not meaningful"
            out.append(
                f"{where}: {view} accuracy {_pct(s.accuracy)}% [95% CI {_pct(s.ci_low)}, "
                f"{_pct(s.ci_high)}] is not above chance ({_pct(chance)}%, n={s.n}): the model does not "
                f"answer these questions{' even zoomed in' if view == 'crop' else ''}, so {what} "
                "(was it taught them?)"
            )
    return out


def protocols_table(results: ResultsLike, title: str = "Same responses, each protocol's scoring") -> Table | None:
    """One row per task and view: the accuracy under every protocol whose verdicts the records carry, then
    each protocol's own aggregate metrics; None when no task has them. A protocol that would have asked
    with another prompt is marked † (its column re-scores these responses; it is not its own run)."""
    results = _typed(results)
    names: list[str] = []
    for t in results.tasks.values():
        for n in t.protocols or {}:
            if n not in names:
                names.append(n)
    if not names:
        return None
    run = results.protocol or "vopd-bench"
    names.sort(key=lambda n: (n != run, n))
    table = Table(title=title, title_justify="left", caption="† asked with another prompt than this protocol's: "
                  "these responses re-scored; * = the run's protocol; a range: verdicts left to a judge all wrong .. all right",
                  caption_justify="left")
    table.add_column("task")
    table.add_column("view")
    for n in names:
        table.add_column(f"{n}{' *' if n == run else ''} %", justify="right")
    table.add_column("metrics (run's protocol)")
    for task, t in results.tasks.items():
        blocks = t.protocols or {}
        for view in t.views:
            cells = []
            for n in names:
                b = blocks.get(n, {})
                v = (b.get("views") or {}).get(view) or {}
                mark = "†" if b.get("same_prompt") is False else ""
                if v.get("undecided"):  # a range: the judge's verdicts all wrong .. all right
                    text = f"{_pct(v.get('accuracy_low'))}–{_pct(v.get('accuracy_high'))}{mark} ({v['undecided']} to judge)"
                else:
                    text = f"{_pct(v.get('accuracy'))}{mark}"
                cells.append(text if v else "")
            own = ((blocks.get(run, {}).get("views") or {}).get(view) or {}).get("metrics") or {}
            table.add_row(task, view, *cells, ", ".join(f"{k} {_pct(x)}" for k, x in own.items()))
    return table


def print_results(results: ResultsLike, title: str = "Regional-to-global gap") -> None:
    """The protocol line, the gap table, the per-category table (tasks with several categories), the
    protocols table and the chance warnings."""
    results = _typed(results)
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    console.print(f"protocol: {results.protocol or 'vopd-bench'}", markup=False, highlight=False)
    console.print(results_table(results, title))
    cats = categories_table(results)
    if cats is not None:
        console.print(cats)
    protos = protocols_table(results)
    if protos is not None:
        console.print(protos)
    for line in circular_lines(results):
        console.print(line, markup=False, highlight=False)
    for line in judge_lines(results):
        console.print(line, markup=False, highlight=False)
    for line in chance_warnings(results):
        console.print(f"warning: {line}", style="yellow", markup=False, highlight=False)


def circular_lines(results: ResultsLike) -> list[str]:
    """Per task and view of a --circular run: the circular accuracy beside the plain one over all rotations."""
    out = []
    for name, t in _typed(results).tasks.items():
        for view, s in t.views.items():
            if s.circular_accuracy is not None:
                out.append(f"circular: {name}/{view}: {_pct(s.circular_accuracy)}% of {s.circular_n} questions right "
                           f"under every option rotation (plain, over all rotations: {_pct(s.accuracy)}%)")
    return out


def judge_lines(results: ResultsLike) -> list[str]:
    """Per task and view where an LLM judge gave verdicts: how many, and how often the vopd-bench rules agree."""
    out = []
    for name, t in _typed(results).tasks.items():
        for view, s in t.views.items():
            if s.judged:
                agree = "" if s.judge_agreement is None else f", the vopd-bench rules agree on {100 * s.judge_agreement:.0f}%"
                out.append(f"judge: {name}/{view}: {s.judged} of {s.n} verdicts by the judge{agree}")
    return out
