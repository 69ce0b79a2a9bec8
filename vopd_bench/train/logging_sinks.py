"""Training logs where people look: `report_to` = tensorboard, wandb or none (besides curve.jsonl and
train_log.jsonl, which are always written).

Per optimizer step: the loss and every objective metric (JSD, entropies, ...), answer entropy, response length,
learning rate, gradient norm, the step time and its phases (`train/*`, `time/*`). Per scored checkpoint: each
task's accuracy per view (`eval/<task>/<view>`, `holdout/<task>/full`), its gap in points and the share of the
base gap closed (`eval/<task>/gap`, `eval/<task>/closure`), and the evaluation time.

Both are optional extras like TRL's (`pip install 'vopd-bench[tensorboard]'` / `[wandb]`): asking for one
that is not installed is a one-line `UserError` before training starts. TensorBoard writes event files to
`<out>/tensorboard/`; W&B follows its own settings (`WANDB_MODE=offline` writes `<out>/wandb/offline-run-*`,
`wandb sync` uploads them later; `WANDB_PROJECT` names the project, default "vopd-bench"), resuming the same
W&B run when the training run resumes. Only the main process logs.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vopd_bench.errors import UserError

log = logging.getLogger(__name__)
SINKS = ("tensorboard", "wandb", "none")
TB_DIR = "tensorboard"
WANDB_ID = "wandb_run_id.txt"


def check_report_to(report_to: Sequence[str]) -> list[str]:
    """The sinks asked for (`none` and repeats dropped); an unknown name or a missing package is a `UserError`."""
    names = [str(n).strip().lower() for n in ([report_to] if isinstance(report_to, str) else report_to)]
    bad = [n for n in names if n not in SINKS]
    if bad:
        raise UserError(f"config key 'report_to': unknown value {bad[0]!r}; choose from {', '.join(SINKS)}")
    wanted = list(dict.fromkeys(n for n in names if n != "none"))
    for name in wanted:
        module = "tensorboard" if name == "tensorboard" else "wandb"
        if importlib.util.find_spec(module) is None:
            raise UserError(f"config key 'report_to': {name} is not installed "
                            f"(pip install 'vopd-bench[{name}]', or drop it from report_to)")
    return wanted


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v


def step_scalars(rec: Mapping[str, Any]) -> dict[str, float]:
    """A train_log.jsonl record as scalars: `train/<key>` for every number, `time/<phase>` and `train/step_s`."""
    out = {f"train/{k}": float(v) for k, v in rec.items() if k != "step" and _number(v)}
    times = rec.get("time") or {}
    out.update({f"time/{k}": float(v) for k, v in times.items() if _number(v)})
    if times:
        out["train/step_s"] = float(sum(v for v in times.values() if _number(v)))
    return out


def point_scalars(point: Mapping[str, Any]) -> dict[str, float]:
    """A curve point (as the trainer builds it) as scalars: accuracy per task and view (percent), gap (points),
    closure (percent of the base gap), under `eval/` for gap tasks and `holdout/` for holdout tasks."""
    from vopd_bench.schema import CurvePoint

    p = CurvePoint.from_dict({k: v for k, v in point.items() if k != "roles"} | {"roles": dict(point.get("roles") or {})})
    out: dict[str, float] = {}
    for task, block in p.tasks.items():
        group = "holdout" if p.role(task) == "holdout" else "eval"
        for view, s in block.views.items():
            if _number(s.accuracy):
                out[f"{group}/{task}/{view}"] = 100.0 * float(s.accuracy)
        if block.gap is not None and _number(block.gap.value):
            out[f"{group}/{task}/gap"] = float(block.gap.value)
        if block.closure is not None and _number(block.closure.value):
            out[f"{group}/{task}/closure"] = 100.0 * float(block.closure.value)
    if _number(p.eval_s):
        out["time/eval_s"] = float(p.eval_s)
    return out


class Sink:
    """Where scalars go; `none` is this base class."""

    def log(self, scalars: Mapping[str, float], step: int) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardSink(Sink):
    def __init__(self, out: Path, resume_step: int = 0) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # a resumed run redoes the steps after its checkpoint: purge what an interrupted run logged past it
        self.writer = SummaryWriter(log_dir=str(out / TB_DIR), purge_step=resume_step or None)

    def log(self, scalars: Mapping[str, float], step: int) -> None:
        for k, v in scalars.items():
            self.writer.add_scalar(k, v, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink(Sink):
    def __init__(self, out: Path, config: Mapping[str, Any]) -> None:
        import os

        import wandb

        id_file = out / WANDB_ID
        run_id = id_file.read_text().strip() if id_file.is_file() else wandb.util.generate_id()
        id_file.write_text(run_id + "\n")
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "vopd-bench"), name=out.name, id=run_id,
                              resume="allow", dir=str(out), config=dict(config), reinit="create_new")
        self.run.define_metric("train/global_step")
        self.run.define_metric("*", step_metric="train/global_step")  # x-axis: the optimizer step, not W&B's counter

    def log(self, scalars: Mapping[str, float], step: int) -> None:
        self.run.log({**scalars, "train/global_step": step})

    def close(self) -> None:
        self.run.finish()


class Sinks:
    """Every sink asked for; the trainer calls `step(rec)` after each optimizer step, `point(point)` after each
    scored checkpoint and `close()` at the end."""

    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = sinks

    def step(self, rec: Mapping[str, Any]) -> None:
        self._log(step_scalars(rec), int(rec["step"]))

    def point(self, point: Mapping[str, Any] | None) -> None:
        if point is not None:
            self._log(point_scalars(point), int(point["step"]))

    def _log(self, scalars: Mapping[str, float], step: int) -> None:
        for s in self.sinks:
            s.log(scalars, step)

    def close(self) -> None:
        for s in self.sinks:
            try:
                s.close()
            except Exception as e:  # a logging service must never lose the training run
                log.warning("closing %s failed: %s", type(s).__name__, e)


def make_sinks(report_to: Sequence[str], out: Path, config: Mapping[str, Any], resume_step: int = 0,
               main: bool = True) -> Sinks:
    """The sinks of `report_to` for the run in `out` (checked on every process; opened on the main one only)."""
    wanted = check_report_to(report_to)
    if not main:
        return Sinks([])
    out.mkdir(parents=True, exist_ok=True)
    sinks: list[Sink] = []
    for name in wanted:
        sinks.append(TensorBoardSink(out, resume_step) if name == "tensorboard" else WandbSink(out, config))
        log.info("training logs also go to %s", name)
    return Sinks(sinks)
