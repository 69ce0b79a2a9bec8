"""The gap-reduction curve of a training run: full, crop and holdout accuracy and the gap versus
training step, with 95% CI bands, the relative gap reduction (gap0 − gapN) / gap0 and the share of the
base gap the full view closed; points whose crop or holdout accuracy collapsed carry a dagger.

`draw_curve(curve_jsonl, out_stem)` is what the trainer calls after each scored checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from vopd_bench.report.closure import FOOTNOTE, closure_text, curve_closure, pct
from vopd_bench.report.figures import (
    COLORS,
    NAMES,
    PAGE_IN,
    add_footnote,
    new_figure,
    paper_style,
    save,
    signed,
)
from vopd_bench.report.load import collapse_reasons, collapse_threshold, scored_curve
from vopd_bench.report.tables import DAGGER, gap_points
from vopd_bench.schema import CurvePoint
from vopd_bench.stats import relative_reduction
from vopd_bench.train.rundir import TrainRun

log = logging.getLogger(__name__)

HOLDOUT_STYLES = ["-.", ":", (0, (5, 1, 1, 1))]


def curve_tasks(curve: list[CurvePoint]) -> tuple[list[str], list[str]]:
    """(gap tasks, holdout tasks) seen in the curve, in order of first appearance; holdouts as the points record
    them (`CurvePoint.role`)."""
    gap: list[str] = []
    hold: list[str] = []
    for p in curve:
        for name, b in p.tasks.items():
            if name in gap or name in hold:
                continue
            if p.role(name) == "holdout":
                hold.append(name)
            elif {"full", "crop"} <= set(b.views):
                gap.append(name)
    return gap, hold


def _track(curve: list[CurvePoint], task: str, view: str) -> dict[str, list[float]]:
    """Steps, accuracy (%) and CI bounds (%) of one task/view; NaN where a checkpoint lacks it."""
    out: dict[str, list[float]] = {"steps": [], "acc": [], "lo": [], "hi": []}
    for p in curve:
        s = p.tasks[task].views.get(view) if task in p.tasks else None
        out["steps"].append(float(p.step))
        for key, v in (("acc", s and s.accuracy), ("lo", s and s.ci_low), ("hi", s and s.ci_high)):
            out[key].append(float("nan") if v is None else 100.0 * v)
    return out


def _gap_track(curve: list[CurvePoint], task: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"steps": [], "gap": [], "lo": [], "hi": []}
    for p in curve:
        b = p.tasks.get(task)
        g = b.gap if b else None
        out["steps"].append(float(p.step))
        out["gap"].append(np.nan if b is None or (v := gap_points(b)) is None else v)  # type: ignore[arg-type]
        out["lo"].append(np.nan if g is None or g.ci_low is None else g.ci_low)
        out["hi"].append(np.nan if g is None or g.ci_high is None else g.ci_high)
    return out


def _line(ax: Any, tr: dict[str, list[float]], key: str, color: str, label: str, ls: Any = "-") -> None:
    x = np.asarray(tr["steps"])
    y = np.asarray(tr[key])
    ax.plot(x, y, color=color, linestyle=ls, marker="o", markersize=2.5, label=label, zorder=3)
    lo, hi = np.asarray(tr["lo"]), np.asarray(tr["hi"])
    ok = ~np.isnan(lo) & ~np.isnan(hi) & ~np.isnan(y)
    if ok.sum() == 1:  # a band needs two points: a whisker instead
        err = np.array([[max(y[ok][0] - lo[ok][0], 0)], [max(hi[ok][0] - y[ok][0], 0)]])
        ax.errorbar(x[ok], y[ok], yerr=err, fmt="none", ecolor=color, elinewidth=0.8, capsize=2, zorder=2)
    elif ok.any():
        ax.fill_between(x, lo, hi, color=color, alpha=0.18, linewidth=0, zorder=2)


def collapsed_points(curve: list[CurvePoint], threshold: float) -> dict[int, list[str]]:
    """step -> `task view then → now` for each point whose crop (holdout: full) accuracy fell more than
    `threshold` points below the first point's."""
    out = {}
    for p in curve[1:]:
        if reasons := collapse_reasons(curve[0].tasks, p.tasks, threshold):
            out[p.step] = reasons
    return out


def plot_curve(curve: list[CurvePoint], threshold: float | None = None,
               run: TrainRun | None = None) -> tuple[Figure, dict[str, Any]]:
    """One row per gap task: [accuracy vs step (full, crop, holdout), gap vs step]. Points more than `threshold`
    points (default: the trainer's `collapse_warn_points`) below step 0 on crop or holdout carry a dagger. `run`:
    the training run, whose eval dirs give the closure's CI where curve.jsonl has none."""
    threshold = collapse_threshold() if threshold is None else threshold
    collapsed = collapsed_points(curve, threshold)
    gap, hold = curve_tasks(curve)
    rows = gap or [None]
    fig = new_figure(PAGE_IN, 0.4 + 2.15 * len(rows))
    ncols = 2 if gap else 1
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    data: dict[str, Any] = {"tasks": {}, "holdout": {}}
    for h in hold:
        data["holdout"][h] = _track(curve, h, "full")
    steps = [p.step for p in curve]
    for r, task in enumerate(rows):
        ax = axes[r, 0]
        if task is not None:
            full, crop = _track(curve, task, "full"), _track(curve, task, "crop")
            _line(ax, full, "acc", COLORS["full"], NAMES["full"])
            _line(ax, crop, "acc", COLORS["crop"], NAMES["crop"])
            zoom = _track(curve, task, "self_zoom")
            if not np.isnan(zoom["acc"]).all():  # look-then-zoom (two passes); its step-0 level: the base's
                _line(ax, zoom, "acc", COLORS["self_zoom"], NAMES["self_zoom"], "--")
                if not np.isnan(zoom["acc"][0]):
                    ax.axhline(zoom["acc"][0], color=COLORS["self_zoom"], linewidth=0.6, linestyle=":", zorder=1)
        for i, h in enumerate(hold):
            _line(ax, data["holdout"][h], "acc", COLORS["holdout"], f"{h} (full)", HOLDOUT_STYLES[i % 3])
        ax.set_ylim(0, 102)
        ax.set_ylabel("Accuracy (%)")
        ax.set_xlabel("Training step")
        ax.set_title(f"{task}: accuracy" if task else "Holdout accuracy")
        ax.grid(True, axis="both")
        if task is None:
            continue
        gt = _gap_track(curve, task)
        ax = axes[r, 1]
        _line(ax, gt, "gap", COLORS["gap"], "Gap (crop − full)")
        for step, g in zip(steps, gt["gap"], strict=True):
            if step in collapsed and not np.isnan(g):
                ax.annotate(DAGGER, (step, g), xytext=(0, 3), textcoords="offset points", ha="center", va="bottom",
                            fontsize=8, color=COLORS["gap"])
        ax.axhline(0, color=COLORS["zero"], linewidth=0.6, zorder=1)
        g0, gn = _first_last(gt["gap"])
        crop_change = _change(crop["acc"])
        closure = curve_closure(curve[0], curve[-1], task, run) if len(steps) > 1 else None
        if len(steps) > 1:
            red = closure.gap_reduction if closure is not None else relative_reduction(g0, gn)
            note = f"gap {_pts(g0)} → {_pts(gn)} pts{DAGGER if steps[-1] in collapsed else ''}"
            note += f"\nreduction {pct(red, plus=False)}\nclosed {closure_text(closure)}"
            note += f"\nfull {_pts(_change(full['acc']))}, crop {_pts(crop_change)} pts"
        else:
            red, note = None, f"gap {_pts(g0)} pts at step {steps[0]}"
        ax.text(0.97, 0.95, note, transform=ax.transAxes, ha="right", va="top", fontsize=8,
                bbox={"boxstyle": "round,pad=0.25", "facecolor": "white", "edgecolor": "#bbbbbb", "linewidth": 0.5})
        lo = np.nanmin([*gt["lo"], *gt["gap"], 0.0])
        hi = np.nanmax([*gt["hi"], *gt["gap"], 1.0])
        ax.set_ylim(lo - 0.08 * (hi - lo), hi + 0.45 * (hi - lo))  # room for the note
        ax.set_ylabel("Gap (pts)")
        ax.set_xlabel("Training step")
        ax.set_title(f"{task}: gap, crop − full")
        ax.grid(True, axis="both")
        data["tasks"][task] = {"steps": steps, "full": full["acc"], "crop": crop["acc"], "gap": gt["gap"],
                               "gap_ci": list(zip(gt["lo"], gt["hi"], strict=True)), "gap0": g0, "gapN": gn,
                               "reduction": red, "closure": closure, "crop_change": crop_change,
                               "full_change": _change(full["acc"]), "note": note}
    for ax in axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
        if len(steps) == 1:
            ax.set_xlim(steps[0] - 1, steps[0] + 1)
    handles: list[Any] = []
    if gap:
        handles += [Line2D([], [], color=COLORS["full"], marker="o", markersize=2.5, label=NAMES["full"]),
                    Line2D([], [], color=COLORS["crop"], marker="o", markersize=2.5, label=NAMES["crop"])]
    handles += [Line2D([], [], color=COLORS["holdout"], linestyle=HOLDOUT_STYLES[i % 3], marker="o", markersize=2.5,
                       label=f"{h} (full)") for i, h in enumerate(hold)]
    if gap:
        handles.append(Line2D([], [], color=COLORS["gap"], marker="o", markersize=2.5, label="Gap"))
    handles.append(Patch(color="#999999", alpha=0.35, label="95% CI"))
    fig.legend(handles=handles, loc="outside upper center", ncols=len(handles))
    data["collapsed"] = collapsed
    data["footnote"] = collapse_footnote(collapsed, threshold)
    if gap and len(steps) > 1:
        add_footnote(fig, FOOTNOTE, data["footnote"])
    return fig, data


def collapse_footnote(collapsed: dict[int, list[str]], threshold: float) -> str | None:
    """`† Collapse (crop or holdout more than 10 points below step 0) — step 10: ...` or None."""
    if not collapsed:
        return None
    steps = "; ".join(f"step {s}: {', '.join(r)}" for s, r in collapsed.items())
    return (f"{DAGGER} Collapse (crop or holdout more than {threshold:g} points below step 0) — {steps}: "
            "a gap that narrows there is not a closed one.")


def _first_last(vals: list[float]) -> tuple[float | None, float | None]:
    ok = [v for v in vals if not np.isnan(v)]
    return (ok[0], ok[-1]) if ok else (None, None)


def _change(vals: list[float]) -> float | None:
    """Last minus first defined value (points), None when fewer than two."""
    ok = [v for v in vals if not np.isnan(v)]
    return ok[-1] - ok[0] if len(ok) > 1 else None


def _pts(v: float | None) -> str:
    return "n/a" if v is None else signed(v)


def draw_curve(curve_jsonl: Path, out_stem: Path) -> list[Path]:
    """Redraw the gap-reduction curve of a training run (`curve_jsonl`: its `<run>/curve.jsonl`): writes
    out_stem.png and out_stem.pdf."""
    run = TrainRun(Path(curve_jsonl).parent)
    curve = scored_curve(run)
    with paper_style():
        fig, _ = plot_curve(curve, collapse_threshold(run.read_config()), run)
        paths = save(fig, Path(out_stem))
    log.debug("gap curve: %s", ", ".join(map(str, paths)))
    return paths
