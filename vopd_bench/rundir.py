"""The run directory (a contract): config.json, samples/<task>/<view>.jsonl, results.json.

Sample files are append-only JSONL, flushed and fsynced per batch. A run killed mid-write leaves at
most one partial last line, which is cut off on resume; records are keyed by item id, so nothing is
recomputed and nothing is duplicated. With several ranks each writes `<view>.rank<R>.jsonl` and
rank 0 merges them into `<view>.jsonl`.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from vopd_bench.errors import UserError

log = logging.getLogger(__name__)


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write JSON via a temp file + rename, so a reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=False, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_jsonl(path: Path, repair: bool = False) -> list[dict[str, Any]]:
    """Records of a JSONL file; a torn last line (from a kill) is dropped, and cut off if `repair`."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    out: list[dict[str, Any]] = []
    good_end = 0
    pos = 0
    for line in data.splitlines(keepends=True):
        pos += len(line)
        if not line.endswith(b"\n"):
            break  # torn tail
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                if pos == len(data):
                    break
                raise UserError(f"{path}: corrupt record at byte {pos - len(line)}") from None
        good_end = pos
    if good_end < len(data):
        log.warning("%s: dropping a partial last record (%d bytes) left by an interrupted run", path, len(data) - good_end)
        if repair:
            with path.open("r+b") as f:
                f.truncate(good_end)
    return out


def append_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    """Append records durably (one write, flush, fsync)."""
    if not records:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records)
    with path.open("a", encoding="utf-8") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())


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

    def samples_path(self, task: str, view: str, rank: int | None = None) -> Path:
        name = f"{view}.jsonl" if rank is None else f"{view}.rank{rank}.jsonl"
        return self.path / "samples" / task / name

    def read_config(self) -> dict[str, Any] | None:
        if not self.config_path.is_file():
            return None
        try:
            return json.loads(self.config_path.read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"{self.config_path}: not valid JSON ({e.msg})") from None

    def check_or_write_config(self, config: dict[str, Any], identity: dict[str, Any], overwrite: bool) -> None:
        """Refuse to mix runs: an existing run with another identity needs --overwrite (which clears it)."""
        old = self.read_config()
        if old is not None:
            diff = _diff(old.get("identity", {}), identity)
            if diff and not overwrite:
                raise UserError(
                    f"{self.path} holds a run with a different configuration ({'; '.join(diff[:3])}); "
                    "use another --out or pass --overwrite"
                )
            if diff and overwrite:
                self.clear()
            else:  # same identity: keep the tasks recorded by earlier invocations
                config = {**config, "tasks": {**old.get("tasks", {}), **config.get("tasks", {})}}
                old_tasks = old.get("identity", {}).get("tasks", {})
                identity = {**identity, "tasks": {**old_tasks, **identity.get("tasks", {})}}
        atomic_write_json(self.config_path, {**config, "identity": identity})

    def clear(self) -> None:
        import shutil

        for sub in ("samples",):
            shutil.rmtree(self.path / sub, ignore_errors=True)
        for f in (self.results_path, self.config_path):
            f.unlink(missing_ok=True)

    def load_records(self, task: str, view: str, repair: bool = False) -> dict[str, dict[str, Any]]:
        """Finished records of a task/view by item id (main file plus any rank files)."""
        recs: dict[str, dict[str, Any]] = {}
        paths = [self.samples_path(task, view)] + sorted(self.samples_path(task, view).parent.glob(f"{view}.rank*.jsonl"))
        for p in paths:
            for r in read_jsonl(p, repair=repair):
                if r.get("retryable") and r.get("error"):
                    recs.setdefault(r["id"], r)  # keep only if nothing better arrives
                else:
                    recs[r["id"]] = r
        return recs

    def merge_ranks(self, task: str, view: str, order: list[str]) -> None:
        """Fold rank files into `<view>.jsonl` in item order (atomic), then delete them."""
        parts = sorted(self.samples_path(task, view).parent.glob(f"{view}.rank*.jsonl"))
        if not parts:
            return
        recs = self.load_records(task, view, repair=True)
        pos = {k: i for i, k in enumerate(order)}
        rows = sorted(recs.values(), key=lambda r: (pos.get(r["id"], len(pos)), r["id"]))
        main = self.samples_path(task, view)
        tmp = main.with_suffix(".jsonl.tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, main)
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
