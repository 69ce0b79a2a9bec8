"""The label-supervised ceiling of a distillation recipe (`vopd-bench reference ceiling`).

The recipe's prompts, steps, batch, optimiser and anchor, trained with `objective: supervised` of the
Vision-OPD trainer (cross-entropy on the gold answers of the full-image prompts) instead of the crop
teacher: what a label-free run of the same budget is judged against. A diagnostic, never part of the demo.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path


def ceiling(recipe: str = "demo", out: str = "runs/ceiling", overrides: Sequence[str] = ()) -> Path:
    """Train `recipe` (with key=value `overrides`) on the gold answers; returns the run directory."""
    from vopd_bench.train import load_config, run_training

    return run_training(load_config(recipe, [*overrides, "objective=supervised"], out=out))


def curve_lines(run: Path) -> list[str]:
    """One line per curve point: the step and each task/view accuracy in percent."""
    from vopd_bench.train.rundir import TrainRun

    lines = []
    for p in TrainRun(run).curve():
        accs = {f"{t}/{v}": round(100 * s.accuracy, 1) for t, r in p.tasks.items()
                for v, s in r.views.items() if s.accuracy is not None}
        lines.append(f"step {p.step:>4}: {json.dumps(accs)}")
    return lines
