"""`build_report`: read every input first, render into a temp folder, then move the files into place
(each by an atomic rename), so bad input or a crash never leaves a half-written report."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from vopd_bench.errors import UserError
from vopd_bench.report import explain, markdown, zoom
from vopd_bench.report.closure import DEFINITION, pair_closures
from vopd_bench.report.curve import plot_curve
from vopd_bench.report.figures import paper_style, plot_before_after, plot_categories, plot_gap_models, save
from vopd_bench.report.load import (
    ModelResult,
    TrainingRun,
    checkpoint_threshold,
    collapse_reasons,
    dedupe_labels,
    load_run,
)
from vopd_bench.report.tables import (
    gap_tasks,
    slug,
    table_categories,
    table_crop_gap,
    table_full,
    table_protocols,
    task_order,
)
from vopd_bench.schema import Closure

log = logging.getLogger(__name__)


@dataclass
class Pair:
    """A before/after comparison: `after` as this pair shows it (its collapse verdict against this `before`),
    and the closure per task, computed once (`load_inputs`). Unpacks as `before, after`."""

    before: ModelResult
    after: ModelResult
    closure: dict[str, Closure | None] = field(default_factory=dict)

    def __iter__(self) -> Iterator[ModelResult]:
        return iter((self.before, self.after))


@dataclass
class Inputs:
    """Everything the report shows, read and validated."""

    models: list[ModelResult] = field(default_factory=list)  # rows of the tables / bar groups
    trainings: list[TrainingRun] = field(default_factory=list)
    pairs: list[Pair] = field(default_factory=list)
    described: list[str] = field(default_factory=list)


def load_inputs(run_dirs: list[Path], labels: dict[Path, str] | None = None,
                pairs: list[tuple[Path, Path]] | None = None) -> Inputs:
    """Read run dirs (eval or training) and --before/--after pairs; each dir is read once."""
    labels = {p.resolve(): v for p, v in (labels or {}).items()}
    pairs = pairs or []
    order: list[Path] = []
    for p in [*run_dirs, *(x for pr in pairs for x in pr)]:
        if p.resolve() not in [q.resolve() for q in order]:
            order.append(p)
    inp = Inputs()
    loaded: dict[Path, ModelResult | TrainingRun] = {}
    for p in order:
        run = load_run(p, labels.get(p.resolve()))
        loaded[p.resolve()] = run
        if isinstance(run, TrainingRun):
            inp.trainings.append(run)
            inp.models += [run.before] + ([run.after] if run.after else [])
            if run.after:
                inp.pairs.append(Pair(run.before, run.after))
        else:
            inp.models.append(run)
    for b, a in pairs:
        rb, ra = loaded[b.resolve()], loaded[a.resolve()]
        if isinstance(rb, TrainingRun) or isinstance(ra, TrainingRun):
            raise UserError(f"--before/--after take eval run dirs; {b if isinstance(rb, TrainingRun) else a} is a "
                            "training dir (its before/after is drawn from curve.jsonl anyway)")
        threshold = checkpoint_threshold(ra.config)  # a checkpoint: its run's collapse_warn_points
        shown = replace(ra, collapse=collapse_reasons(rb.tasks, ra.tasks, threshold), collapse_threshold=threshold)
        inp.pairs.append(Pair(rb, shown))
        if shown.collapse and not ra.collapse:  # the tables' row: flagged when any pair flags it
            ra.collapse, ra.collapse_threshold = shown.collapse, threshold
    if not inp.models:
        raise UserError("no run directory given")
    _merge_repeated_base(inp)
    dedupe_labels(inp.models)
    for pair in inp.pairs:
        pair.after.label = next((m.label for m in inp.models if m.tasks is pair.after.tasks), pair.after.label)
        pair.closure = pair_closures(pair.before, pair.after)
    for p in order:
        run = loaded[p.resolve()]
        kind = "training run " if isinstance(run, TrainingRun) else ""
        inp.described.append(f"`{run.label}` — {kind}`{p}`")
    return inp


def _same_scores(a: ModelResult, b: ModelResult) -> bool:
    """Whether every task/view of `a` is in `b` with the same n and accuracy (one model scored twice)."""
    for name, task in a.tasks.items():
        other = b.tasks.get(name)
        if other is None:
            return False
        for view, st in task.views.items():
            ob = other.views.get(view)
            if ob is None or (ob.n, ob.accuracy) != (st.n, st.accuracy):
                return False
    return bool(a.tasks)


def _merge_repeated_base(inp: Inputs) -> None:
    """A training run's step 0 that repeats an eval run given beside it (the base model, same items, same
    numbers) is one row, not two: the eval run stands for it, in the tables and as the "before"."""
    from_training = {id(m) for t in inp.trainings for m in (t.before, t.after) if m is not None}
    for tr in inp.trainings:
        twin = next((m for m in inp.models if id(m) not in from_training and _same_scores(tr.before, m)), None)
        if twin is None:
            continue
        inp.models = [m for m in inp.models if m is not tr.before]
        for pair in inp.pairs:
            if pair.before is tr.before:
                pair.before = twin


def build_report(run_dirs: list[Path], out: Path, labels: dict[Path, str] | None = None,
                 pairs: list[tuple[Path, Path]] | None = None, examples: int = 1,
                 example_ids: list[str] | None = None) -> Path:
    """Write figures/, tables/ and report.md under `out`; returns the path of report.md. `examples`: items per
    qualitative panel (0: none), or the `example_ids` given."""
    inp = load_inputs(run_dirs, labels, pairs)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".report-"))
    try:
        text = _render(inp, tmp, examples, example_ids)
        (tmp / "report.md").write_text(text, encoding="utf-8")
        for f in sorted(tmp.rglob("*"), key=lambda p: p.name == "report.md"):
            if f.is_file():
                dst = out / f.relative_to(tmp)
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(f, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("report written to %s", out / "report.md")
    return out / "report.md"


class _Names:
    """Unique file stems."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def __call__(self, stem: str) -> str:
        s, k = stem, 2
        while s in self.used:
            s, k = f"{stem}_{k}", k + 1
        self.used.add(s)
        return s


def _render(inp: Inputs, root: Path, examples: int = 1, example_ids: list[str] | None = None) -> str:
    figs, tabs = root / "figures", root / "tables"
    name = _Names()
    sections: list[markdown.Section] = []
    models = inp.models
    with paper_style():
        stem = name("gap_models")
        fig, _ = plot_gap_models(models)
        save(fig, figs / stem)
        avg = " The Average panel is the unweighted mean over tasks (CI: normal approximation)." \
            if len(gap_tasks(models)) > 1 else ""
        sections.append(markdown.Section(
            "Regional-to-global gap across models", f"figures/{stem}.png", f"figures/{stem}.pdf",
            "Accuracy on the full image and on a zoomed crop of the decisive region, with 95% CIs; the number "
            "above each pair is the paired gap (crop − full, points)." + avg))

        t1, t2 = table_full(models), table_crop_gap(models)
        for t in (t1, t2):
            t.write(tabs)
        sections.append(markdown.Section("Tables", tables=[(t1, f"tables/{t1.label}"), (t2, f"tables/{t2.label}")]))
        tp = table_protocols(models)
        if tp is not None:
            tp.write(tabs)
            sections.append(markdown.Section("Scoring protocols", tables=[(tp, f"tables/{tp.label}")]))

        for pair in inp.pairs:
            b, a = pair
            stem = name(f"before_after_{slug(b.label)}")
            fig, _ = plot_before_after(b, a, closures=pair.closure)
            save(fig, figs / stem)
            sections.append(markdown.Section(
                f"Before / after: {b.label} → {a.label}", f"figures/{stem}.png", f"figures/{stem}.pdf",
                "Gap (crop − full, points, 95% CI) before and after distillation; below each task, the relative "
                f"change of the gap and the gap closed, where {DEFINITION}."
                + (" A dagger marks a collapsed model (footnote)." if a.collapse else ""),
                lines=[markdown.pair_line(b, a, pair.closure)]))

        for run in inp.trainings:
            stem = name(f"curve_{slug(run.label)}")
            fig, data = plot_curve(run.curve, run.collapse_threshold, run.dir)
            save(fig, figs / stem)
            sections.append(markdown.Section(
                f"Gap-reduction curve: {run.label}", f"figures/{stem}.png", f"figures/{stem}.pdf",
                "Full, crop and holdout accuracy and the gap versus training step (bands: 95% CIs; where the run "
                "scored `self_zoom`, its two-pass accuracy dashed, the base model's as a dotted line); relative "
                f"gap reduction = (gap₀ − gap_N) / gap₀, beside the gap closed, where {DEFINITION}. A dagger marks a "
                f"step whose crop or holdout accuracy fell more than {run.collapse_threshold:g} points below step 0.",
                lines=[markdown.curve_line(run, data)]))

        for task in task_order(models):
            if not any(task in m.tasks and m.tasks[task].categories for m in models):
                continue
            stem = name(f"categories_{slug(task)}")
            fig, _ = plot_categories(models, task)
            save(fig, figs / stem)
            tc = table_categories(models, task)
            tc.label = stem
            tc.write(tabs)
            sections.append(markdown.Section(
                f"Per-category breakdown: {task}", f"figures/{stem}.png", f"figures/{stem}.pdf",
                "Accuracy per category on the full image and the crop (95% CIs); above each pair, the gap in points.",
                tables=[(tc, f"tables/{stem}")]))

        # why the gap: decomposition by view, size bins, moved items, examples
        befores_afters = [(p.before, p.after) for p in inp.pairs]
        befores_afters += [(r.before, r.after) for r in inp.trainings
                           if r.after is not None and all(a.path != r.after.path for _, a in befores_afters)]
        evaluated = [m for m in models if m.config is not None]
        sections += explain.decomposition_sections(evaluated, figs, name)
        sections += explain.size_sections(evaluated, figs, name)
        sections += explain.transition_sections(befores_afters, figs, name)
        sections += zoom.zoom_sections(evaluated, figs, name)
        if examples > 0 or example_ids:
            groups = [[(b.label, b.path), (a.label, a.path)] for b, a in befores_afters
                      if b.config is not None and a.config is not None]
            in_pairs = {path for g in groups for _, path in g}
            groups += [[(m.label, m.path)] for m in evaluated if m.path not in in_pairs]
            sections += explain.example_sections(groups, figs, name, examples, example_ids)
    return markdown.render(inp.described, markdown.protocol_line(models), sections)
