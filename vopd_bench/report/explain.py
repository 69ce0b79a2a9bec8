"""The report's sections that explain the gap: its decomposition by view, the gap against target size, which
items moved between a base and a trained model, and the qualitative panel (`vopd_bench.analysis`,
`vopd_bench.compare`, `report.qualitative`). Each returns markdown sections (empty when a run lacks what a
section needs: e.g. no decomposition views, no boxes)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from vopd_bench.analysis import SizeBin, decomposition, size_bins
from vopd_bench.compare import compare_runs, run_views
from vopd_bench.errors import UserError
from vopd_bench.items import ImageError
from vopd_bench.report.analysis_figures import VIEW_LABELS, plot_decomposition, plot_size, plot_transitions
from vopd_bench.report.figures import save
from vopd_bench.report.load import ModelResult
from vopd_bench.report.markdown import Section
from vopd_bench.report.qualitative import draw_examples
from vopd_bench.report.tables import slug
from vopd_bench.views import DECOMPOSITION

log = logging.getLogger(__name__)
Namer = Callable[[str], str]


def _views(m: ModelResult, task: str) -> list[str]:
    return run_views(m.path).get(task, []) if m.config is not None else []


def _tasks(m: ModelResult) -> list[str]:
    return list(run_views(m.path)) if m.config is not None else []


def _has_records(m: ModelResult, task: str, view: str) -> bool:
    return (m.path / "samples" / task / f"{view}.jsonl").is_file()


def decomposition_sections(models: list[ModelResult], figs: Path, name: Namer) -> list[Section]:
    """Per model and task with a view between full and crop: bars full → … → crop and the paired steps."""
    out = []
    for m in models:
        for task in _tasks(m):
            views = [v for v in _views(m, task) if _has_records(m, task, v)]
            if not set(views) & set(DECOMPOSITION[1:-1]) or "full" not in views:
                continue
            steps, n = decomposition(m.path, task, views)
            if len(steps) < 3:
                continue
            stem = name(f"decomposition_{slug(m.label)}_{slug(task)}")
            fig, _ = plot_decomposition(steps, f"{m.label} · {task}")
            save(fig, figs / stem)
            rows = ["| view | accuracy (%) [95% CI] | step (points) [95% CI] | McNemar p | what the step removes |",
                    "|---|---|---|---|---|"]
            for s in steps:
                step = "" if s.delta is None else f"{s.delta:+.1f} [{s.delta_ci[0]:+.1f}, {s.delta_ci[1]:+.1f}]"
                p = "" if s.p_value is None else f"{s.p_value:.2g}"
                rows.append(f"| {VIEW_LABELS.get(s.view, s.view).replace(chr(10), ' ')} | {s.accuracy:.1f} "
                            f"[{s.ci_low:.1f}, {s.ci_high:.1f}] | {step} | {p} | {s.what} |")
            out.append(Section(
                f"Gap decomposition: {m.label} · {task}", f"figures/{stem}.png", f"figures/{stem}.pdf",
                f"Accuracy as the full image turns into the zoomed crop one difference at a time, on the {n} items "
                "every view answered: the region outlined (attention cue), the surroundings blurred (context "
                "unreadable), the crop at native resolution (context removed), then zoomed. Each step: the paired "
                "difference from the view before it with its 95% bootstrap CI and exact McNemar p.",
                lines=["\n".join(rows)]))
    return out


def size_sections(models: list[ModelResult], figs: Path, name: Namer, n_bins: int = 4) -> list[Section]:
    """Per task with boxes: full/crop accuracy and the gap per quantile bin of target size, across models."""
    tasks: dict[str, list[tuple[str, list[SizeBin]]]] = {}
    for m in models:
        for task in _tasks(m):
            if not {"full", "crop"} <= set(_views(m, task)):
                continue
            try:
                bins = size_bins(m.path, task, n_bins)
            except (UserError, ImageError, OSError) as e:  # the data moved since the run: no sizes to read
                log.warning("size bins of %s/%s skipped: %s", m.label, task, e)
                continue
            if len(bins) > 1:
                tasks.setdefault(task, []).append((m.label, bins))
    out = []
    for task, per_model in tasks.items():
        stem = name(f"size_{slug(task)}")
        fig, _ = plot_size(per_model, task)
        save(fig, figs / stem)
        rows = ["| model | target size (% of image) | n | full (%) | crop (%) | gap (points) [95% CI] |",
                "|---|---|---|---|---|---|"]
        for label, bins in per_model:
            for b in bins:
                ci = f"[{b.gap_ci[0]:+.1f}, {b.gap_ci[1]:+.1f}]" if b.gap_ci else ""
                rows.append(f"| {label} | {100 * b.lo:.2g}–{100 * b.hi:.2g} | {b.n} | {b.accuracy['full'][0]:.1f} | "
                            f"{b.accuracy['crop'][0]:.1f} | {b.gap:+.1f} {ci} |")
        out.append(Section(
            f"Gap by target size: {task}", f"figures/{stem}.png", f"figures/{stem}.pdf",
            f"Items in {n_bins} quantile bins of their target's share of the image (union box area / image area); per "
            "bin, full and crop accuracy and the paired gap with its 95% bootstrap CI.", lines=["\n".join(rows)]))
    return out


def transition_sections(pairs: list[tuple[ModelResult, ModelResult]], figs: Path, name: Namer) -> list[Section]:
    """Per before/after pair of eval runs: fixed / broken / both right / both wrong per task and view."""
    out = []
    for before, after in pairs:
        if before.config is None or after.config is None or before.path == after.path:
            continue
        try:
            tables = [t for t in compare_runs(before.path, after.path) if t.n]
        except UserError as e:
            log.warning("transitions %s → %s skipped: %s", before.label, after.label, e)
            continue
        if not tables:
            continue
        stem = name(f"transitions_{slug(before.label)}_{slug(after.label)}")
        fig, _ = plot_transitions(tables, (before.label, after.label))
        save(fig, figs / stem)
        rows = ["| task | view | n | both right | fixed | broken | both wrong | McNemar p |", "|---|---|---|---|---|---|---|---|"]
        rows += [f"| {t.task} | {t.view} | {t.n} | {t.both_right} | {t.fixed} | {t.broken} | {t.both_wrong} | "
                 f"{t.p_value:.2g} |" for t in tables]
        out.append(Section(
            f"Which items moved: {before.label} → {after.label}", f"figures/{stem}.png", f"figures/{stem}.pdf",
            "Paired outcomes per task and view (share of items): fixed = wrong before and right after, broken = "
            "the reverse; exact McNemar p of fixed vs broken. `vopd-bench compare` lists the item ids.",
            lines=["\n".join(rows)]))
    return out


def example_sections(runs: list[list[tuple[str, Path]]], figs: Path, name: Namer, n: int = 1,
                     ids: list[str] | None = None) -> list[Section]:
    """The qualitative panel per group of runs (a base and its trained model, or one model) and boxed task."""
    out = []
    for group in runs:
        for task, views in run_views(group[0][1]).items():
            if "crop" not in views or "full" not in views:
                continue
            stem = name(f"examples_{slug(group[-1][0])}_{slug(task)}")
            try:
                files, shown = draw_examples(group, task, figs / stem, n=n, ids=ids)
            except (UserError, ImageError, OSError) as e:
                log.warning("examples of %s skipped: %s", task, e)
                continue
            if not files:
                continue
            labels = " and ".join(label for label, _ in group)
            out.append(Section(
                f"Examples: {task}", f"figures/{stem}.png", f"figures/{stem}.pdf",
                f"Items {', '.join(s['id'] for s in shown)}: the full image with the decisive region outlined, the "
                f"zoomed crop, the question, and the answers of {labels} per view (✓ right, ✗ wrong). Picked "
                + ("as given (--example-ids)." if ids else
                   ("automatically: fixed on the full view by the later model first, then full wrong and crop right "
                    "in the first." if len(group) > 1 else "automatically: full wrong and crop right."))))
    return out
