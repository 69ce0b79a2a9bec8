"""The whole story on the embedded default: base gap of the reference model (decomposed view by view, with
the masked and random-crop controls) → Vision-OPD with the demo recipe, every checkpoint re-scored → the report.

Nothing is downloaded: the model ships with the package and the data are generated from seeds.
Each stage writes an ordinary run directory, so a re-run resumes instead of recomputing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vopd_bench.backends import BackendConfig
from vopd_bench.evaluate import EvalConfig, run_eval

log = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    """What `vopd-bench demo` runs (defaults sized for ≤ 10 minutes on 2 CPU cores)."""

    out: str = "runs/demo"
    reports: str | None = None  # None: <out>/report (the committed reports/ is refreshed only when named here)
    model: str = "vopd-tiny"
    task: str = "synth"
    holdout: str = "synth_holdout"
    eval_limit: int = 200
    recipe: str = "demo"
    overrides: list[str] = field(default_factory=list)
    batch_size: int = 50


# the gap decomposed (full -> red_box -> blur_surround -> crop_native -> crop) and the two controls (not
# self_zoom: the shipped reference model has not learned the grounding prompt, so every item would fall back)
BASE_VIEWS = ("full", "red_box", "blur_surround", "crop_native", "crop", "masked", "random_crop")


def base_eval(cfg: DemoConfig) -> dict[str, Any]:
    """The base model's gap with every view on the gap task, and the holdout's full view."""
    bcfg = BackendConfig(model=cfg.model, batch_size=cfg.batch_size)
    out = str(Path(cfg.out) / "base")
    from vopd_bench.backends.hf import HFBackend

    backend = HFBackend(bcfg)
    run_eval(EvalConfig(tasks=[cfg.task], backend=bcfg, out=out, views=list(BASE_VIEWS), limit=cfg.eval_limit), backend)
    return run_eval(EvalConfig(tasks=[cfg.holdout], backend=bcfg, out=out, views=["full"], limit=cfg.eval_limit), backend)


def train(cfg: DemoConfig) -> Path:
    from vopd_bench.train import load_config, run_training

    tcfg = load_config(cfg.recipe, [f"eval_limit={cfg.eval_limit}", f"model={cfg.model}", *cfg.overrides],
                       out=str(Path(cfg.out) / "train"))
    return Path(run_training(tcfg))


def report(cfg: DemoConfig, train_dir: Path) -> Path:
    from vopd_bench.report import build_report

    base = Path(cfg.out) / "base"
    return build_report([base, train_dir], report_dir(cfg), labels={base: "vopd-tiny (base)"})


def report_dir(cfg: DemoConfig) -> Path:
    """Where the demo's report goes: `reports` when given, else `<out>/report` (so a fresh clone stays clean)."""
    return Path(cfg.reports) if cfg.reports else Path(cfg.out) / "report"


def full_gain(items: tuple[list[float], list[float], list[float], Any]) -> dict[str, Any]:
    """Paired change of the full view's accuracy between two curve points, from `paired_items` (the same items
    as the closure): points and exact McNemar p."""
    from vopd_bench.stats import mcnemar_exact, paired_counts

    full0, _, full1, _ = items
    down, up = paired_counts(full0, full1)
    n = len(full0)
    gain = 100.0 * (up - down) / n if n else float("nan")
    return {"gain": gain, "p_value": mcnemar_exact(up, down), "n": n, "improved": up, "worsened": down}


def summary_lines(train_dir: Path) -> list[str]:
    """One line per task of a training run, step 0 -> last step: accuracies and, for a gap task, the gap with its
    relative reduction beside the share of the base gap closed by the full view (95% CI) and the paired full-image
    gain (both over the items of the two eval dirs, found as the report finds them: a moved run reads its own);
    then a COLLAPSE line when crop or holdout accuracy fell more than `collapse_warn_points` below step 0."""
    from vopd_bench.report.closure import pct
    from vopd_bench.report.load import collapse_threshold, scored_curve
    from vopd_bench.train.curve import accuracies, accuracy_drops, closure_block, paired_items
    from vopd_bench.train.rundir import TrainRun

    run = TrainRun(train_dir)
    curve = scored_curve(run)
    first, last = curve[0], curve[-1]
    d0, d1 = run.eval_dir(first), run.eval_dir(last)
    lines = []
    for task, t in last.tasks.items():
        if task not in first.tasks:
            continue
        b = first.tasks[task]
        views = "  ".join(f"{v} {100 * b.views[v].accuracy:.1f} -> {100 * s.accuracy:.1f}"
                          for v, s in t.views.items())
        line = f"{task}: step {first.step} -> {last.step}: {views}"
        g0, g1 = b.gap.value if b.gap else None, t.gap.value if t.gap else None
        c = (t.closure or closure_block(run, first, last, task)) if t.gap is not None else None
        if c is not None and g0 is not None and g1 is not None:
            ci = (f" [{pct(c.ci_low, 1, False, '-')}, {pct(c.ci_high, 1, False, '-')}]"
                  if c.ci_low is not None and c.ci_high is not None else "")
            line += (f"  gap {g0:+.1f} -> {g1:+.1f} pts (relative reduction {pct(c.gap_reduction, 0, False, '-')}); "
                     f"gap closed by the full view {pct(c.value, 1, False, '-')}{ci}")
            items = paired_items(d0, d1, task) if d0 is not None and d1 is not None else None
            if items and items[0]:
                g = full_gain(items)
                line += f"; full-image gain {g['gain']:+.1f} pts, McNemar p = {g['p_value']:.2g} (n = {g['n']})"
        lines.append(line)
    threshold = collapse_threshold(run.read_config())
    drops = accuracy_drops(accuracies(first.tasks), accuracies(last.tasks), threshold)
    if drops:
        what = ", ".join(f"{t} {v} {a:.1f} -> {b:.1f}" for t, v, a, b in drops)
        lines.append(f"COLLAPSE at step {last.step}: {what} (more than {threshold:g} points below step "
                     f"{first.step}): the narrower gap is not a closed one")
    return lines


def run_demo(cfg: DemoConfig, on_base: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run the three stages (`on_base` sees the base results as soon as they exist); returns
    {base results, train dir, report path, seconds per stage}."""
    t0 = time.perf_counter()
    base = base_eval(cfg)
    if on_base is not None:
        on_base(base)
    t1 = time.perf_counter()
    train_dir = train(cfg)
    t2 = time.perf_counter()
    rep = report(cfg, train_dir)
    t3 = time.perf_counter()
    return {"base": base, "train_dir": train_dir, "report": rep,
            "seconds": {"base_eval": t1 - t0, "train": t2 - t1, "report": t3 - t2, "total": t3 - t0}}
