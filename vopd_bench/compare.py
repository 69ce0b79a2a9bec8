"""Which items moved between two runs: per task and view, the 2×2 table of paired outcomes (fixed, broken,
both right, both wrong), the exact McNemar p of fixed vs broken, and the ids of the items that moved.

Runs are eval run directories (or a training run: its first and last scored checkpoints). Items are paired
by id; an item answered with an error in either run is left out of the table and counted apart.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vopd_bench.errors import UserError
from vopd_bench.rundir import RunDir
from vopd_bench.stats import mcnemar_exact
from vopd_bench.train.rundir import TrainRun


@dataclass
class Transition:
    """Paired outcomes of one task/view in run A (before) and run B (after)."""

    task: str
    view: str
    both_right: int = 0
    fixed: int = 0  # wrong in A, right in B
    broken: int = 0  # right in A, wrong in B
    both_wrong: int = 0
    errors: int = 0  # items with an error in either run (not in the table)
    only_in_one: int = 0  # items scored in one run only
    fixed_ids: list[str] = field(default_factory=list)
    broken_ids: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return self.both_right + self.fixed + self.broken + self.both_wrong

    @property
    def p_value(self) -> float:
        return mcnemar_exact(self.fixed, self.broken)

    @property
    def net_points(self) -> float | None:
        """Accuracy change B − A over the paired items, in points."""
        return None if not self.n else 100.0 * (self.fixed - self.broken) / self.n

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "n": self.n, "p_value": self.p_value, "net_points": self.net_points}


def transition(task: str, view: str, a: dict[str, Any], b: dict[str, Any]) -> Transition:
    """The 2×2 table of records `a` and `b` (item id → record with `correct` and `error`)."""
    t = Transition(task, view)
    for key in sorted(set(a) | set(b)):
        ra, rb = a.get(key), b.get(key)
        if ra is None or rb is None:
            t.only_in_one += 1
            continue
        if ra.get("error") or rb.get("error"):
            t.errors += 1
            continue
        ca, cb = bool(ra.get("correct")), bool(rb.get("correct"))
        if ca and cb:
            t.both_right += 1
        elif cb:
            t.fixed += 1
            t.fixed_ids.append(key)
        elif ca:
            t.broken += 1
            t.broken_ids.append(key)
        else:
            t.both_wrong += 1
    return t


def run_views(path: Path) -> dict[str, list[str]]:
    """Task → views an eval run directory scored: its config.json's, and any other sample file it holds (a
    config.json of an earlier release kept only the last invocation's tasks)."""
    cfg = RunDir(path).read_config()
    if cfg is None:
        raise UserError(f"{path}: not an eval run directory (no config.json); give two eval run dirs or one training run")
    out = {t: list(v) for t, v in cfg.views.items()}
    for f in sorted((path / "samples").glob("*/*.jsonl")):
        view = f.stem.split(".rank")[0]
        if view not in out.setdefault(f.parent.name, []):
            out[f.parent.name].append(view)
    return out


def compare_runs(a: Path, b: Path) -> list[Transition]:
    """Transitions for every task and view both runs scored."""
    va, vb = run_views(a), run_views(b)
    common = [t for t in va if t in vb]
    if not common:
        raise UserError(f"{a} and {b} share no task (A: {', '.join(va) or 'none'}; B: {', '.join(vb) or 'none'})")
    ra, rb = RunDir(a), RunDir(b)
    out = []
    for task in common:
        for view in [v for v in va[task] if v in vb[task]]:
            out.append(transition(task, view, ra.load_records(task, view), rb.load_records(task, view)))
    return out


def training_endpoints(path: Path, first: int | None = None, last: int | None = None) -> tuple[Path, Path, str, str]:
    """The eval run dirs of a training run's first and last scored checkpoints (or of steps `first`/`last`),
    with their labels."""
    run = TrainRun(path)
    points = [p for p in run.curve() if run.eval_dir(p) is not None]
    if len(points) < 2:
        raise UserError(f"{path}: a training run needs at least two scored checkpoints with eval dirs to compare "
                        f"(found {len(points)})")
    by_step = {p.step: p for p in points}
    for s in (first, last):
        if s is not None and s not in by_step:
            raise UserError(f"{path}: no scored checkpoint at step {s} (steps: {', '.join(map(str, sorted(by_step)))})")
    p0 = by_step[first] if first is not None else points[0]
    p1 = by_step[last] if last is not None else points[-1]
    return run.eval_dir(p0), run.eval_dir(p1), f"step {p0.step}", f"step {p1.step}"  # type: ignore[return-value]
