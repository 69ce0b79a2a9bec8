"""The run record's types: what a run directory and a training run's directory hold, each versioned.

    SampleRecord   one line of samples/<task>/<view>.jsonl
    ViewStats      results.json tasks.<task>.views.<view>
    GapStats       results.json tasks.<task>.gap (crop − full, points)
    Closure        curve.jsonl tasks.<task>.closure (share of the base gap the full view recovered)
    TaskResult     results.json tasks.<task> (and its categories), curve.jsonl tasks.<task>
    Results        results.json
    RunConfig      config.json of an eval run
    TrainRunConfig config.json of a training run
    CurvePoint     one line of a training run's curve.jsonl (with each task's role: eval or holdout)

Files are written with `to_dict()` and read with `from_dict()`. Readers accept the files of earlier
releases (no `version`, fields missing: their defaults) and keep unknown keys in `extra`, so a newer
file read by this code and written back loses nothing. `SCHEMA_VERSION` is written into every record;
bump it when a field changes meaning, and teach `from_dict` the older form.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from vopd_bench.errors import UserError

SCHEMA_VERSION = 1
T = TypeVar("T", bound="Record")


@dataclass
class Record:
    """Base: dict round trip with a version and the unknown keys kept aside."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            v = getattr(self, f.name)
            out[f.name] = _plain(v)
        out.update(getattr(self, "extra", {}) or {})
        return out

    @classmethod
    def from_dict(cls: type[T], d: dict[str, Any]) -> T:
        if not isinstance(d, dict):
            raise TypeError(f"{cls.__name__}: expected an object, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names and k != "extra"}
        kw = cls._read_fields(kw)
        obj = cls(**kw)
        if "extra" in names:
            obj.extra = {k: v for k, v in d.items() if k not in names}  # type: ignore[attr-defined]
        return obj

    @classmethod
    def _read_fields(cls, kw: dict[str, Any]) -> dict[str, Any]:
        """Turn nested plain values into their types (subclasses override)."""
        return kw


def _plain(v: Any) -> Any:
    if isinstance(v, Record):
        return v.to_dict()
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def nan_to_none(x: float | None) -> float | None:
    return None if isinstance(x, float) and math.isnan(x) else x


@dataclass
class SampleRecord(Record):
    """One item in one view: the gold answer, the response, how it was scored, or the error that prevented it
    (`retryable` errors are asked again on resume; an error is never a wrong answer)."""

    id: str
    task: str
    view: str
    answer: str | None = None
    response: str | None = None
    parsed: str | None = None
    correct: bool = False
    error: str | None = None
    retryable: bool = False
    latency: float | None = None
    n_tokens: int | None = None
    visual_tokens: int | None = None  # tokens the view's image became in the prompt (None: backend cannot tell)
    prompt_hash: str | None = None
    crop_box: list[int] | None = None  # the region taken, [x1, y1, x2, y2] in original-image pixels
    box_frac: float | None = None  # the target's share of the image: union box area / image area (boxed items)
    category: str | None = None
    group: str | None = None  # items that repeat one question (clustered statistics)
    n_options: int | None = None
    truncated: bool | None = None  # cut off by max_new_tokens inside its reasoning (None: not recorded, older files)
    protocol: str | None = None  # the scoring protocol that set `parsed`/`correct` (None: files before protocols)
    verdicts: dict[str, bool | None] | None = None  # protocol -> its verdict on this response (None: undecided)
    parsed_by: dict[str, str | None] | None = None  # protocol -> what it read, where that differs from `parsed`
    judge_requests: dict[str, str] | None = None  # protocol -> the judge prompt it would send (undecided verdicts)
    facets: dict[str, Any] | None = None  # what protocol aggregations group by (cycle, l2_category, pair, type); None: not recorded
    version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)



@dataclass
class ViewStats(Record):
    """Accuracy of one view over the items answered without error, with its 95% CI."""

    n: int = 0
    accuracy: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    parse_failures: int | None = None  # None: not recorded (curve.jsonl lines, files of early releases)
    parse_failure_rate: float | None = None
    errors: int = 0
    skipped_no_box: int = 0
    truncated: int | None = None  # cut off inside the reasoning by max_new_tokens (not among parse_failures)
    undecided: int | None = None  # verdicts the protocol's rules left to a judge (scored wrong until judged)
    visual_tokens: float | None = None  # mean tokens an image of this view became (None: backend cannot tell)
    judged: int | None = None  # verdicts an LLM judge gave (None: no judge was asked)
    circular_accuracy: float | None = None  # --circular: share of questions right under every option rotation
    circular_n: int | None = None  # questions decided under every rotation (the circular accuracy's n)
    judge_agreement: float | None = None  # share of those where the vopd-bench rules' verdict is the same
    grounding: dict[str, Any] | None = None  # self_zoom: boxes, fall-backs, IoU with the gold box, tokens of both stages
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:  # the fields added with protocols only where known (older files unchanged)
        out = super().to_dict()
        for k in ("truncated", "undecided", "visual_tokens", "judged", "judge_agreement", "circular_accuracy",
                  "circular_n", "grounding"):
            if out.get(k) is None:
                out.pop(k, None)
        return out


@dataclass
class GapStats(Record):
    """crop − full accuracy in points over the items answered in both views: paired bootstrap CI, exact McNemar."""

    value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    n_pairs: int = 0
    crop_only_correct: int | None = None
    full_only_correct: int | None = None
    clustered: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Closure(Record):
    """(full_N − full_0) / (crop_0 − full_0) with its paired-bootstrap CI (fractions), beside the relative gap
    change (gap_0 − gap_N) / gap_0; against the curve point `base_step`."""

    value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n_items: int | None = None
    gap_reduction: float | None = None
    base_step: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskResult(Record):
    """One task's block: per-view stats, the gap where full and crop exist, chance level, per-category blocks,
    and (curve points after the first) the closure against the first point."""

    views: dict[str, ViewStats] = field(default_factory=dict)
    gap: GapStats | None = None
    chance: float | None = None
    categories: dict[str, TaskResult] | None = None
    closure: Closure | None = None
    # protocol -> {same_prompt, views: {view: {n, accuracy, undecided, metrics}}}: each protocol's verdicts on
    # these responses and its own aggregation (results.protocol_blocks)
    protocols: dict[str, dict[str, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:  # absent blocks stay absent (as the files always had them)
        return {k: v for k, v in super().to_dict().items()
                if not (k in ("gap", "categories", "closure", "chance", "protocols") and v is None)}

    @classmethod
    def _read_fields(cls, kw: dict[str, Any]) -> dict[str, Any]:
        kw["views"] = {v: ViewStats.from_dict(s) for v, s in (kw.get("views") or {}).items()}
        if kw.get("gap") is not None:
            kw["gap"] = GapStats.from_dict(kw["gap"])
        if kw.get("categories") is not None:
            kw["categories"] = {c: TaskResult.from_dict(b) for c, b in kw["categories"].items()}
        if kw.get("closure") is not None:
            kw["closure"] = Closure.from_dict(kw["closure"])
        return kw


@dataclass
class Results(Record):
    """results.json: per task, the average over tasks, what was run, and the invocations it finished
    (`complete`: invocation key → signature of its sample files; see `vopd_bench.resume`)."""

    tasks: dict[str, TaskResult] = field(default_factory=dict)
    average: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    backend: str | None = None
    views: dict[str, list[str]] = field(default_factory=dict)
    limit: int | None = None
    complete: dict[str, Any] = field(default_factory=dict)
    protocol: str | None = None  # the scoring protocol of `correct` (None: files before protocols, vopd-bench)
    version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def _read_fields(cls, kw: dict[str, Any]) -> dict[str, Any]:
        kw["tasks"] = {t: TaskResult.from_dict(b) for t, b in (kw.get("tasks") or {}).items()}
        if not isinstance(kw.get("complete"), dict):  # a list in no release, but never trust a file
            kw["complete"] = {}
        return kw


@dataclass
class RunConfig(Record):
    """config.json: everything that can change a number. `identity` is what a resumed run must match."""

    vopd_bench: str | None = None
    created: str | None = None
    backend: dict[str, Any] = field(default_factory=dict)  # the backend's describe(): model path, dtype, budget
    backend_config: dict[str, Any] = field(default_factory=dict)  # the settings asked for
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)  # protocol.task_record per task
    views: dict[str, list[str]] = field(default_factory=dict)
    seed: int = 0
    limit: int | None = None
    world_size: int = 1
    versions: dict[str, str] = field(default_factory=dict)
    identity: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] | None = None  # presets.Protocol.record() (None: files before protocols: vopd-bench)
    system_prompt: str | None = None  # --system-prompt, where given (overrides the task's and the protocol's)
    version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainRunConfig(Record):
    """A training run's config.json: the resolved trainer config and what else can change a number."""

    kind: str = "train"
    vopd_bench: str | None = None
    created: str | None = None
    resumed: str | None = None
    model: str | None = None  # the base model
    model_path: str | None = None
    seed: int = 0
    world_size: int = 1
    train_task: dict[str, Any] = field(default_factory=dict)  # name, n_prompts, crop, prompt_hash, options
    config: dict[str, Any] = field(default_factory=dict)  # OPDConfig.to_dict()
    versions: dict[str, str] = field(default_factory=dict)
    version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class CurvePoint(Record):
    """One scored checkpoint of a training run. `roles`: task → "eval" (full + crop) or "holdout" (full only);
    files of earlier releases have none (`role()` then infers it from the views)."""

    step: int
    checkpoint: str | None = None
    eval_dir: str | None = None
    tasks: dict[str, TaskResult] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    eval_s: float | None = None
    warnings: list[str] = field(default_factory=list)
    version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def _read_fields(cls, kw: dict[str, Any]) -> dict[str, Any]:
        kw["tasks"] = {t: TaskResult.from_dict(b) for t, b in (kw.get("tasks") or {}).items()}
        kw["step"] = int(kw["step"])
        return kw

    def role(self, task: str) -> str:
        """"eval" or "holdout" as recorded; for an older file, "eval" when the task has a crop view."""
        if task in self.roles:
            return self.roles[task]
        t = self.tasks.get(task)
        return "eval" if t is not None and "crop" in t.views else "holdout"


# ----------------------------------------------------------------------------- reading files from disk
# Files on disk may be hand-edited, truncated or from another release: the task blocks of results.json and
# curve.jsonl are checked before they become types, and a problem is a one-line `UserError` naming the file
# and the field.


def check_tasks(d: Any, where: str, path: Path) -> dict[str, Any]:
    """task → validated block (numbers checked, NaN → None), as `TaskResult.from_dict` reads it."""
    tasks = check_object(d, where, path)
    if not tasks:
        raise UserError(f"{path}: {where} is empty (no task was scored)")
    return {str(name): _block(t, f"{where}.{name}", path, top=True) for name, t in tasks.items()}


_VIEW = {"n": (True, True), "ci_low": (False, False), "ci_high": (False, False), "parse_failures": (True, False)}
_GAP = {"value": (False, False), "ci_low": (False, False), "ci_high": (False, False), "p_value": (False, False),
        "n_pairs": (True, False)}
_CLOSURE = {"value": (False, False), "ci_low": (False, False), "ci_high": (False, False),
            "gap_reduction": (False, False), "n_items": (True, False)}


def _block(d: Any, where: str, path: Path, top: bool = False) -> dict[str, Any]:
    d = dict(check_object(d, where, path))
    views = check_object(d.get("views"), f"{where}.views", path)
    d["views"] = {str(v): _view(s, f"{where}.views.{v}", path) for v, s in views.items()}
    if d.get("gap") is not None:
        d["gap"] = _numbers(check_object(d["gap"], f"{where}.gap", path), _GAP, f"{where}.gap", path)
    if not top:
        d.pop("categories", None)
        d.pop("closure", None)
        return d
    cats = check_object(d.get("categories") or {}, f"{where}.categories", path)
    d["categories"] = {str(c): _block(b, f"{where}.categories.{c}", path) for c, b in cats.items()} or None
    closure = d.get("closure")  # absent in curves written before it existed
    d["closure"] = _numbers(closure, _CLOSURE, f"{where}.closure", path) if isinstance(closure, dict) else None
    return d


def _view(d: Any, where: str, path: Path) -> dict[str, Any]:
    d = check_object(d, where, path)
    if "accuracy" not in d:
        raise UserError(f"{path}: {where}.accuracy is missing")
    out = _numbers(d, _VIEW, where, path)
    out["accuracy"] = check_number(d["accuracy"], f"{where}.accuracy", path, required=False)  # null/NaN: nothing scored
    return out


def _numbers(d: dict[str, Any], spec: dict[str, tuple[bool, bool]], where: str, path: Path) -> dict[str, Any]:
    """`d` with the numbers of `spec` (key → (integer, required)) checked; NaN becomes None."""
    out = dict(d)
    for k, (integer, required) in spec.items():
        if k in d or required:
            out[k] = check_number(d.get(k), f"{where}.{k}", path, integer=integer, required=required)
    return out


def check_number(x: Any, where: str, path: Path, *, integer: bool = False, required: bool = True) -> Any:
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


def check_object(x: Any, where: str, path: Path) -> dict[str, Any]:
    if not isinstance(x, dict):
        got = "nothing" if x is None else type(x).__name__
        raise UserError(f"{path}: {where} should be an object, got {got}")
    return x
