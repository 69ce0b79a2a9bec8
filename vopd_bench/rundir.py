"""The run directory (a contract): config.json, samples/<task>/<view>.jsonl, results.json, and for a staged
view (`self_zoom`) its first stage's answers in stages/<task>/<view>.jsonl.

`RunDir` is the only reader and writer of these files, through the typed records of `vopd_bench.schema`
(`RunConfig`, `SampleRecord`, `Results`); files of earlier releases (no `version`) read the same.

Sample files are append-only JSONL, flushed and fsynced per batch. A run killed mid-write leaves at
most one partial last line, which is cut off on resume; records are keyed by item id, so nothing is
recomputed and nothing is duplicated. With several ranks each writes `<view>.rank<R>.jsonl` and
rank 0 merges them into `<view>.jsonl`.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from vopd_bench.errors import UserError
from vopd_bench.runtime import append_jsonl, atomic_write_json, atomic_write_jsonl, read_json, read_jsonl
from vopd_bench.schema import Results, RunConfig, SampleRecord, check_tasks

__all__ = ["RunDir"]
log = logging.getLogger(__name__)


class RunDir:
    """A run directory on disk."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def results_path(self) -> Path:
        return self.path / "results.json"

    def samples_path(self, task: str, view: str, rank: int | None = None, kind: str = "samples") -> Path:
        """samples/<task>/<view>.jsonl (this rank's file with `rank`); `kind="stages"`: a staged view's first
        stage (kept apart, so a resumed run never redoes a finished first stage)."""
        name = f"{view}.jsonl" if rank is None else f"{view}.rank{rank}.jsonl"
        return self.path / kind / task / name

    # ------------------------------------------------------------------ config.json
    def read_config(self) -> RunConfig | None:
        """config.json, or None when there is none; a file that is not a JSON object is a `UserError`."""
        raw = read_json(self.config_path, missing_ok=True)
        return None if raw is None else RunConfig.from_dict(raw)

    def check_or_write_config(self, config: RunConfig, overwrite: bool) -> None:
        """Write `config`, refusing to mix runs: an existing run with another `identity` needs --overwrite
        (which clears it); with the same identity, the tasks recorded by earlier invocations are kept."""
        old = self.read_config()
        if old is not None:
            diff = _diff(old.identity, config.identity)
            if diff and not overwrite:
                raise UserError(
                    f"{self.path} holds a run with a different configuration ({'; '.join(diff[:3])}); "
                    "use another --out or pass --overwrite"
                )
            if diff and overwrite:
                self.clear()
            else:
                old_tasks = old.identity.get("tasks", {})
                config.tasks = {**old.tasks, **config.tasks}
                config.views = {**old.views, **config.views}  # every invocation's tasks keep their views
                config.identity = {**config.identity, "tasks": {**old_tasks, **config.identity.get("tasks", {})}}
        atomic_write_json(self.config_path, config.to_dict())

    def clear(self) -> None:
        shutil.rmtree(self.path / "samples", ignore_errors=True)
        shutil.rmtree(self.path / "stages", ignore_errors=True)
        for f in (self.results_path, self.config_path):
            f.unlink(missing_ok=True)

    # ------------------------------------------------------------------ results.json
    def read_results(self, tolerant: bool = False) -> Results | None:
        """results.json, or None when there is none. A corrupt file is a `UserError`, or with `tolerant` reads
        as None (an eval then recomputes it from the samples)."""
        try:
            raw = read_json(self.results_path, missing_ok=True)
            if raw is None:
                return None
            return Results.from_dict({**raw, "tasks": check_tasks(raw.get("tasks"), "tasks", self.results_path)})
        except (UserError, TypeError, ValueError, AttributeError) as e:
            if tolerant:
                log.warning("%s: unreadable (%s); it is recomputed", self.results_path, e)
                return None
            if isinstance(e, UserError):
                raise
            raise UserError(f"{self.results_path}: not a results file ({e})") from None

    def write_results(self, results: Results) -> None:
        atomic_write_json(self.results_path, results.to_dict())

    # ------------------------------------------------------------------ samples
    def load_records(self, task: str, view: str, repair: bool = False, kind: str = "samples") -> dict[str, dict[str, Any]]:
        """Finished records of a task/view by item id (main file plus any rank files), as plain dicts.
        A retryable error is kept only while nothing better arrives for its item."""
        recs: dict[str, dict[str, Any]] = {}
        main = self.samples_path(task, view, kind=kind)
        for p in [main, *sorted(main.parent.glob(f"{view}.rank*.jsonl"))]:
            for r in read_jsonl(p, repair=repair):
                if r.get("retryable") and r.get("error"):
                    recs.setdefault(r["id"], r)
                else:
                    recs[r["id"]] = r
        return recs

    def samples(self, task: str, view: str, repair: bool = False) -> dict[str, SampleRecord]:
        """`load_records` as typed records."""
        return {k: SampleRecord.from_dict(r) for k, r in self.load_records(task, view, repair).items()}

    def append_samples(self, task: str, view: str, records: list[SampleRecord], rank: int | None = None) -> None:
        """Append records durably to the view's sample file (this rank's file when `rank` is given)."""
        append_jsonl(self.samples_path(task, view, rank), [r.to_dict() for r in records])

    def stage_records(self, task: str, view: str, repair: bool = False) -> dict[str, dict[str, Any]]:
        """A staged view's finished first-stage answers by item id (every rank's file), as plain dicts."""
        return self.load_records(task, view, repair, kind="stages")

    def append_stage(self, task: str, view: str, rows: list[dict[str, Any]], rank: int | None = None) -> None:
        """Append first-stage answers durably (this rank's file when `rank` is given)."""
        append_jsonl(self.samples_path(task, view, rank, kind="stages"), rows)

    def write_samples(self, task: str, view: str, records: list[SampleRecord]) -> None:
        """Replace the view's sample file at once (a conversion, e.g. an lmms-eval import)."""
        atomic_write_jsonl(self.samples_path(task, view), [r.to_dict() for r in records])

    def merge_ranks(self, task: str, view: str, order: list[str]) -> None:
        """Fold rank files into `<view>.jsonl` in item order (atomic), then delete them."""
        parts = sorted(self.samples_path(task, view).parent.glob(f"{view}.rank*.jsonl"))
        if not parts:
            return
        recs = self.load_records(task, view, repair=True)
        pos = {k: i for i, k in enumerate(order)}
        rows = sorted(recs.values(), key=lambda r: (pos.get(r["id"], len(pos)), r["id"]))
        atomic_write_jsonl(self.samples_path(task, view), rows)
        for p in parts:
            p.unlink()


def _diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{k}.")
        elif va != vb and not (prefix == "tasks." and (k not in a or k not in b)):
            out.append(f"{prefix}{k}: {va!r} -> {vb!r}")
    return out
