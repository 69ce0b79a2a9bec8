"""Scoring checkpoints with the harness, and the gap-reduction curve's bookkeeping (closure, collapse warnings).

Each point runs `run_eval` over the in-memory model (HFBackend, the checkpoint folder as its recorded
identity) on the eval tasks (full + crop views) and the holdout tasks (full view), into
`evals/step-N/` -- an ordinary eval run directory, so a killed evaluation resumes item by item.
curve.jsonl itself is read and written by `vopd_bench.train.rundir.TrainRun`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vopd_bench.errors import UserError
from vopd_bench.schema import Closure, CurvePoint, TaskResult, nan_to_none
from vopd_bench.train.config import OPDConfig
from vopd_bench.train.rundir import GAP_KEYS, VIEW_KEYS, TrainRun

log = logging.getLogger(__name__)
EVAL, HOLDOUT = "eval", "holdout"


class Scores(dict[str, dict[str, Any]]):
    """`score_checkpoint`'s result: task -> its curve block (plain JSON, as curve.jsonl holds it), and `roles`:
    task -> "eval" (scored full + crop) or "holdout" (full only)."""

    def __init__(self, tasks: dict[str, dict[str, Any]], roles: dict[str, str]) -> None:
        super().__init__(tasks)
        self.roles = roles


def score_checkpoint(cfg: OPDConfig, policy: Any, checkpoint: str, eval_dir: Path) -> Scores:
    """Per-task view accuracies (and the gap) of the in-memory model, recorded as `checkpoint`, with each task's role.

    A sharded (FSDP) policy cannot generate for one rank's items alone, so then every rank loads the saved
    `checkpoint` folder as a full replica in the same dtype, scores its shard of the items, and frees it."""
    from vopd_bench.backends.base import BackendConfig
    from vopd_bench.backends.hf import HFBackend
    from vopd_bench.models import resolve_model

    dtype = str(next(policy.model.parameters()).dtype).replace("torch.", "")
    revision = cfg.revision if checkpoint == resolve_model(cfg.model) else None  # step 0: the base model
    bcfg = BackendConfig(model=checkpoint, revision=revision, device=policy.device, dtype=dtype,
                         batch_size=cfg.eval_batch_size, max_pixels=cfg.max_pixels,
                         trust_remote_code=cfg.trust_remote_code, chat_template_kwargs=dict(cfg.chat_template_kwargs))
    if getattr(policy, "sharded", False):
        backend = HFBackend(bcfg, processor=policy.processor)
    else:
        backend = HFBackend(bcfg, model=policy.model, processor=policy.processor)
    try:
        return _score(cfg, bcfg, backend, eval_dir)
    finally:
        del backend
        if policy.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()


def _score(cfg: OPDConfig, bcfg: Any, backend: Any, eval_dir: Path) -> Scores:
    from vopd_bench.evaluate import EvalConfig, run_eval

    groups = [(cfg.eval_tasks, list(cfg.eval_views), EVAL), (cfg.holdout_tasks, ["full"], HOLDOUT)]
    tasks: dict[str, Any] = {}
    roles: dict[str, str] = {}
    for names, views, role in groups:
        if not names:
            continue
        ecfg = EvalConfig(
            tasks=list(names),
            backend=bcfg,
            out=str(eval_dir),
            views=views,
            data={t: p for t, p in cfg.eval_data.items() if t in names},
            limit=cfg.eval_limit,
            seed=cfg.seed,
            max_new_tokens=cfg.eval_max_new_tokens,
            protocol=cfg.protocol,
            system_prompt=cfg.system_prompt,
            progress=False,
        )
        results = run_eval(ecfg, backend)
        for name in names:
            key = name if name in results["tasks"] else _spec_name(name)
            tasks[key] = summarize_task(results["tasks"][key])
            roles[key] = role
    return Scores(tasks, roles)


def _spec_name(name: str) -> str:
    from vopd_bench.tasks import get_task

    return get_task(name).name


def summarize_task(res: dict[str, Any]) -> dict[str, Any]:
    """The curve's view of one task's results: accuracy + CI per view, and the gap when both views exist."""
    out: dict[str, Any] = {
        "views": {v: {k: nan_to_none(s.get(k)) for k in VIEW_KEYS} for v, s in res.get("views", {}).items()}
    }
    if "gap" in res:
        out["gap"] = {k: nan_to_none(res["gap"].get(k)) for k in GAP_KEYS}
    return out


def _typed(point: CurvePoint | dict[str, Any]) -> CurvePoint:
    return point if isinstance(point, CurvePoint) else CurvePoint.from_dict(point)


def append_point(path: Path, point: CurvePoint | dict[str, Any]) -> bool:
    """Append `point` to `<run>/curve.jsonl` unless its step is already on the curve; returns whether it was written.

    Each gap task of a point after the first gains `closure` (see `closure_block`) against the curve's first point.
    A plain-dict point takes its `roles` from its `tasks` when they are `score_checkpoint`'s `Scores`, and gains
    the closures in place."""
    run = TrainRun(path.parent)
    typed = _typed(point)
    if isinstance(point, dict) and not typed.roles:
        typed.roles = dict(getattr(point.get("tasks"), "roles", None) or {})
    points = run.curve()
    if any(p.step == typed.step for p in points):
        return False
    if points and points[0].step < typed.step:
        for task, res in typed.tasks.items():
            if res.gap is not None and (c := closure_block(run, points[0], typed, task)) is not None:
                res.closure = c
                if isinstance(point, dict):
                    point["tasks"][task]["closure"] = c.to_dict()
    run.append(typed)
    return True


def closure_block(run: TrainRun, base: CurvePoint, point: CurvePoint, task: str) -> Closure | None:
    """How much of `base`'s gap on `task` the full view of `point` recovered, as curve.jsonl records it:
    `value` = (full_N − full_0) / (crop_0 − full_0) with its paired-bootstrap 95% CI (`ci_low`, `ci_high`) over
    the items both eval dirs scored (`n_items`), beside `gap_reduction` = (gap_0 − gap_N) / gap_0 (fractions;
    None where undefined). Without both eval dirs' sample files: the point estimate from accuracies, no CI."""
    from vopd_bench.stats import closure_estimate, gap_closure, relative_reduction

    b, p = base.tasks.get(task), point.tasks.get(task)
    if b is None or p is None or b.gap is None or p.gap is None or not (
            {"full", "crop"} <= set(b.views) and "full" in p.views):
        return None
    out = Closure(value=closure_estimate(b.views["full"].accuracy, b.views["crop"].accuracy, p.views["full"].accuracy),
                  gap_reduction=relative_reduction(b.gap.value, p.gap.value), base_step=base.step)
    d0, d1 = run.eval_dir(base), run.eval_dir(point)
    items = paired_items(d0, d1, task) if d0 is not None and d1 is not None else None
    if items and items[0]:
        value, lo, hi = gap_closure(*items)
        out.value, out.ci_low, out.ci_high, out.n_items = nan_to_none(value), nan_to_none(lo), nan_to_none(hi), len(
            items[0])
    return out


def paired_items(before: Path, after: Path, task: str) -> tuple[list[float], list[float], list[float], list[str] | None] | None:
    """(full_0, crop_0, full_N correctness, groups or None) over the items answered without error in `before`'s
    full and crop views and `after`'s full view (paired by id); None when a sample file is missing."""
    from vopd_bench.rundir import RunDir

    r0, r1 = RunDir(before), RunDir(after)
    if not all(r.samples_path(task, v).is_file() for r, v in ((r0, "full"), (r0, "crop"), (r1, "full"))):
        return None
    files = ((r0, "full"), (r0, "crop"), (r1, "full"))
    recs = [r.load_records(task, v) for r, v in files]
    ids = [i for i in recs[0] if all(i in rs and not rs[i].get("error") for rs in recs)]
    flags = []
    for (r, v), rs in zip(files, recs, strict=True):
        if (bad := next((i for i in ids if "correct" not in rs[i]), None)) is not None:
            raise UserError(f"{r.samples_path(task, v)}: record {bad!r} has no 'correct' field")
        flags.append([float(bool(rs[i]["correct"])) for i in ids])
    groups = [recs[0][i].get("group") or i for i in ids]
    return flags[0], flags[1], flags[2], groups if len(set(groups)) < len(ids) else None


def truncate_after(path: Path, step: int) -> None:
    """`TrainRun.truncate_after` of `<run>/curve.jsonl`."""
    TrainRun(path.parent).truncate_after(step)


def accuracy_drops(base: dict[str, dict[str, float | None]], now: dict[str, dict[str, float | None]],
                   threshold: float) -> list[tuple[str, str, float, float]]:
    """(task, view, then %, now %) where a task's crop accuracy (its full accuracy for a task without a crop view,
    a holdout) fell more than `threshold` points; the arguments map task -> view -> accuracy (fraction)."""
    out = []
    for task, views in now.items():
        view = "crop" if "crop" in views else "full"
        then, acc = (base.get(task) or {}).get(view), views.get(view)
        if then is not None and acc is not None and 100.0 * (then - acc) > threshold:
            out.append((task, view, 100.0 * then, 100.0 * acc))
    return out


def accuracies(tasks: dict[str, TaskResult]) -> dict[str, dict[str, float | None]]:
    """task -> view -> accuracy."""
    return {t: {v: s.accuracy for v, s in res.views.items()} for t, res in tasks.items()}


def collapse_warnings(points: list[CurvePoint] | list[dict[str, Any]], point: CurvePoint | dict[str, Any],
                      threshold: float) -> list[str]:
    """Crop (and holdout full) accuracy drops of more than `threshold` points since step 0."""
    now = _typed(point)
    base = next((p for p in map(_typed, points) if p.step == 0), None)
    if base is None or now.step == 0:
        return []
    return [f"{task}/{view} accuracy fell {then - acc:.1f} points below step 0 ({then:.1f} -> {acc:.1f}): "
            "the teacher may be collapsing (try teacher=frozen, a lower lr, or anchor_weight > 0)"
            for task, view, then, acc in accuracy_drops(accuracies(base.tasks), accuracies(now.tasks), threshold)]


def redraw(curve_path: Path, out_stem: Path) -> list[Path]:
    """Redraw the gap-reduction figure (PNG + PDF) with vopd_bench.report.curve, if available."""
    try:
        from vopd_bench.report.curve import draw_curve
    except ImportError as e:
        log.info("gap curve not drawn (vopd_bench.report.curve unavailable: %s)", e)
        return []
    try:
        return list(draw_curve(curve_path, out_stem))
    except Exception as e:  # a plotting problem must never stop training
        log.warning("drawing the gap curve failed: %s: %s", type(e).__name__, e)
        return []
