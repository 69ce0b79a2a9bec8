"""Figures that explain the gap (`vopd_bench.analysis`, `vopd_bench.compare`): the gap decomposition per task,
accuracy and gap against target size across models, and item transitions between two runs. Each `plot_*`
returns the figure and the values it drew (for checks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from vopd_bench.analysis import SizeBin, Step
from vopd_bench.compare import Transition
from vopd_bench.report.figures import COLORS, COLUMN_IN, PAGE_IN, new_figure, paper_style, save, signed

VIEW_LABELS = {"full": "Full", "red_box": "Red box", "blur_surround": "Blurred\nsurround",
               "crop_native": "Crop\n(no zoom)", "crop": "Crop\n(zoomed)"}
MODEL_COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9"]


def plot_decomposition(steps: list[Step], title: str | None = None) -> tuple[Figure, dict[str, Any]]:
    """Accuracy bars full → … → crop with Wilson whiskers; each step's paired change written between bars."""
    with paper_style():
        fig = new_figure(COLUMN_IN, 2.3)
        ax = fig.add_subplot()
        x = np.arange(len(steps))
        acc = [s.accuracy for s in steps]
        colors = [COLORS["full"]] + ["#7F9FBF"] * (len(steps) - 2) + [COLORS["crop"]] if len(steps) > 1 else [COLORS["full"]]
        ax.bar(x, acc, 0.7, color=colors, zorder=2)
        err = np.array([[s.accuracy - s.ci_low for s in steps], [s.ci_high - s.accuracy for s in steps]])
        ax.errorbar(x, acc, yerr=np.maximum(err, 0), fmt="none", ecolor=COLORS["ci"], elinewidth=0.8, capsize=2, zorder=3)
        deltas = []
        for i, s in enumerate(steps[1:], 1):
            text = signed(s.delta) if s.delta is not None else ""
            if s.delta_ci:
                text += f"\n[{signed(s.delta_ci[0], '+.0f')}, {signed(s.delta_ci[1], '+.0f')}]"
            deltas.append(text)
            ax.annotate(text, (i - 0.5, max(acc[i - 1], acc[i]) + 6), ha="center", va="bottom", fontsize=6)
        ax.set_xticks(x, [VIEW_LABELS.get(s.view, s.view) for s in steps], fontsize=7)
        ax.set_ylim(0, 125)
        ax.set_yticks(range(0, 101, 20))
        ax.set_ylabel("Accuracy (%)")
        if title:
            ax.set_title(title)
    return fig, {"views": [s.view for s in steps], "accuracy": acc, "delta_text": deltas}


def plot_size(models: list[tuple[str, list[SizeBin]]], title: str | None = None) -> tuple[Figure, dict[str, Any]]:
    """Full and crop accuracy (top) and the gap with its CI (bottom) per size bin (x: median-free bin centre on a
    log scale of the target's share of the image), one colour per model."""
    drawn: dict[str, Any] = {}
    with paper_style():
        fig = new_figure(COLUMN_IN, 3.2)
        top, bottom = fig.subplots(2, 1, sharex=True)
        for j, (label, bins) in enumerate(models):
            if not bins:
                continue
            c = MODEL_COLORS[j % len(MODEL_COLORS)]
            xs = [100 * np.sqrt(max(b.lo, 1e-6) * max(b.hi, 1e-6)) for b in bins]
            top.plot(xs, [b.accuracy["full"][0] for b in bins], "-o", color=c, ms=3, label=f"{label} full")
            top.plot(xs, [b.accuracy["crop"][0] for b in bins], "--s", color=c, ms=3, label=f"{label} crop")
            gaps = [b.gap for b in bins]
            lo = [b.gap - b.gap_ci[0] if b.gap_ci else 0 for b in bins]
            hi = [b.gap_ci[1] - b.gap if b.gap_ci else 0 for b in bins]
            bottom.errorbar(xs, gaps, yerr=np.maximum(np.vstack([lo, hi]), 0), fmt="-o", color=c, ms=3,
                            capsize=2, label=label)
            drawn[label] = {"x": xs, "gap": gaps, "n": [b.n for b in bins]}
        top.set_ylabel("Accuracy (%)")
        top.set_ylim(0, 105)
        fig.legend(*top.get_legend_handles_labels(), loc="outside upper center", ncols=2, fontsize=6)
        bottom.axhline(0, color=COLORS["zero"], lw=0.6)
        bottom.set_ylabel("Gap (crop − full, pts)")
        bottom.set_xscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        bottom.xaxis.set_major_formatter(plain)
        bottom.xaxis.set_minor_formatter(plain)
        bottom.tick_params(axis="x", which="minor", labelsize=6)
        bottom.set_xlabel("Target size (% of image area)")
        if title:
            top.set_title(title)
    return fig, drawn


def plot_transitions(tables: list[Transition], labels: tuple[str, str]) -> tuple[Figure, dict[str, Any]]:
    """Stacked bars per task/view: both right, fixed, broken, both wrong (share of items), with McNemar p."""
    parts = [("both_right", "both ✓", "#BBBBBB"), ("fixed", "fixed", "#009E73"), ("broken", "broken", "#D55E00"),
             ("both_wrong", "both ✗", "#666666")]
    names = [f"{t.task}\n{t.view}" for t in tables]
    with paper_style():
        fig = new_figure(min(PAGE_IN, 1.8 + 0.8 * len(tables)), 2.4)
        ax = fig.add_subplot()
        bottom = np.zeros(len(tables))
        shares: dict[str, list[float]] = {}
        for key, name, color in parts:
            v = np.array([100 * getattr(t, key) / t.n if t.n else 0.0 for t in tables])
            ax.bar(np.arange(len(tables)), v, 0.6, bottom=bottom, color=color, label=name, zorder=2)
            bottom += v
            shares[key] = v.tolist()
        for i, t in enumerate(tables):
            ax.annotate(f"p={t.p_value:.2g}", (i, 101), ha="center", va="bottom", fontsize=6)
        ax.set_xticks(np.arange(len(tables)), names, fontsize=7)
        ax.set_ylim(0, 112)
        ax.set_ylabel("Items (%)")
        ax.set_title(f"{labels[0]} →\n{labels[1]}", fontsize=7)
        fig.legend(loc="outside right center", fontsize=6)
    return fig, shares


def save_figure(fig: Figure, stem: Path) -> list[Path]:
    with paper_style():
        return save(fig, stem)
