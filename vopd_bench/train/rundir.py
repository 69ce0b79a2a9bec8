"""A training run's directory: `config.json`, `curve.jsonl` (one `schema.CurvePoint` per scored step),
`evals/step-N/` (each an ordinary eval run dir) and `checkpoints/`.

`TrainRun` is the only reader and writer of curve.jsonl. Reading validates every line: a problem becomes a
one-line `UserError` naming the file and line (a torn last line, from a run still writing or killed, is skipped
with a warning); `schema.check_tasks` validates each line's task blocks, as it does results.json's.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vopd_bench.runtime import append_jsonl, atomic_write_json, atomic_write_jsonl, iter_jsonl, read_json
from vopd_bench.schema import CurvePoint, TrainRunConfig, check_number, check_object, check_tasks

log = logging.getLogger(__name__)
CURVE = "curve.jsonl"
VIEW_KEYS = ("n", "accuracy", "ci_low", "ci_high", "parse_failure_rate")  # what a curve line records per view
GAP_KEYS = ("value", "ci_low", "ci_high", "p_value", "n_pairs")


class TrainRun:
    """The directory of one training run."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    @property
    def curve_path(self) -> Path:
        return self.path / CURVE

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    def read_config(self) -> TrainRunConfig | None:
        """config.json when it is a training run's (kind "train"), else None; a corrupt file is a `UserError`."""
        raw = read_json(self.config_path, missing_ok=True)
        return TrainRunConfig.from_dict(raw) if raw is not None and raw.get("kind") == "train" else None

    def write_config(self, config: TrainRunConfig) -> None:
        atomic_write_json(self.config_path, config.to_dict())

    def step_dir(self, step: int) -> Path:
        """Where the trainer writes the eval run of checkpoint `step`."""
        return self.path / "evals" / f"step-{step}"

    def eval_dir(self, point: CurvePoint) -> Path | None:
        """A point's eval run dir: `evals/<its name>` under this run (so a moved or copied run reads its own), else
        as recorded (absolute, or relative to the cwd of training or to this dir); None when none exists."""
        if not point.eval_dir:
            return None
        d = Path(point.eval_dir)
        for cand in (self.path / "evals" / d.name, d, self.path / d):
            if cand.is_dir():
                return cand
        return None

    def curve(self) -> list[CurvePoint]:
        """The scored checkpoints (see `read_curve`); [] before the first."""
        return read_curve(self.curve_path) if self.curve_path.is_file() else []

    def append(self, point: CurvePoint) -> None:
        append_jsonl(self.curve_path, [curve_line(point)])

    def truncate_after(self, step: int) -> None:
        """Drop lines after `step` (a resumed run retraces them) and repeated steps, atomically; the lines kept are
        rewritten as read (nothing of an older or newer format is lost)."""
        if not self.curve_path.is_file():
            return
        rows = _rows(self.curve_path)
        by_step = {int(r["step"]): r for _, r in rows}
        keep = [by_step[s] for s in sorted(by_step) if s <= step]
        if len(keep) != len(rows) or _torn(self.curve_path):
            atomic_write_jsonl(self.curve_path, keep)


def curve_line(point: CurvePoint) -> dict[str, Any]:
    """A point as its curve.jsonl line: per view only `VIEW_KEYS`, per gap `GAP_KEYS` (what the curve has always
    recorded), no empty `roles` or `warnings`."""
    d = point.to_dict()
    for t in d["tasks"].values():
        t["views"] = {v: {k: s.get(k) for k in VIEW_KEYS} for v, s in t["views"].items()}
        if t.get("gap") is not None:
            t["gap"] = {k: t["gap"].get(k) for k in GAP_KEYS}
    for key in ("roles", "warnings"):
        if not d[key]:
            del d[key]
    return d


def read_curve(path: Path) -> list[CurvePoint]:
    """The validated points of a curve.jsonl file, sorted by step (a re-scored step keeps its last line)."""
    by_step: dict[int, CurvePoint] = {}
    for i, row in _rows(path):
        where = f"line {i}"
        step = check_number(row.get("step"), f"{where}: step", path, integer=True)
        tasks = check_tasks(row.get("tasks"), f"{where}: tasks", path)
        by_step[step] = CurvePoint.from_dict({**row, "step": step, "tasks": tasks,
                                              "train": row.get("train") if isinstance(row.get("train"), dict) else {}})
    return [by_step[s] for s in sorted(by_step)]


def _rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) of each line; a torn last line is skipped with a warning."""
    return [(i, check_object(row, f"line {i}", path)) for i, row in iter_jsonl(path, torn_ok=True)]


def _torn(path: Path) -> bool:
    data = path.read_bytes()
    return bool(data) and not data.endswith(b"\n")
