"""The gap-reduction curve of a training run: full, crop and holdout accuracy and the gap versus
training step, with 95% CI bands and the relative gap reduction (gap0 − gapN) / gap0.

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

from vopd_bench.report.figures import (
    COLORS,
    NAMES,
    PAGE_IN,
    new_figure,
    paper_style,
    relative_reduction,
    save,
    signed,
)
from vopd_bench.report.load import CurvePoint, is_holdout, read_curve
from vopd_bench.report.tables import gap_points

log = logging.getLogger(__name__)

HOLDOUT_STYLES = ["-.", ":", (0, (5, 1, 1, 1))]


def curve_tasks(curve: list[CurvePoint]) -> tuple[list[str], list[str]]:
    """(gap tasks, holdout tasks) seen in the curve, in order of first appearance."""
    gap: list[str] = []
    hold: list[str] = []
    for p in curve:
        for name, b in p.tasks.items():
            if name in gap or name in hold:
                continue
            if is_holdout(name, b):
                hold.append(name)
            elif {"full", "crop"} <= set(b.views):
                gap.append(name)
    return gap, hold


CROP_DROP_PTS = 3.0  # a gap that shrinks while crop accuracy falls more than this is flagged, not celebrated


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


def plot_curve(curve: list[CurvePoint]) -> tuple[Figure, dict[str, Any]]:
    """One row per gap task: [accuracy vs step (full, crop, holdout), gap vs step]."""
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
        ax.axhline(0, color=COLORS["zero"], linewidth=0.6, zorder=1)
        g0, gn = _first_last(gt["gap"])
        crop_change = _change(crop["acc"])
        if len(steps) > 1:
            red = relative_reduction(g0, gn)
            note = f"gap {_pts(g0)} → {_pts(gn)} pts\nreduction {'n/a' if red is None else format(red, '.0%')}"
            note += f"\nfull {_pts(_change(full['acc']))}, crop {_pts(crop_change)} pts"
            if crop_change is not None and crop_change < -CROP_DROP_PTS:
                note += "\ncrop fell: not a closed gap"
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
                               "reduction": red, "crop_change": crop_change,
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
    return fig, data


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
    """Redraw the gap-reduction curve of a training run: writes out_stem.png and out_stem.pdf."""
    curve = read_curve(Path(curve_jsonl))
    with paper_style():
        fig, _ = plot_curve(curve)
        paths = save(fig, Path(out_stem))
    log.debug("gap curve: %s", ", ".join(map(str, paths)))
    return paths
