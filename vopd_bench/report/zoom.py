"""The report's "zoom baselines" section: one pass on the full image, "look, then zoom" (`self_zoom`: two passes,
the model's own box) and the oracle crop (the gold box), side by side on the same items — accuracy, paired gap
against full, grounding IoU, generated tokens and seconds per item — plus, for a trained model, its own full
view (one pass); and the figure of accuracy against seconds per item."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from vopd_bench.compare import run_views
from vopd_bench.errors import UserError
from vopd_bench.report.figures import COLUMN_IN, new_figure, paper_style, save
from vopd_bench.report.load import ModelResult
from vopd_bench.report.markdown import Section
from vopd_bench.report.tables import slug
from vopd_bench.results import gap_stats, grounding_stats
from vopd_bench.rundir import RunDir
from vopd_bench.schema import SampleRecord
from vopd_bench.stats import wilson

log = logging.getLogger(__name__)
ZOOM_VIEWS = (("full", "full (one pass)"), ("self_zoom", "self_zoom (two passes)"), ("crop", "crop (oracle box)"))
MARKERS = {"full": "o", "self_zoom": "s", "crop": "^"}


@dataclass
class Row:
    """One (model, view) of the table and one point of the figure."""

    model: str
    view: str
    n: int
    accuracy: float
    ci: tuple[float, float]
    gap: tuple[float, float, float] | None  # vs the same model's full view: points, CI low, CI high
    iou: float | None
    fallback: int | None
    tokens: float | None
    seconds: float | None


def _row(label: str, view: str, recs: list[SampleRecord], full: list[SampleRecord] | None, seed: int = 0) -> Row:
    ok = [r for r in recs if not r.error]
    acc = float(np.mean([bool(r.correct) for r in ok])) if ok else float("nan")
    lo, hi = wilson(sum(bool(r.correct) for r in ok), len(ok)) if ok else (float("nan"), float("nan"))
    gap = None
    if full is not None and view != "full":
        g = gap_stats(full, recs, seed=seed)
        if g.n_pairs:
            gap = (g.value, g.ci_low, g.ci_high)
    gs = grounding_stats(ok)
    toks = [r.n_tokens for r in ok if r.n_tokens is not None]
    lat = [r.latency for r in ok if r.latency is not None]
    return Row(label, view, len(ok), 100 * acc, (100 * lo, 100 * hi), gap,
               None if gs is None else gs["iou_mean"], None if gs is None else gs["fallback"],
               gs["tokens_mean"] if gs is not None else (float(np.mean(toks)) if toks else None),
               float(np.mean(lat)) if lat else None)


def zoom_rows(models: list[ModelResult], task: str) -> list[Row]:
    """Rows for `task`: every view of ZOOM_VIEWS each model scored, on the items all rows share."""
    found = [(m, RunDir(m.path)) for m in models if m.config is not None]
    found = [(m, run, [v for v, _ in ZOOM_VIEWS if v in run_views(m.path).get(task, []) and run.samples_path(task, v).is_file()])
             for m, run in found]
    if not any("self_zoom" in views for _, _, views in found):
        return []
    per: list[tuple[str, str, list[SampleRecord]]] = []
    for m, run, views in found:
        for view in views:
            try:
                per.append((m.label, view, list(run.samples(task, view).values())))
            except (UserError, TypeError, ValueError) as e:  # a hand-made or damaged sample file: no row
                log.warning("zoom baselines: %s/%s/%s skipped: %s", m.label, task, view, e)
    if not any(v == "self_zoom" for _, v, _ in per):
        return []
    ids = set.intersection(*({r.id for r in recs} for _, _, recs in per))
    rows = []
    for label, view, recs in per:
        recs = [r for r in recs if r.id in ids]
        full = next((rs for lb, v, rs in per if lb == label and v == "full"), None)
        rows.append(_row(label, view, recs, [r for r in full if r.id in ids] if full else None))
    return rows


def plot_zoom(rows: list[Row], title: str) -> tuple[Figure, dict[str, list[float]]]:
    """Accuracy (95% CI) against seconds per item (log axis): one marker per view, one colour per model."""
    from vopd_bench.report.analysis_figures import MODEL_COLORS

    with paper_style():
        fig = new_figure(COLUMN_IN, 2.4)
        ax = fig.add_subplot()
        models = list(dict.fromkeys(r.model for r in rows))
        drawn: dict[str, list[float]] = {"x": [], "y": []}
        for r in rows:
            if r.seconds is None or not r.seconds > 0:
                continue
            c = MODEL_COLORS[models.index(r.model) % len(MODEL_COLORS)]
            ax.errorbar([r.seconds], [r.accuracy], yerr=[[r.accuracy - r.ci[0]], [r.ci[1] - r.accuracy]], fmt=MARKERS[r.view],
                        color=c, ms=4, elinewidth=0.7, capsize=1.5, label=f"{r.model}: {r.view}")
            drawn["x"].append(r.seconds)
            drawn["y"].append(r.accuracy)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("seconds per item (log)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(title)
        ax.legend(fontsize=5, loc="best", frameon=False)
        return fig, drawn


def _fmt(x: float | None, spec: str) -> str:
    return "" if x is None else format(x, spec)


def zoom_sections(models: list[ModelResult], figs: Path, name: callable) -> list[Section]:  # type: ignore[valid-type]
    """One section per task where a model has the self_zoom view."""
    tasks = list(dict.fromkeys(t for m in models if m.config is not None for t in run_views(m.path)))
    out = []
    for task in tasks:
        rows = zoom_rows(models, task)
        if not rows:
            continue
        stem = name(f"zoom_{slug(task)}")
        fig, _ = plot_zoom(rows, task)
        save(fig, figs / stem)
        label = dict(ZOOM_VIEWS)
        lines = ["| model | view | n | accuracy (%) [95% CI] | vs full (points) [95% CI] | IoU | no box | "
                 "tokens / item | s / item |", "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            gap = "" if r.gap is None else f"{r.gap[0]:+.1f} [{r.gap[1]:+.1f}, {r.gap[2]:+.1f}]"
            lines.append(f"| {r.model} | {label[r.view]} | {r.n} | {r.accuracy:.1f} [{r.ci[0]:.1f}, {r.ci[1]:.1f}] | "
                         f"{gap} | {_fmt(r.iou, '.2f')} | {'' if r.fallback is None else r.fallback} | "
                         f"{_fmt(r.tokens, '.1f')} | {_fmt(r.seconds, '.3f')} |")
        out.append(Section(
            f"Zoom baselines: {task}", f"figures/{stem}.png", f"figures/{stem}.pdf",
            "One pass on the full image, \"look, then zoom\" with the same model (`self_zoom`: it names a box, the "
            "question is asked on the crop there; no usable box falls back to the full image) and the crop around "
            "the gold box (the oracle), on the same items. IoU: the named box against the gold box; tokens and "
            "seconds per item count both stages (seconds: this run's machine and batch size, comparable within "
            "the table only).", lines=["\n".join(lines)]))
    return out
