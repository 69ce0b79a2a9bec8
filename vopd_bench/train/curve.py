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
    """Append `point` unless its step is already on the curve; returns whether it was written."""
    if any(r["step"] == point["step"] for r in read_curve(path)):
        return False
    append_jsonl(path, [point])
    return True


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


def collapse_warnings(points: list[dict[str, Any]], point: dict[str, Any], threshold: float) -> list[str]:
    """Crop (and holdout full) accuracy drops of more than `threshold` points since step 0."""
    base = next((p for p in points if p["step"] == 0), None)
    if base is None or point["step"] == 0:
        return []
    out = []
    for task, res in point.get("tasks", {}).items():
        for view in ("crop", "full") if "gap" not in res else ("crop",):
            now = res["views"].get(view, {}).get("accuracy")
            then = base.get("tasks", {}).get(task, {}).get("views", {}).get(view, {}).get("accuracy")
            if now is None or then is None:
                continue
            drop = 100.0 * (then - now)
            if drop > threshold:
                out.append(
                    f"{task}/{view} accuracy fell {drop:.1f} points below step 0 ({100 * then:.1f} -> {100 * now:.1f}): "
                    "the teacher may be collapsing (try teacher=frozen, a lower lr, or anchor_weight > 0)"
                )
    return out


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
