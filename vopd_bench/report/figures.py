"""Bar figures: the gap across models (Figure 3), before/after distillation (Figure 5) and the
per-category breakdown. Each `plot_*` returns the Figure and the values it plotted (for checks);
`save` writes PNG (200 dpi) and PDF (TrueType fonts) atomically."""

from __future__ import annotations

import logging
import math
import os
import tempfile
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.style
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from vopd_bench.report.closure import FOOTNOTE, closure_between, closure_text, pair_closures
from vopd_bench.report.load import ModelResult
from vopd_bench.report.tables import DAGGER, collapse_note, gap_points, gap_tasks
from vopd_bench.schema import Closure, TaskResult

STYLE = Path(__file__).resolve().parent.parent / "mplstyle" / "paper.mplstyle"
COLUMN_IN, PAGE_IN = 3.4, 7.0
DPI = 200  # PNG; the PDF is vector
# Okabe–Ito
COLORS = {"full": "#0072B2", "crop": "#E69F00", "holdout": "#009E73", "gap": "#CC79A7",
          "before": "#56B4E9", "after": "#D55E00", "ci": "#333333", "zero": "#888888", "self_zoom": "#555555"}
NAMES = {"full": "Full image", "crop": "Zoomed crop", "self_zoom": "Look, then zoom (2 passes)"}

_subset_log = logging.getLogger("fontTools.subset")
if _subset_log.level == logging.NOTSET:  # PDF font subsetting logs every glyph at INFO
    _subset_log.setLevel(logging.WARNING)


@contextmanager
def paper_style() -> Iterator[None]:
    """The paper style (loaded by path) for figure creation and saving."""
    with matplotlib.style.context(str(STYLE)):
        yield


def new_figure(width: float, height: float) -> Figure:
    """A pyplot-free figure (Agg canvas, no global state), constrained layout."""
    return Figure(figsize=(width, height), layout="constrained")


def save(fig: Figure, stem: Path) -> list[Path]:
    """Write stem.png and stem.pdf, each via a temp file + rename."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in ("png", "pdf"):
        dst = stem.with_name(f"{stem.name}.{ext}")
        fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=f".{ext}")
        os.close(fd)
        try:
            with matplotlib.rc_context({"pdf.fonttype": 42, "ps.fonttype": 42}):
                fig.savefig(tmp, format=ext, dpi=DPI, metadata={"CreationDate": None} if ext == "pdf" else None)
            os.replace(tmp, dst)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        out.append(dst)
    return out


@dataclass
class Series:
    """One bar per group: values with 95% CI bounds (same units)."""

    name: str
    color: str
    values: list[float | None]
    lo: list[float | None]
    hi: list[float | None]


def _f(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def wrap(label: str, width: int = 16) -> str:
    """Wrap each line of a tick label at `width` characters."""
    return "\n".join("\n".join(textwrap.wrap(line, width)) or line
                     for line in label.split("\n"))


def signed(v: float, fmt: str = "+.1f") -> str:
    """A signed number with a typographic minus (and no "-0")."""
    text = format(v, fmt)
    if text.lstrip("+-").strip("0.%") == "":
        text = "±" + text.lstrip("+-")
    return text.replace("-", "−")


def grouped_bars(ax: Any, groups: list[str], series: list[Series], clip: tuple[float, float] | None = None,
                 label_width: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Bars per group with CI whiskers; returns the top and bottom (incl. whiskers) of each group."""
    x = np.arange(len(groups), dtype=float)
    k = len(series)
    width = 0.8 / k
    tops = np.full(len(groups), np.nan)
    bots = np.full(len(groups), np.nan)
    for j, s in enumerate(series):
        pos = x - 0.4 + width * (j + 0.5)
        h = np.array([_f(v) for v in s.values])
        ax.bar(pos, h, width * 0.92, color=s.color, label=s.name, zorder=2)
        lo = np.array([_f(v) for v in s.lo])
        hi = np.array([_f(v) for v in s.hi])
        if clip is not None:
            lo, hi = np.clip(lo, *clip), np.clip(hi, *clip)
        ok = ~np.isnan(h) & ~np.isnan(lo) & ~np.isnan(hi)
        if ok.any():
            err = np.vstack([np.maximum(h[ok] - lo[ok], 0), np.maximum(hi[ok] - h[ok], 0)])
            ax.errorbar(pos[ok], h[ok], yerr=err, fmt="none", ecolor=COLORS["ci"], elinewidth=0.8,
                        capsize=2, capthick=0.8, zorder=3)
        top = np.where(np.isnan(hi), h, np.fmax(h, hi))
        bot = np.where(np.isnan(lo), h, np.fmin(h, lo))
        tops = np.fmax(tops, np.fmax(top, 0))
        bots = np.fmin(bots, np.fmin(bot, 0))
    ax.set_xticks(x, [wrap(g, label_width) for g in groups])
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.tick_params(axis="x", length=0)
    return tops, bots


def _note(ax: Any, x: float, y: float, text: str, below: bool = False, **kw: Any) -> Any:
    return ax.annotate(text, (x, y), xytext=(0, -2 if below else 2), textcoords="offset points",
                       ha="center", va="top" if below else "bottom", fontsize=8, **kw)


def _acc_series(blocks: list[TaskResult | None]) -> list[Series]:
    out = []
    for view in ("full", "crop"):
        st = [b.views.get(view) if b else None for b in blocks]
        out.append(Series(NAMES[view], COLORS[view],
                          [None if s is None or s.accuracy is None else 100 * s.accuracy for s in st],
                          [None if s is None or s.ci_low is None else 100 * s.ci_low for s in st],
                          [None if s is None or s.ci_high is None else 100 * s.ci_high for s in st]))
    return out


def fmt_gap(g: float | None) -> str:
    return "n/a" if g is None else signed(g)


def accuracy_panel(ax: Any, groups: list[str], blocks: list[TaskResult | None], title: str | None = None,
                   label_width: int = 16, flagged: list[bool] | None = None) -> dict[str, list[Any]]:
    """Full vs crop accuracy bars (%) per group, CI whiskers, the gap (points) written above each pair (with a
    dagger where `flagged`: a collapsed model)."""
    series = _acc_series(blocks)
    tops, _ = grouped_bars(ax, groups, series, clip=(0.0, 100.0), label_width=label_width)
    gaps = [gap_points(TaskResult(b.views, b.gap)) if b else None for b in blocks]
    texts = []
    for i, g in enumerate(gaps):
        t = fmt_gap(g) + (DAGGER if g is not None and flagged and flagged[i] else "")
        texts.append(t)
        if g is not None:
            _note(ax, i, tops[i] if not np.isnan(tops[i]) else 0.0, t, color="black")
    ax.set_ylim(0, 114)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("Accuracy (%)")
    if title:
        ax.set_title(title)
    return {"groups": groups, "full": series[0].values, "crop": series[1].values,
            "full_ci": list(zip(series[0].lo, series[0].hi, strict=True)),
            "crop_ci": list(zip(series[1].lo, series[1].hi, strict=True)),
            "gap": gaps, "gap_text": texts}


def add_footnote(fig: Figure, *parts: str | None) -> str | None:
    """Small notes under the figure, one paragraph each (constrained layout keeps room for them; the figure grows
    by their height); returns the text, None when every part is None."""
    chars = int(fig.get_figwidth() * 72 / 3.6)  # ~3.6 pt per character at 6.5 pt
    text = "\n".join(textwrap.fill(p.replace(f"{DAGGER} ", f"{DAGGER}\u00a0"), chars) for p in parts if p)
    if text:
        fig.set_figheight(fig.get_figheight() + 0.11 * (text.count("\n") + 1))
        fig.supxlabel(text, fontsize=6.5, x=0.01, ha="left", color="#444444")
    return text or None


def _legend(fig: Figure, extra: str | None = None) -> None:
    handles: list[Any] = [Patch(color=COLORS["full"], label=NAMES["full"]),
                          Patch(color=COLORS["crop"], label=NAMES["crop"])]
    if extra:
        handles.append(Line2D([], [], linestyle="none", label=extra))
    if fig.get_figwidth() > COLUMN_IN + 0.5:
        fig.legend(handles=handles, loc="outside upper center", ncols=len(handles), handlelength=1.0)
    else:  # two columns, filled column-wise: the note goes on a second row
        fig.legend(handles=[handles[i] for i in (0, 2, 1) if i < len(handles)], loc="outside upper center", ncols=2,
                   handlelength=1.0)


def plot_gap_models(models: list[ModelResult]) -> tuple[Figure, dict[str, dict[str, list[Any]]]]:
    """Figure 3: per model, full vs crop accuracy with 95% CIs and the gap; a panel per task and
    one for the average over tasks (when there are several)."""
    tasks = gap_tasks(models)
    panels: list[tuple[str, list[tuple[str, TaskResult]]]] = []
    for t in tasks:
        panels.append((t, [(m.label, m.tasks[t]) for m in models if t in m.tasks and "crop" in m.tasks[t].views]))
    if len(tasks) > 1:  # only models scored on every task: otherwise the means are not comparable
        avg = [(m.label, a) for m in models if (a := m.average(tasks)) is not None]
        if avg:
            panels.append(("Average", avg))
    n, k = len(panels), max((len(p[1]) for p in panels), default=1)
    ncols = min(n, 3 if k <= 3 else 2 if k <= 5 else 1) if n else 1
    nrows = math.ceil(n / ncols) if n else 1
    width = COLUMN_IN if ncols == 1 and k <= 3 else PAGE_IN
    fig = new_figure(width, 0.45 + 2.1 * nrows)
    data: dict[str, dict[str, list[Any]]] = {}
    if not panels:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no task with both a full and a crop view", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig, data
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    flagged = {m.label for m in models if m.collapse}
    for ax, (title, rows) in zip(axes.flat, panels, strict=False):
        chars = max(8, int(width / ncols / max(len(rows), 1) * 72 / 5.2))  # ~5.2 pt per character at 8 pt
        data[title] = accuracy_panel(ax, [r[0] for r in rows], [r[1] for r in rows], title, label_width=chars,
                                     flagged=[r[0] in flagged for r in rows])
    for ax in axes.flat[n:]:
        ax.set_axis_off()
    for ax in axes[:, 1:].flat:
        ax.set_ylabel("")
    _legend(fig, "+x.x: gap (crop − full, pts)")
    data["footnote"] = add_footnote(fig, collapse_note(models, short=True))  # type: ignore[assignment]
    return fig, data


def plot_before_after(before: ModelResult, after: ModelResult, before_name: str | None = None,
                      after_name: str | None = None, closures: dict[str, Closure | None] | None = None,
                      ) -> tuple[Figure, dict[str, list[Any]]]:
    """Figure 5: the gap (points, 95% CI) of a base model and of its distilled checkpoint, per task and
    on average; tick labels give the relative gap change (gap1 − gap0) / gap0 and the share of the base gap
    closed by the full view (`closure`, with its CI; `closures` as `load_inputs` computed them, else computed
    here). A collapsed `after` carries a dagger and a footnote."""
    both = [before, after]
    tasks = [t for t in gap_tasks(both) if all(t in m.tasks and m.tasks[t].gap is not None for m in both)]
    groups = list(tasks)
    blocks: list[list[TaskResult | None]] = [[m.tasks[t] for t in tasks] for m in both]
    by_task = pair_closures(before, after) if closures is None else closures
    shown: list[Closure | None] = [by_task.get(t) for t in tasks]
    if len(tasks) > 1:
        groups.append("Average")
        for i, m in enumerate(both):
            blocks[i].append(m.average(tasks))
        shown.append(closure_between(blocks[0][-1], blocks[1][-1]))  # from the mean accuracies: no CI
    series = []
    names = (before_name or before.label, after_name or after.label)
    for bl, color, name in zip(blocks, (COLORS["before"], COLORS["after"]), names, strict=True):
        series.append(Series(name, color, [gap_points(b) for b in bl],
                             [b.gap.ci_low if b and b.gap else None for b in bl],
                             [b.gap.ci_high if b and b.gap else None for b in bl]))
    reductions = [None if c is None else c.gap_reduction for c in shown]
    ticks = [f"{g}\n(gap {'n/a' if r is None else signed(-r, '+.0%')})\nclosed " + closure_text(c).replace(" [", "\n[")
             for g, r, c in zip(groups, reductions, shown, strict=True)]
    width = COLUMN_IN if len(groups) <= 2 else PAGE_IN
    fig = new_figure(width, 2.5)
    ax = fig.add_subplot()
    if not groups:
        ax.text(0.5, 0.5, "no task with a gap in both runs", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig, {"groups": [], "before": [], "after": [], "reduction": [], "closure": [], "footnote": None}
    tops, bots = grouped_bars(ax, ticks, series, label_width=28 if width == PAGE_IN else 22)
    x = np.arange(len(groups), dtype=float)
    marks = ("", DAGGER if after.collapse else "")
    for j, s in enumerate(series):
        pos = x - 0.4 + 0.4 * (j + 0.5)
        for i, v in enumerate(s.values):
            if v is None:
                continue
            hi, lo = _f(s.hi[i]), _f(s.lo[i])
            if v >= 0:
                _note(ax, pos[i], v if np.isnan(hi) else max(v, hi), signed(v) + marks[j])
            else:
                _note(ax, pos[i], v if np.isnan(lo) else min(v, lo), signed(v) + marks[j], below=True)
    top = float(np.nanmax(tops)) if not np.all(np.isnan(tops)) else 1.0
    bot = float(np.nanmin(bots)) if not np.all(np.isnan(bots)) else 0.0
    span = max(top - bot, 1.0)
    ax.set_ylim(bot - (0.14 * span if bot < 0 else 0), top + 0.14 * span)
    ax.axhline(0, color=COLORS["zero"], linewidth=0.6, zorder=1)
    ax.set_ylabel("Gap, crop − full (pts)")
    fig.legend(handles=[Patch(color=s.color, label=s.name) for s in series], loc="outside upper center",
               ncols=2 if sum(len(n) for n in names) * 5.2 / 72 + 0.8 < width else 1, handlelength=1.0)
    note = add_footnote(fig, FOOTNOTE, collapse_note([after], short=True))
    return fig, {"groups": groups, "before": series[0].values, "after": series[1].values,
                 "before_ci": list(zip(series[0].lo, series[0].hi, strict=True)),
                 "after_ci": list(zip(series[1].lo, series[1].hi, strict=True)), "reduction": reductions,
                 "closure": shown, "ticks": ticks, "footnote": note}


def plot_categories(models: list[ModelResult], task: str) -> tuple[Figure, dict[str, dict[str, list[Any]]]]:
    """Per-category full vs crop accuracy (95% CIs) and gap for one task; a panel per model."""
    shown = [m for m in models if task in m.tasks and m.tasks[task].categories]
    cats: list[str] = []
    for m in shown:
        cats += [c for c in m.tasks[task].categories or {} if c not in cats]
    width = COLUMN_IN if len(cats) <= 4 else PAGE_IN
    fig = new_figure(width, 0.45 + 1.9 * max(len(shown), 1))
    axes = fig.subplots(max(len(shown), 1), 1, squeeze=False, sharey=True)[:, 0]
    chars = max(8, int(width / max(len(cats), 1) * 72 / 5.2))
    data = {}
    for ax, m in zip(axes, shown, strict=False):
        blocks: list[TaskResult | None] = [(m.tasks[task].categories or {}).get(c) for c in cats]
        data[m.label] = accuracy_panel(ax, cats, blocks, f"{task} — {m.label}", label_width=chars,
                                       flagged=[bool(m.collapse)] * len(cats))
    _legend(fig, "+x.x: gap (pts)")
    add_footnote(fig, collapse_note([m for m in shown if m.tasks[task].gap], short=True))
    return fig, data
