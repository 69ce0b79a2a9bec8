"""lmms-eval sample logs of exported vopd-bench tasks → a vopd-bench run directory.

Each sample line carries lmms-eval's `doc_id` and, as the value of the `vopd_accuracy` metric, the
record our own eval would have written (computed inside lmms-eval by `vopd_bench.lmms.bridge`).
Views are paired by item id; results.json comes from `results.task_result`/`build_results`, so
`vopd-bench report` reads the run like any `vopd-bench eval` run. Logs of earlier releases (records without
`version` or `n_options`) import the same.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vopd_bench import __version__
from vopd_bench.errors import UserError
from vopd_bench.items import Item
from vopd_bench.lmms.bridge import METRIC, region_items
from vopd_bench.protocol import gen_kwargs, load_spec, task_record
from vopd_bench.results import build_results, task_result
from vopd_bench.rundir import RunDir
from vopd_bench.runtime import iter_jsonl
from vopd_bench.schema import RunConfig, SampleRecord
from vopd_bench.views import view_names

log = logging.getLogger(__name__)
SAMPLES_RE = re.compile(r"^(?P<date>.+?)_samples_(?P<task>.+)\.jsonl$")
REQUIRED = ("id", "task", "view", "response", "parsed", "correct")


class NotVopdLog(UserError):
    """A samples file of an lmms-eval task that vopd-bench did not export."""


@dataclass
class SampleLog:
    """One lmms-eval samples file: the records of one task in one view, in doc order."""

    path: Path
    task: str
    view: str
    doc_ids: list[int]
    records: list[SampleRecord]
    lmms: dict[str, Any] = field(default_factory=dict)  # the sibling <date>_results.json, if any

    @property
    def lmms_task(self) -> str | None:
        m = SAMPLES_RE.match(self.path.name)
        return m["task"] if m else None

    @property
    def metadata(self) -> dict[str, Any]:
        cfg = (self.lmms.get("configs") or {}).get(self.lmms_task or "", {})
        meta = cfg.get("metadata")
        return meta if isinstance(meta, dict) else {}


def read_logs(paths: list[str]) -> list[SampleLog]:
    """Sample files named on the command line, or the vopd-bench ones among `*_samples_*.jsonl` under one
    folder (logs of other lmms-eval tasks there are skipped)."""
    if not paths:
        raise UserError("--from-lmms-eval needs sample files (full and crop) or an lmms-eval output folder")
    if len(paths) == 1 and Path(paths[0]).is_dir():
        logs = []
        for p in sorted(Path(paths[0]).rglob("*_samples_*.jsonl")):
            try:
                logs.append(read_log(p))
            except NotVopdLog:
                log.info("%s: not a vopd-bench task; skipped", p)
        if not logs:
            raise UserError(f"{paths[0]}: no sample logs of vopd-bench tasks (*_samples_vopd_*.jsonl); "
                            "run lmms-eval on exported tasks with --log_samples")
        return logs
    for p in paths:
        if not Path(p).is_file():
            raise UserError(f"lmms-eval samples file not found: {p}")
    return [read_log(Path(p)) for p in paths]


def _record(path: Path, ln: int, row: Any) -> tuple[int, SampleRecord]:
    """(doc_id, our record) from one sample line."""
    if not isinstance(row, dict) or "doc_id" not in row:
        raise UserError(f"{path}:{ln}: not an lmms-eval sample (no doc_id)")
    rec = row.get(METRIC)
    if not isinstance(rec, dict) or any(k not in rec for k in REQUIRED):
        raise NotVopdLog(f"{path}:{ln}: no vopd-bench record ({METRIC}); was the task exported by "
                         "`vopd-bench export-lmms-eval`?")
    rec = {k: v for k, v in rec.items() if k != "score"}
    if rec.get("n_tokens") is None and "error" in rec and not rec["error"]:
        counts = row.get("token_counts") or [None]
        first = counts[0] if isinstance(counts, list) else counts
        rec["n_tokens"] = first.get("output_tokens") if isinstance(first, dict) else None
    try:
        doc_id = int(row["doc_id"])
    except (TypeError, ValueError):
        raise UserError(f"{path}:{ln}: doc_id {row['doc_id']!r} is not an integer") from None
    return doc_id, SampleRecord.from_dict(rec)


def read_log(path: Path) -> SampleLog:
    """Parse one samples file; all its records must be one task and one view, each doc once."""
    rows: dict[int, SampleRecord] = {}
    for ln, row in iter_jsonl(path):
        doc_id, rec = _record(path, ln, row)
        if doc_id in rows:
            raise UserError(f"{path}:{ln}: doc_id {doc_id} appears twice (several runs appended to one file?)")
        rows[doc_id] = rec
    if not rows:
        raise UserError(f"{path}: no samples")
    kinds = {(r.task, r.view) for r in rows.values()}
    if len(kinds) > 1:
        raise UserError(f"{path}: records of several tasks/views {sorted(kinds)}")
    task, view = kinds.pop()
    if view not in view_names():
        raise UserError(f"{path}: unknown view {view!r}")
    ids = [r.id for r in rows.values()]
    if len(set(ids)) < len(ids):
        raise UserError(f"{path}: one item id under several doc ids; the log does not match one exported task")
    order = sorted(rows)
    return SampleLog(path, task, view, order, [rows[d] for d in order], _results_json(path))


def _results_json(path: Path) -> dict[str, Any]:
    """lmms-eval's `<date>_results.json` written beside `<date>_samples_<task>.jsonl`, or {}."""
    m = SAMPLES_RE.match(path.name)
    res = path.parent / f"{m['date']}_results.json" if m else None
    if res is None or not res.is_file():
        return {}
    try:
        return json.loads(res.read_text())
    except json.JSONDecodeError:
        log.warning("%s: not valid JSON; model name and task settings not recorded", res)
        return {}


def latest(logs: list[SampleLog]) -> dict[tuple[str, str], SampleLog]:
    """One log per (task, view): the newest by lmms-eval's date prefix (then mtime) when runs repeat."""
    out: dict[tuple[str, str], SampleLog] = {}
    for lg in sorted(logs, key=lambda x: (x.path.name, x.path.stat().st_mtime)):
        key = (lg.task, lg.view)
        if key in out:
            log.warning("%s/%s: several sample logs; using the newest, %s", lg.task, lg.view, lg.path)
        out[key] = lg
    return out


def check_doc_ids(lg: SampleLog, items: list[Item]) -> None:
    """Doc id n of a view must be that view's n-th item of the task (the exported order)."""
    order = region_items(items, lg.view)
    for doc_id, rec in zip(lg.doc_ids, lg.records):
        want = order[doc_id].id if 0 <= doc_id < len(order) else None
        if want != rec.id:
            raise UserError(f"{lg.path}: doc_id {doc_id} is item {want!r} of task {lg.task} in view {lg.view}, "
                            f"but the log has item {rec.id!r}; the log is not from this task/data")


def model_name(lgs: list[SampleLog], override: str | None) -> str:
    """The model label: --model, else lmms-eval's pretrained=/model= argument, else its model name."""
    if override:
        return override
    for lg in lgs:
        cfg = lg.lmms.get("config") or {}
        args = cfg.get("model_args") or ""
        if isinstance(args, str):
            m = re.search(r"(?:^|,)\s*(?:pretrained|model)=([^,]+)", args)
            if m:
                return m.group(1).strip()
        if cfg.get("model"):
            return str(cfg["model"])
    return "lmms-eval"


@dataclass
class Imported:
    """What `gap --from-lmms-eval` turns into a run directory."""

    logs: dict[tuple[str, str], SampleLog]
    model: str
    task_records: dict[str, dict[str, Any]]
    seed: int = 0

    @property
    def tasks(self) -> list[str]:
        return list(dict.fromkeys(t for t, _ in self.logs))

    def views(self, task: str) -> list[str]:
        have = {v for t, v in self.logs if t == task}
        return [v for v in view_names() if v in have]


def load(paths: list[str], task: str | None = None, data: str | None = None, model: str | None = None) -> Imported:
    """Read and check the logs; with `task` (and `data`), check doc ids against the task's items."""
    logs = latest(read_logs(paths))
    records: dict[str, dict[str, Any]] = {}
    for lg in logs.values():
        rec = lg.metadata.get("vopd_record")
        if isinstance(rec, dict):
            records.setdefault(lg.task, rec)
    if task is not None:
        spec = load_spec(task)
        mine = {k: v for k, v in logs.items() if k[0] == spec.name}
        if not mine:
            raise UserError(f"no sample log of task {spec.name} among {', '.join(str(lg.path) for lg in logs.values())}")
        items = spec.load_items(Path(data) if data else None)
        for lg in mine.values():
            check_doc_ids(lg, items)
        records.setdefault(spec.name, task_record(spec, data, gen_kwargs(spec)))
    seeds = {lg.metadata.get("vopd_seed", 0) for lg in logs.values()}
    return Imported(logs, model_name(list(logs.values()), model), records, seed=int(seeds.pop()) if len(seeds) == 1 else 0)


def _config(imp: Imported) -> RunConfig:
    lmms_cfg = next((lg.lmms.get("config") for lg in imp.logs.values() if lg.lmms.get("config")), None) or {}
    backend = {"backend": "lmms-eval", "model": imp.model, "lmms_eval_model": lmms_cfg.get("model"),
               "model_args": lmms_cfg.get("model_args"), "image_budget": None}
    identity = {"model": imp.model, "backend": "lmms-eval", "model_args": backend["model_args"], "seed": imp.seed,
                "tasks": {t: imp.task_records.get(t, {}) for t in imp.tasks}}
    return RunConfig(
        vopd_bench=__version__,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        backend=backend,
        tasks=identity["tasks"],
        views={t: imp.views(t) for t in imp.tasks},
        seed=imp.seed,
        limit=None,
        identity=identity,
        extra={"source": {"lmms_eval_samples": {f"{t}/{v}": str(lg.path) for (t, v), lg in imp.logs.items()}}},
    )


def write_run(imp: Imported, out: str | Path, overwrite: bool = False) -> dict[str, Any]:
    """Write config.json, samples/<task>/<view>.jsonl and results.json (merged with the run's other tasks)."""
    run = RunDir(out)
    run.check_or_write_config(_config(imp), overwrite)
    per_task = {}
    for task in imp.tasks:
        by_view: dict[str, list[SampleRecord]] = {}
        skipped: dict[str, int] = {}
        for view in imp.views(task):
            lg = imp.logs[(task, view)]
            run.write_samples(task, view, lg.records)
            by_view[view] = lg.records
            skipped[view] = int(lg.metadata.get("vopd_skipped_no_box", 0))
        per_task[task] = task_result(by_view, skipped, seed=imp.seed)
    old = run.read_results(tolerant=True)
    old_tasks, old_views = (old.tasks, old.views) if old is not None else ({}, {})
    views = {**old_views, **{t: imp.views(t) for t in imp.tasks}}
    results = build_results({**old_tasks, **per_task}, imp.model, "lmms-eval", views, None)
    run.write_results(results)
    return results.to_dict()


def gap_from_lmms_eval(paths: list[str], out: str | Path, task: str | None = None, data: str | None = None,
                       model: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """The whole import: read, check, write the run directory; returns results.json's content."""
    imp = load(paths, task, data, model)
    for t in imp.tasks:
        if not {"full", "crop"} <= set(imp.views(t)):
            log.warning("task %s: only view(s) %s found; no gap without both full and crop", t, ", ".join(imp.views(t)))
        elif not imp.logs[(t, "full")].records or not _paired(imp, t):
            raise UserError(f"task {t}: the full and crop logs share no item ids "
                            f"({imp.logs[(t, 'full')].path}, {imp.logs[(t, 'crop')].path})")
    return write_run(imp, out, overwrite)


def _paired(imp: Imported, task: str) -> bool:
    full = {r.id for r in imp.logs[(task, "full")].records}
    return any(r.id in full for r in imp.logs[(task, "crop")].records)
