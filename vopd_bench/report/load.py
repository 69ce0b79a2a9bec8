"""Read run directories (eval runs and training runs) into the run record's types (`vopd_bench.schema`).

Only config.json, results.json and curve.jsonl are read (curve.jsonl through `TrainRun`). Every problem with
an input becomes a one-line `UserError` naming the file, raised before the report writes anything.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vopd_bench.errors import UserError
from vopd_bench.rundir import RunDir
from vopd_bench.schema import Closure, CurvePoint, GapStats, RunConfig, TaskResult, TrainRunConfig, ViewStats
from vopd_bench.train.checkpoint import identity
from vopd_bench.train.config import OPDConfig
from vopd_bench.train.curve import accuracies, accuracy_drops
from vopd_bench.train.rundir import TrainRun

log = logging.getLogger(__name__)


def acc(t: TaskResult | None, view: str) -> float | None:
    """A block's accuracy on `view` (fraction), None where not measured."""
    s = None if t is None else t.views.get(view)
    return None if s is None else s.accuracy


def size(t: TaskResult) -> int:
    """A block's item count: the largest n over its views."""
    return max((s.n for s in t.views.values()), default=0)


@dataclass
class ModelResult:
    """One scored model: a row of the tables, a group of bars in the figures."""

    label: str
    path: Path
    model: str
    tasks: dict[str, TaskResult]
    config: RunConfig | None = None  # None for a model read from curve.jsonl alone
    closure: dict[str, Closure] = field(default_factory=dict)  # per task, against its training run's first step
    collapse: list[str] = field(default_factory=list)  # why its gap is no closed one: crop/holdout drops vs its base
    collapse_threshold: float | None = None  # the drop (points) beyond which `collapse` lists a view

    @property
    def image_budget(self) -> dict[str, Any] | None:
        return None if self.config is None else self.config.backend.get("image_budget")

    def crop_params(self, task: str) -> dict[str, Any] | None:
        return None if self.config is None else (self.config.tasks.get(task) or {}).get("crop")

    def average(self, tasks: list[str], views: tuple[str, ...] = ("full", "crop")) -> TaskResult | None:
        """Unweighted mean over `tasks` of each view's accuracy and of the gap; None unless every task
        has every view. CIs: normal approximation from the per-task CIs (tasks independent)."""
        if not tasks or any(t not in self.tasks or not set(views) <= set(self.tasks[t].views) for t in tasks):
            return None
        ts = [self.tasks[t] for t in tasks]
        out = {}
        for v in views:
            mean, lo, hi = _mean_ci([(t.views[v].accuracy, t.views[v].ci_low, t.views[v].ci_high) for t in ts])
            out[v] = ViewStats(n=sum(t.views[v].n for t in ts), accuracy=mean, ci_low=lo, ci_high=hi)
        gap = None
        if {"full", "crop"} <= set(views):
            gaps = [(t.gap.value, t.gap.ci_low, t.gap.ci_high) if t.gap else (None, None, None) for t in ts]
            if all(g[0] is not None for g in gaps):
                value, lo, hi = _mean_ci(gaps)
                gap = GapStats(value=value, ci_low=lo, ci_high=hi)
        return TaskResult(views=out, gap=gap)


def _mean_ci(rows: list[tuple[float | None, float | None, float | None]]) -> tuple[Any, Any, Any]:
    """Mean of values, and a 95% CI from the rows' CIs (half-width / 1.96 as the standard error)."""
    vals = [r[0] for r in rows]
    if any(v is None for v in vals):
        return None, None, None
    mean = sum(vals) / len(vals)  # type: ignore[arg-type]
    if any(r[1] is None or r[2] is None for r in rows):
        return mean, None, None
    se = math.sqrt(sum(((r[2] - r[1]) / (2 * 1.959964)) ** 2 for r in rows)) / len(rows)  # type: ignore[operator]
    return mean, mean - 1.959964 * se, mean + 1.959964 * se


@dataclass
class TrainingRun:
    """A training output dir: its curve and the models at the first and last scored step."""

    label: str
    path: Path
    base_model: str
    curve: list[CurvePoint]
    before: ModelResult
    after: ModelResult | None  # None when only one checkpoint has been scored
    collapse_threshold: float = 10.0  # points: crop/holdout drops beyond it flag a point as collapsed

    @property
    def dir(self) -> TrainRun:
        return TrainRun(self.path)


def scored_curve(run: TrainRun) -> list[CurvePoint]:
    """A training run's curve, at least one point (else a UserError naming curve.jsonl)."""
    if not run.curve_path.is_file():
        raise UserError(f"{run.curve_path}: not found")
    curve = run.curve()
    if not curve:
        raise UserError(f"{run.curve_path}: no scored checkpoint yet")
    return curve


def basename(model: str) -> str:
    """`Qwen/Qwen2.5-VL-7B-Instruct` → `Qwen2.5-VL-7B-Instruct`; `/tmp/tinyvl/` → `tinyvl`."""
    return model.rstrip("/\\").replace("\\", "/").split("/")[-1] or model


def trained_label(name: str, step: int, objective: str | None = None) -> str:
    """How a training run's checkpoint is named: `vopd-tiny + Vision-OPD (step 100)`."""
    method = "label-supervised (ceiling)" if objective == "supervised" else "Vision-OPD"
    return f"{name} + {method} (step {step})"


def checkpoint_folder(config: RunConfig) -> Path | None:
    """The training checkpoint folder an eval run scored (its backend's model path holds a checkpoint.json);
    None when the model is not one (or its folder is gone)."""
    backend = config.backend or {}
    for model in dict.fromkeys(str(m) for m in (backend.get("model_path"), backend.get("model")) if m):
        if (Path(model) / "checkpoint.json").is_file():
            return Path(model)
    return None


def checkpoint_label(config: RunConfig) -> str | None:
    """The label of an eval run whose model is a training checkpoint folder (base model + step, read from the
    checkpoint's own record); None when the model is not one (or its folder is gone)."""
    folder = checkpoint_folder(config)
    ident = identity(folder) if folder is not None else None
    if ident and ident["model"]:
        return trained_label(basename(ident["model"]), ident["step"], ident["objective"])
    return None


def checkpoint_threshold(config: RunConfig | None) -> float:
    """The collapse threshold for an eval run: its checkpoint's training run's `collapse_warn_points` when the
    model is a training checkpoint whose run config.json is readable, else the trainer's default."""
    folder = checkpoint_folder(config) if config is not None else None
    if folder is None or not identity(folder):
        return collapse_threshold()
    try:
        return collapse_threshold(TrainRun(folder.parent.parent).read_config())
    except UserError as e:
        log.warning("%s; using the default collapse threshold", e)
        return collapse_threshold()


def load_eval_run(path: Path, label: str | None = None) -> ModelResult:
    """An eval run dir: config.json + results.json. A training checkpoint is labelled by its run and step."""
    run = RunDir(path)
    config, results = run.read_config(), run.read_results()
    if config is None or results is None:
        raise UserError(f"{config is None and run.config_path or run.results_path}: not found")
    model = str(config.backend.get("model") or results.model or path.name)
    label = label or checkpoint_label(config) or basename(model)
    return ModelResult(label=label, path=path, model=model, tasks=results.tasks, config=config)


def _point_model(run: TrainRun, point: CurvePoint, label: str, base: str) -> ModelResult:
    """The model at one checkpoint: its eval dir's results.json when present, else curve.jsonl's numbers."""
    closure = {t: b.closure for t, b in point.tasks.items() if b.closure is not None}
    d = run.eval_dir(point)
    if d is not None and (d / "results.json").is_file():
        m = load_eval_run(d, label)
        return ModelResult(label=label, path=d, model=point.checkpoint or m.model, tasks=m.tasks, config=m.config,
                           closure=closure)
    log.debug("%s: no results.json; using curve.jsonl's numbers for step %d", point.eval_dir, point.step)
    tasks = {t: TaskResult(views=b.views, gap=b.gap) for t, b in point.tasks.items()}
    return ModelResult(label=label, path=run.path, model=point.checkpoint or base, tasks=tasks, closure=closure)


def collapse_threshold(config: TrainRunConfig | None = None) -> float:
    """The trainer's `collapse_warn_points` of a training run's config.json (its default without one)."""
    default = OPDConfig.__dataclass_fields__["collapse_warn_points"].default
    value = (config.config if config is not None else {}).get("collapse_warn_points", default)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float(default)


def collapse_reasons(base: dict[str, TaskResult], now: dict[str, TaskResult], threshold: float) -> list[str]:
    """`task view then → now` for each crop (holdout: full) accuracy of the tasks `now` more than `threshold`
    points below `base`'s: a model whose gap shrank because it got worse."""
    return [f"{task} {view} {then:.1f} → {acc:.1f}" for task, view, then, acc in
            accuracy_drops(accuracies(base), accuracies(now), threshold)]


def load_training_run(path: Path, label: str | None = None) -> TrainingRun:
    """A training output dir: config.json (kind "train", "model" = the base model) + curve.jsonl."""
    run = TrainRun(path)
    config = run.read_config()
    if config is None:
        raise UserError(f"{run.config_path}: " + ("not found" if not run.config_path.is_file()
                                                   else "not a training run's config (kind \"train\")"))
    curve = scored_curve(run)
    base = str(config.model or path.name)
    name = label or basename(base)
    first, last = curve[0], curve[-1]
    before = _point_model(run, first, name if first.step == 0 else f"{name} (step {first.step})", base)
    threshold = collapse_threshold(config)
    after = None
    if len(curve) > 1:
        objective = config.config.get("objective")
        after = _point_model(run, last, trained_label(name, last.step, objective), base)
        after.collapse, after.collapse_threshold = collapse_reasons(before.tasks, after.tasks, threshold), threshold
    return TrainingRun(label=name, path=path, base_model=base, curve=curve, before=before, after=after,
                       collapse_threshold=threshold)


def load_run(path: Path, label: str | None = None) -> ModelResult | TrainingRun:
    """An eval run dir (has results.json) or a training dir (has curve.jsonl)."""
    if not path.is_dir():
        raise UserError(f"{path}: not a directory")
    if (path / "curve.jsonl").exists():
        return load_training_run(path, label)
    if (path / "results.json").exists():
        return load_eval_run(path, label)
    if TrainRun(path).read_config() is not None:
        raise UserError(f"{path / 'curve.jsonl'}: not found (no checkpoint of this training run scored yet)")
    raise UserError(f"{path / 'results.json'}: not found (neither an eval run dir nor a training dir with curve.jsonl)")


def dedupe_labels(models: list[ModelResult]) -> None:
    """Make labels unique: add the run dir's name to clashing labels (then a counter)."""
    seen: dict[str, int] = {}
    for m in models:
        seen[m.label] = seen.get(m.label, 0) + 1
    for m in models:
        if seen[m.label] > 1:
            m.label = f"{m.label} ({m.path.name})"
    used: set[str] = set()
    for m in models:
        base, k = m.label, 2
        while m.label in used:
            m.label = f"{base} #{k}"
            k += 1
        used.add(m.label)
