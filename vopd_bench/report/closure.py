"""How much of a base gap the full view recovered, as the report shows it.

gap closed = (full_N − full_0) / (crop_0 − full_0): the share of the base gap recovered by the full view, with
a paired bootstrap CI over items (the sample files of both runs, paired by id). Unlike the relative change of
the gap it cannot be won by losing the crop: it is negative when the full view got worse. (The collapse flag,
a dagger wherever a collapsed model's gap is shown, is `tables.collapse_note`.)
"""

from __future__ import annotations

from pathlib import Path

from vopd_bench.report.load import ModelResult, acc
from vopd_bench.report.tables import gap_points
from vopd_bench.schema import Closure, CurvePoint, TaskResult, nan_to_none
from vopd_bench.stats import closure_estimate, gap_closure, relative_reduction
from vopd_bench.train.curve import paired_items
from vopd_bench.train.rundir import TrainRun

DEFINITION = ("gap closed = (full_N − full_0) / (crop_0 − full_0), the share of the base gap recovered by the full "
              "view (95% paired-bootstrap CI over items; negative when the full view got worse)")
FOOTNOTE = ("closed: (full_N − full_0) / (crop_0 − full_0), the share of the base gap recovered by the full view "
            "[95% paired-bootstrap CI].")  # under the figures that show it


def closure_between(b: TaskResult | None, a: TaskResult | None, dirs: tuple[Path | None, Path | None] | None = None,
                    task: str | None = None, stored: Closure | None = None) -> Closure | None:
    """The closure of `task` from block `b` (step 0) to block `a` (step N): the `stored` record when it has a CI,
    else from the items of both run dirs' sample files when they exist, else the `stored` record, else the point
    estimate from accuracies (no CI). Its `gap_reduction` is always set when both gaps are known."""
    if b is None or a is None:
        return None
    reduction = relative_reduction(gap_points(b), gap_points(a))
    if stored is not None and stored.ci_low is not None and stored.ci_high is not None:
        return stored
    items = paired_items(dirs[0], dirs[1], task) if dirs and None not in dirs and task else None
    if items and items[0]:
        v, lo, hi = map(nan_to_none, gap_closure(*items))
        return Closure(v, lo, hi, n_items=len(items[0]), gap_reduction=reduction)
    if stored is not None:
        return stored
    return Closure(closure_estimate(acc(b, "full"), acc(b, "crop"), acc(a, "full")), gap_reduction=reduction)


def pair_closure(before: ModelResult, after: ModelResult, task: str) -> Closure | None:
    """The closure of `task` from `before` (the base) to `after`."""
    return closure_between(before.tasks.get(task), after.tasks.get(task), (before.path, after.path), task,
                           after.closure.get(task))


def pair_closures(before: ModelResult, after: ModelResult) -> dict[str, Closure | None]:
    """task -> the closure from `before` to `after`, for every task both have (computed once per pair)."""
    return {t: pair_closure(before, after, t) for t in before.tasks if t in after.tasks}


def curve_closure(first: CurvePoint, last: CurvePoint, task: str, run: TrainRun | None = None) -> Closure | None:
    """The closure of `task` from the first to the last point of a training curve (`run`: where its eval dirs are;
    without it, the stored record or the point estimate)."""
    a = last.tasks.get(task)
    dirs = (run.eval_dir(first), run.eval_dir(last)) if run is not None else None
    return closure_between(first.tasks.get(task), a, dirs, task, a.closure if a is not None else None)


def pct(x: float | None, digits: int = 0, plus: bool = True, minus: str = "−") -> str:
    """A fraction as a percentage: `+55%` (`plus`: with a sign when positive), the minus typographic unless
    `minus` says otherwise (the terminal's `-`); `n/a` for None."""
    if x is None:
        return "n/a"
    return format(100 * x, f"{'+' if plus else ''}.{digits}f").replace("-", minus) + "%"


def closure_text(c: Closure | None) -> str:
    """`+55% [+45%, +64%]` (the CI when known); `n/a` when undefined."""
    if c is None or c.value is None:
        return "n/a"
    if c.ci_low is not None and c.ci_high is not None:
        return f"{pct(c.value)} [{pct(c.ci_low)}, {pct(c.ci_high)}]"
    return pct(c.value)
