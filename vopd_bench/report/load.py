"""Read run directories (eval runs and training runs) into a tidy, validated structure.

Only config.json, results.json and curve.jsonl are read. Every problem with an input becomes a
one-line `UserError` naming the file, raised before the report writes anything.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vopd_bench.errors import UserError
from vopd_bench.train.checkpoint import identity
from vopd_bench.train.config import OPDConfig
from vopd_bench.train.curve import accuracies, accuracy_drops, eval_path

log = logging.getLogger(__name__)


@dataclass
class ViewStat:
    """Accuracy of one view (fractions 0..1; None where not measured)."""

    n: int
    accuracy: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    parse_failures: int | None = None


@dataclass
class GapStat:
    """The paired gap crop − full, in points."""

    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    n_pairs: int | None = None


@dataclass
class Block:
    """Views and gap of a task (or of one category of a task)."""

    views: dict[str, ViewStat]
    gap: GapStat | None = None

    def acc(self, view: str) -> float | None:
        s = self.views.get(view)
        return None if s is None else s.accuracy

    @property
    def n(self) -> int:
        return max((s.n for s in self.views.values()), default=0)


@dataclass
class TaskResult(Block):
    categories: dict[str, Block] = field(default_factory=dict)


@dataclass
class Closure:
    """The share of a base gap recovered by the full view, (full_N − full_0) / (crop_0 − full_0), with its 95%
    paired-bootstrap CI, beside the plain relative change of the gap (gap_0 − gap_N) / gap_0 (fractions)."""

    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    gap_reduction: float | None = None
    n_items: int | None = None


@dataclass
class ModelResult:
    """One scored model: a row of the tables, a group of bars in the figures."""

    label: str
    path: Path
    model: str
    tasks: dict[str, TaskResult]
    config: dict[str, Any] = field(default_factory=dict)
    closure: dict[str, Closure] = field(default_factory=dict)  # per task, against its training run's first step
    collapse: list[str] = field(default_factory=list)  # why its gap is no closed one: crop/holdout drops vs its base
    collapse_threshold: float | None = None  # the drop (points) beyond which `collapse` lists a view

    @property
    def image_budget(self) -> dict[str, Any] | None:
        return (self.config.get("backend") or {}).get("image_budget")

    def crop_params(self, task: str) -> dict[str, Any] | None:
        return ((self.config.get("tasks") or {}).get(task) or {}).get("crop")

    def average(self, tasks: list[str], views: tuple[str, ...] = ("full", "crop")) -> TaskResult | None:
        """Unweighted mean over `tasks` of each view's accuracy and of the gap; None unless every task
        has every view. CIs: normal approximation from the per-task CIs (tasks independent)."""
        if not tasks or any(t not in self.tasks or not set(views) <= set(self.tasks[t].views) for t in tasks):
            return None
        ts = [self.tasks[t] for t in tasks]
        out = {}
        for v in views:
            acc, lo, hi = _mean_ci([(t.views[v].accuracy, t.views[v].ci_low, t.views[v].ci_high) for t in ts])
            out[v] = ViewStat(n=sum(t.views[v].n for t in ts), accuracy=acc, ci_low=lo, ci_high=hi,
                              parse_failures=None)
        gap = None
        if {"full", "crop"} <= set(views):
            gaps = [(t.gap.value, t.gap.ci_low, t.gap.ci_high) if t.gap else (None, None, None) for t in ts]
            if all(g[0] is not None for g in gaps):
                value, lo, hi = _mean_ci(gaps)
                gap = GapStat(value=value, ci_low=lo, ci_high=hi)
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
class CurvePoint:
    """One scored checkpoint of a training run (a line of curve.jsonl)."""

    step: int
    checkpoint: str | None
    eval_dir: str | None
    tasks: dict[str, Block]
    train: dict[str, Any] = field(default_factory=dict)
    closure: dict[str, Closure] = field(default_factory=dict)  # per gap task, against the first point
    eval_path: Path | None = None  # eval_dir resolved on this machine (None: not found)


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


def is_holdout(task: str, block: Block) -> bool:
    """The holdout task: its name says so, or it has only a full view."""
    return "holdout" in task.lower() or set(block.views) == {"full"}


def _num(x: Any, where: str, path: Path, *, integer: bool = False, required: bool = True) -> Any:
    if x is None and not required:
        return None
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        if x is None:
            raise UserError(f"{path}: {where} is missing")
        raise UserError(f"{path}: {where} should be a number, got {type(x).__name__}")
    if integer:
        if isinstance(x, float) and not x.is_integer():
            raise UserError(f"{path}: {where} should be an integer, got {x}")
        return int(x)
    x = float(x)
    return None if math.isnan(x) else x


def _obj(x: Any, where: str, path: Path) -> dict[str, Any]:
    if not isinstance(x, dict):
        got = "nothing" if x is None else type(x).__name__
        raise UserError(f"{path}: {where} should be an object, got {got}")
    return x


def parse_view(d: Any, where: str, path: Path) -> ViewStat:
    d = _obj(d, where, path)
    if "accuracy" not in d:
        raise UserError(f"{path}: {where}.accuracy is missing")
    return ViewStat(
        n=_num(d.get("n"), f"{where}.n", path, integer=True),
        accuracy=_num(d["accuracy"], f"{where}.accuracy", path, required=False),  # null/NaN: nothing scored
        ci_low=_num(d.get("ci_low"), f"{where}.ci_low", path, required=False),
        ci_high=_num(d.get("ci_high"), f"{where}.ci_high", path, required=False),
        parse_failures=_num(d.get("parse_failures"), f"{where}.parse_failures", path, integer=True, required=False),
    )


def parse_gap(d: Any, where: str, path: Path) -> GapStat | None:
    if d is None:
        return None
    d = _obj(d, where, path)
    return GapStat(
        value=_num(d.get("value"), f"{where}.value", path, required=False),
        ci_low=_num(d.get("ci_low"), f"{where}.ci_low", path, required=False),
        ci_high=_num(d.get("ci_high"), f"{where}.ci_high", path, required=False),
        p_value=_num(d.get("p_value"), f"{where}.p_value", path, required=False),
        n_pairs=_num(d.get("n_pairs"), f"{where}.n_pairs", path, integer=True, required=False),
    )


def parse_closure(d: Any, where: str, path: Path) -> Closure | None:
    if not isinstance(d, dict):  # absent in curves written before it existed
        return None
    return Closure(
        value=_num(d.get("value"), f"{where}.value", path, required=False),
        ci_low=_num(d.get("ci_low"), f"{where}.ci_low", path, required=False),
        ci_high=_num(d.get("ci_high"), f"{where}.ci_high", path, required=False),
        gap_reduction=_num(d.get("gap_reduction"), f"{where}.gap_reduction", path, required=False),
        n_items=_num(d.get("n_items"), f"{where}.n_items", path, integer=True, required=False),
    )


def parse_block(d: Any, where: str, path: Path) -> Block:
    d = _obj(d, where, path)
    views = _obj(d.get("views"), f"{where}.views", path)
    return Block(
        views={str(v): parse_view(s, f"{where}.views.{v}", path) for v, s in views.items()},
        gap=parse_gap(d.get("gap"), f"{where}.gap", path),
    )


def parse_tasks(d: Any, where: str, path: Path) -> dict[str, TaskResult]:
    tasks = _obj(d, where, path)
    if not tasks:
        raise UserError(f"{path}: {where} is empty (no task was scored)")
    out: dict[str, TaskResult] = {}
    for name, t in tasks.items():
        b = parse_block(t, f"{where}.{name}", path)
        cats = _obj(t.get("categories") or {}, f"{where}.{name}.categories", path)
        out[str(name)] = TaskResult(
            views=b.views,
            gap=b.gap,
            categories={str(c): parse_block(cb, f"{where}.{name}.categories.{c}", path) for c, cb in cats.items()},
        )
    return out


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file; missing, unreadable or malformed → UserError naming the file."""
    if not path.is_file():
        raise UserError(f"{path}: not found")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read ({e})") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    return _obj(obj, "the top level", path)


def read_curve(path: Path) -> list[CurvePoint]:
    """The scored checkpoints of curve.jsonl, sorted by step (a re-scored step keeps its last line).

    A torn last line (training still writing, or killed) is skipped with a warning.
    """
    if not path.is_file():
        raise UserError(f"{path}: not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read ({e})") from None
    lines = text.split("\n")
    by_step: dict[int, CurvePoint] = {}
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines):  # no newline after it: a partial write
                log.warning("%s: skipping a partial last line", path)
                continue
            raise UserError(f"{path}:{i}: not valid JSON ({e.msg})") from None
        where = f"line {i}"
        row = _obj(row, where, path)
        tasks = parse_tasks(row.get("tasks"), f"{where}: tasks", path)
        closure = {t: c for t in tasks
                   if (c := parse_closure(row["tasks"][t].get("closure"), f"{where}: tasks.{t}.closure", path))}
        point = CurvePoint(
            step=_num(row.get("step"), f"{where}: step", path, integer=True),
            checkpoint=row.get("checkpoint"),
            eval_dir=row.get("eval_dir"),
            tasks=dict(tasks),
            train=row.get("train") if isinstance(row.get("train"), dict) else {},
            closure=closure,
            eval_path=eval_path(path.parent, row),
        )
        by_step[point.step] = point
    if not by_step:
        raise UserError(f"{path}: no scored checkpoint yet")
    return [by_step[s] for s in sorted(by_step)]


def basename(model: str) -> str:
    """`Qwen/Qwen2.5-VL-7B-Instruct` → `Qwen2.5-VL-7B-Instruct`; `/tmp/tinyvl/` → `tinyvl`."""
    return model.rstrip("/\\").replace("\\", "/").split("/")[-1] or model


def trained_label(name: str, step: int, objective: str | None = None) -> str:
    """How a training run's checkpoint is named: `vopd-tiny + Vision-OPD (step 100)`."""
    method = "label-supervised (ceiling)" if objective == "supervised" else "Vision-OPD"
    return f"{name} + {method} (step {step})"


def checkpoint_folder(config: dict[str, Any]) -> Path | None:
    """The training checkpoint folder an eval run scored (its backend's model path holds a checkpoint.json);
    None when the model is not one (or its folder is gone)."""
    backend = config.get("backend") or {}
    for model in dict.fromkeys(str(m) for m in (backend.get("model_path"), backend.get("model")) if m):
        if (Path(model) / "checkpoint.json").is_file():
            return Path(model)
    return None


def checkpoint_label(config: dict[str, Any]) -> str | None:
    """The label of an eval run whose model is a training checkpoint folder (base model + step, read from the
    checkpoint's own record); None when the model is not one (or its folder is gone)."""
    folder = checkpoint_folder(config)
    ident = identity(folder) if folder is not None else None
    if ident and ident["model"]:
        return trained_label(basename(ident["model"]), ident["step"], ident["objective"])
    return None


def checkpoint_threshold(config: dict[str, Any]) -> float:
    """The collapse threshold for an eval run: its checkpoint's training run's `collapse_warn_points` when the
    model is a training checkpoint whose run config.json is readable, else the trainer's default."""
    folder = checkpoint_folder(config)
    run_config = folder.parent.parent / "config.json" if folder is not None and identity(folder) else None
    if run_config is None or not run_config.is_file():
        return collapse_threshold()
    try:
        return collapse_threshold(read_json(run_config))
    except UserError:
        log.warning("%s: unreadable; using the default collapse threshold", run_config)
        return collapse_threshold()


def load_eval_run(path: Path, label: str | None = None) -> ModelResult:
    """An eval run dir: config.json + results.json. A training checkpoint is labelled by its run and step."""
    config = read_json(path / "config.json")
    results = read_json(path / "results.json")
    tasks = parse_tasks(results.get("tasks"), "tasks", path / "results.json")
    model = str((config.get("backend") or {}).get("model") or results.get("model") or path.name)
    label = label or checkpoint_label(config) or basename(model)
    return ModelResult(label=label, path=path, model=model, tasks=tasks, config=config)


def _point_model(train_dir: Path, point: CurvePoint, label: str, base: str) -> ModelResult:
    """The model at one checkpoint: its eval dir's results.json when present, else curve.jsonl's numbers."""
    d = point.eval_path
    if d is not None and (d / "results.json").is_file():
        m = load_eval_run(d, label)
        return ModelResult(label=label, path=d, model=point.checkpoint or m.model, tasks=m.tasks, config=m.config,
                           closure=dict(point.closure))
    log.debug("%s: no results.json; using curve.jsonl's numbers for step %d", point.eval_dir, point.step)
    tasks = {t: TaskResult(views=b.views, gap=b.gap) for t, b in point.tasks.items()}
    return ModelResult(label=label, path=train_dir, model=point.checkpoint or base, tasks=tasks,
                       closure=dict(point.closure))


def collapse_threshold(config: dict[str, Any] | None = None) -> float:
    """The trainer's `collapse_warn_points` of a training run's config.json (its default without one)."""
    default = OPDConfig.__dataclass_fields__["collapse_warn_points"].default
    value = ((config or {}).get("config") or {}).get("collapse_warn_points", default)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float(default)


def collapse_reasons(base: dict[str, Block], now: dict[str, Block], threshold: float) -> list[str]:
    """`task view then → now` for each crop (holdout: full) accuracy of the tasks `now` more than `threshold`
    points below `base`'s: a model whose gap shrank because it got worse."""
    return [f"{task} {view} {then:.1f} → {acc:.1f}" for task, view, then, acc in
            accuracy_drops(accuracies(base), accuracies(now), threshold)]


def load_training_run(path: Path, label: str | None = None) -> TrainingRun:
    """A training output dir: config.json (kind "train", "model" = the base model) + curve.jsonl."""
    config = read_json(path / "config.json")
    curve = read_curve(path / "curve.jsonl")
    base = str(config.get("model") or path.name)
    name = label or basename(base)
    first, last = curve[0], curve[-1]
    before = _point_model(path, first, name if first.step == 0 else f"{name} (step {first.step})", base)
    threshold = collapse_threshold(config)
    after = None
    if len(curve) > 1:
        objective = (config.get("config") or {}).get("objective")
        after = _point_model(path, last, trained_label(name, last.step, objective), base)
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
    cfg = path / "config.json"
    if cfg.is_file() and read_json(cfg).get("kind") == "train":
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
