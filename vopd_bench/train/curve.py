"""Scoring checkpoints with the harness and the gap-reduction curve (`curve.jsonl`, one line per step).

Each point runs `run_eval` over the in-memory model (HFBackend, the checkpoint folder as its recorded
identity) on the eval tasks (full + crop views) and the holdout tasks (full view), into
`evals/step-N/` -- an ordinary eval run directory, so a killed evaluation resumes item by item.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from vopd_bench.errors import UserError
from vopd_bench.rundir import append_jsonl, read_jsonl
from vopd_bench.train.config import OPDConfig

log = logging.getLogger(__name__)
VIEW_KEYS = ("n", "accuracy", "ci_low", "ci_high", "parse_failure_rate")
GAP_KEYS = ("value", "ci_low", "ci_high", "p_value", "n_pairs")


def score_checkpoint(cfg: OPDConfig, policy: Any, checkpoint: str, eval_dir: Path) -> dict[str, Any]:
    """Per-task view accuracies (and the gap) of the in-memory model, recorded as `checkpoint`.

    A sharded (FSDP) policy cannot generate for one rank's items alone, so then every rank loads the saved
    `checkpoint` folder as a full replica in the same dtype, scores its shard of the items, and frees it."""
    from vopd_bench.backends.base import BackendConfig
    from vopd_bench.backends.hf import HFBackend
    from vopd_bench.models import resolve_model

    dtype = str(next(policy.model.parameters()).dtype).replace("torch.", "")
    revision = cfg.revision if checkpoint == resolve_model(cfg.model) else None  # step 0: the base model
    bcfg = BackendConfig(model=checkpoint, revision=revision, device=policy.device, dtype=dtype,
                         batch_size=cfg.eval_batch_size, max_pixels=cfg.max_pixels)
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


def _score(cfg: OPDConfig, bcfg: Any, backend: Any, eval_dir: Path) -> dict[str, Any]:
    from vopd_bench.evaluate import EvalConfig, run_eval

    groups = [(cfg.eval_tasks, ["full", "crop"]), (cfg.holdout_tasks, ["full"])]
    tasks: dict[str, Any] = {}
    for names, views in groups:
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
            progress=False,
        )
        results = run_eval(ecfg, backend)
        for name in names:
            key = name if name in results["tasks"] else _spec_name(name)
            tasks[key] = summarize_task(results["tasks"][key])
    return tasks


def _spec_name(name: str) -> str:
    from vopd_bench.tasks import get_task

    return get_task(name).name


def _clean(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


def summarize_task(res: dict[str, Any]) -> dict[str, Any]:
    """The curve's view of one task's results: accuracy + CI per view, and the gap when both views exist."""
    out: dict[str, Any] = {
        "views": {v: {k: _clean(s.get(k)) for k in VIEW_KEYS} for v, s in res.get("views", {}).items()}
    }
    if "gap" in res:
        out["gap"] = {k: _clean(res["gap"].get(k)) for k in GAP_KEYS}
    return out


def read_curve(path: Path) -> list[dict[str, Any]]:
    """Curve points, one per step (the last line of a step wins), sorted by step."""
    by_step = {int(r["step"]): r for r in read_jsonl(path)}
    return [by_step[s] for s in sorted(by_step)]


def append_point(path: Path, point: dict[str, Any]) -> bool:
    """Append `point` unless its step is already on the curve; returns whether it was written.

    Each gap task of a point after the first gains `closure` (see `closure_block`) against the curve's first point."""
    points = read_curve(path)
    if any(r["step"] == point["step"] for r in points):
        return False
    if points and points[0]["step"] < point["step"]:
        for task, res in point.get("tasks", {}).items():
            if "gap" in res and (c := closure_block(points[0], point, task, path.parent)) is not None:
                res["closure"] = c
    append_jsonl(path, [point])
    return True


def eval_path(train_dir: Path, point: dict[str, Any]) -> Path | None:
    """A curve point's eval run dir: `<train_dir>/evals/<its name>` where the trainer writes it (so a moved or
    copied run reads its own), else as recorded (absolute, or relative to the cwd of training or to the training
    dir); None when none of them exists."""
    raw = point.get("eval_dir")
    if not raw:
        return None
    d = Path(raw)
    for cand in (train_dir / "evals" / d.name, d, train_dir / d):
        if cand.is_dir():
            return cand
    return None


def closure_block(base: dict[str, Any], point: dict[str, Any], task: str, train_dir: Path) -> dict[str, Any] | None:
    """How much of `base`'s gap on `task` the full view of `point` recovered, as curve.jsonl records it:
    `value` = (full_N − full_0) / (crop_0 − full_0) with its paired-bootstrap 95% CI (`ci_low`, `ci_high`) over
    the items both eval dirs scored (`n_items`), beside `gap_reduction` = (gap_0 − gap_N) / gap_0 (fractions;
    null where undefined). Without both eval dirs' sample files: the point estimate from accuracies, no CI."""
    from vopd_bench.stats import closure_estimate, gap_closure, relative_reduction

    try:
        b, p = base["tasks"][task], point["tasks"][task]
        f0, c0, f1 = b["views"]["full"]["accuracy"], b["views"]["crop"]["accuracy"], p["views"]["full"]["accuracy"]
        g0, g1 = b["gap"]["value"], p["gap"]["value"]
    except (KeyError, TypeError):
        return None
    out: dict[str, Any] = {"value": closure_estimate(f0, c0, f1), "ci_low": None, "ci_high": None, "n_items": None,
                           "gap_reduction": relative_reduction(g0, g1), "base_step": base["step"]}
    d0, d1 = eval_path(train_dir, base), eval_path(train_dir, point)
    items = paired_items(d0, d1, task) if d0 is not None and d1 is not None else None
    if items and items[0]:
        value, lo, hi = gap_closure(*items)
        out.update(value=_clean(value), ci_low=_clean(lo), ci_high=_clean(hi), n_items=len(items[0]))
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


def rewrite_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    """Replace a JSONL file's content atomically (temp file + rename)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def truncate_after(path: Path, step: int) -> None:
    """Drop lines after `step` (a resumed run retraces them) and duplicate steps, atomically."""
    if not path.is_file():
        return
    raw = read_jsonl(path, repair=True)
    keep = [r for r in read_curve(path) if r["step"] <= step]
    if len(keep) != len(raw):
        rewrite_jsonl(path, keep)


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


def accuracies(tasks: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """task -> view -> accuracy, from a curve point's `tasks` (JSON objects) or the report's parsed blocks
    (objects with `.views` of `.accuracy`)."""
    def views(res: Any) -> dict[str, Any]:
        return res.get("views", {}) if isinstance(res, dict) else res.views

    return {t: {v: s.get("accuracy") if isinstance(s, dict) else s.accuracy for v, s in views(res).items()}
            for t, res in tasks.items()}


def collapse_warnings(points: list[dict[str, Any]], point: dict[str, Any], threshold: float) -> list[str]:
    """Crop (and holdout full) accuracy drops of more than `threshold` points since step 0."""
    base = next((p for p in points if p["step"] == 0), None)
    if base is None or point["step"] == 0:
        return []
    return [f"{task}/{view} accuracy fell {then - now:.1f} points below step 0 ({then:.1f} -> {now:.1f}): "
            "the teacher may be collapsing (try teacher=frozen, a lower lr, or anchor_weight > 0)"
            for task, view, then, now in accuracy_drops(accuracies(base.get("tasks", {})),
                                                        accuracies(point.get("tasks", {})), threshold)]


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
