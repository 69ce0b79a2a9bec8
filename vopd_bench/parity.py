"""Backend parity: the same items through two backends (e.g. HF vs vLLM), compared item by item.

`run_parity` evaluates both sides into `<out>/a-<backend>` and `<out>/b-<backend>` (ordinary,
resumable run directories), then `compare_runs` reports, per task and view, how often the parsed
answers and raw responses agree, both accuracies and their difference, the discordant-correctness
counts with an exact McNemar p, and the gap (crop − full) on each side. The report goes to
`<out>/parity.json`.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vopd_bench.backends import BackendConfig
from vopd_bench.rundir import RunDir
from vopd_bench.runtime import atomic_write_json
from vopd_bench.schema import SampleRecord
from vopd_bench.stats import mcnemar_exact, paired_counts
from vopd_bench.views import VIEWS

log = logging.getLogger(__name__)
N_EXAMPLES = 10  # disagreements quoted per task/view


@dataclass
class ParityConfig:
    """Two backends on the same tasks, views and items."""

    tasks: list[str]
    a: BackendConfig
    b: BackendConfig
    out: str = "runs/parity"
    views: list[str] | None = None
    data: dict[str, str] = field(default_factory=dict)
    limit: int | None = None
    seed: int = 0
    max_new_tokens: int | None = None
    overwrite: bool = False
    progress: bool = True

    def side_dirs(self) -> tuple[Path, Path]:
        root = Path(self.out)
        return root / f"a-{self.a.backend}", root / f"b-{self.b.backend}"


def run_side(cfg: ParityConfig, bcfg: BackendConfig, out: Path) -> None:
    """Evaluate one side into its run directory, then release the backend (engines, GPU memory)."""
    from vopd_bench.evaluate import EvalConfig, Evaluator

    ecfg = EvalConfig(
        tasks=list(cfg.tasks), backend=bcfg, out=str(out), views=cfg.views, data=dict(cfg.data), limit=cfg.limit,
        seed=cfg.seed, max_new_tokens=cfg.max_new_tokens, overwrite=cfg.overwrite, progress=cfg.progress,
    )
    ev = Evaluator(ecfg)
    try:
        ev.run_all()
    finally:
        close = getattr(ev.backend, "close", None)
        if callable(close):
            close()
        del ev
        gc.collect()


def run_parity(cfg: ParityConfig) -> dict[str, Any]:
    """Run both sides (resuming whatever is already done) and write `<out>/parity.json`."""
    from vopd_bench.backends import preflight

    dir_a, dir_b = cfg.side_dirs()
    for bcfg in (cfg.a, cfg.b):  # both sides checked before either runs: a bad side b wastes no side-a run
        preflight(bcfg)
    for bcfg, out in ((cfg.a, dir_a), (cfg.b, dir_b)):
        log.info("parity: running %s into %s", bcfg.backend, out)
        run_side(cfg, bcfg, out)
    report = compare_runs(dir_a, dir_b)
    atomic_write_json(Path(cfg.out) / "parity.json", report)
    return report


def compare_records(ra: dict[str, SampleRecord], rb: dict[str, SampleRecord]) -> dict[str, Any]:
    """Agreement and accuracy of two backends' records of one task/view (keyed by item id)."""
    ids = [i for i in ra if i in rb]
    ok = [i for i in ids if not ra[i].error and not rb[i].error]
    ca = [bool(ra[i].correct) for i in ids]
    cb = [bool(rb[i].correct) for i in ids]
    only_a, only_b = paired_counts(ca, cb)
    n = len(ids)
    acc_a = sum(ca) / n if n else None
    acc_b = sum(cb) / n if n else None
    differ = [i for i in ok if ra[i].parsed != rb[i].parsed or ra[i].response != rb[i].response]
    return {
        "n": n,
        "n_compared": len(ok),
        "errors_a": sum(bool(ra[i].error) for i in ids),
        "errors_b": sum(bool(rb[i].error) for i in ids),
        "answer_agreement": _frac(sum(ra[i].parsed == rb[i].parsed for i in ok), len(ok)),
        "text_agreement": _frac(sum(ra[i].response == rb[i].response for i in ok), len(ok)),
        "correct_agreement": _frac(n - only_a - only_b, n),
        "accuracy_a": acc_a,
        "accuracy_b": acc_b,
        "accuracy_diff": None if acc_a is None else round(100 * (acc_b - acc_a), 4),  # points, b − a
        "only_a_correct": only_a,
        "only_b_correct": only_b,
        "mcnemar_p": mcnemar_exact(only_a, only_b),
        "disagreements": [
            {"id": i, "response_a": ra[i].response, "response_b": rb[i].response,
             "parsed_a": ra[i].parsed, "parsed_b": rb[i].parsed}
            for i in differ[:N_EXAMPLES]
        ],
    }


def _frac(k: int, n: int) -> float | None:
    return k / n if n else None


def _views(run: RunDir, task: str) -> list[str]:
    d = run.path / "samples" / task
    found = {p.name.split(".")[0] for p in d.glob("*.jsonl")} if d.is_dir() else set()
    return sorted(found, key=lambda v: (VIEWS.index(v) if v in VIEWS else len(VIEWS), v))


def _gap(views: dict[str, dict[str, Any]], side: str) -> float | None:
    if "full" not in views or "crop" not in views:
        return None
    full, crop = views["full"][f"accuracy_{side}"], views["crop"][f"accuracy_{side}"]
    return None if full is None or crop is None else round(100 * (crop - full), 4)


def compare_task(run_a: RunDir, run_b: RunDir, task: str) -> dict[str, Any]:
    """Per view comparison plus each side's gap (crop − full, points, on the common items)."""
    views = {}
    for view in _views(run_a, task):
        if view in _views(run_b, task):
            views[view] = compare_records(run_a.samples(task, view), run_b.samples(task, view))
    gap_a, gap_b = _gap(views, "a"), _gap(views, "b")
    return {
        "views": views,
        "gap_a": gap_a,
        "gap_b": gap_b,
        "gap_diff": None if gap_a is None or gap_b is None else round(gap_b - gap_a, 4),
    }


def pooled(tasks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Agreement and accuracies pooled over tasks, per view (item-weighted)."""
    out: dict[str, Any] = {}
    for t in tasks.values():
        for view, v in t["views"].items():
            acc = out.setdefault(view, {"n": 0, "n_compared": 0, "_agree": 0.0, "_text": 0.0, "_ca": 0.0, "_cb": 0.0})
            acc["n"] += v["n"]
            acc["n_compared"] += v["n_compared"]
            acc["_agree"] += (v["answer_agreement"] or 0) * v["n_compared"]
            acc["_text"] += (v["text_agreement"] or 0) * v["n_compared"]
            acc["_ca"] += (v["accuracy_a"] or 0) * v["n"]
            acc["_cb"] += (v["accuracy_b"] or 0) * v["n"]
    for acc in out.values():
        n, m = acc["n"], acc["n_compared"]
        acc["answer_agreement"] = _frac(acc.pop("_agree"), m)
        acc["text_agreement"] = _frac(acc.pop("_text"), m)
        acc["accuracy_a"] = _frac(acc.pop("_ca"), n)
        acc["accuracy_b"] = _frac(acc.pop("_cb"), n)
        acc["accuracy_diff"] = None if not n else round(100 * (acc["accuracy_b"] - acc["accuracy_a"]), 4)
    return out


def compare_runs(dir_a: str | Path, dir_b: str | Path) -> dict[str, Any]:
    """The parity report of two run directories over the tasks and views they share."""
    run_a, run_b = RunDir(dir_a), RunDir(dir_b)
    ta = {p.name for p in (run_a.path / "samples").glob("*") if p.is_dir()}
    tb = {p.name for p in (run_b.path / "samples").glob("*") if p.is_dir()}
    tasks = {t: compare_task(run_a, run_b, t) for t in sorted(ta & tb)}
    return {
        "a": {"run": str(run_a.path), "backend": _backend_record(run_a)},
        "b": {"run": str(run_b.path), "backend": _backend_record(run_b)},
        "tasks": tasks,
        "overall": pooled(tasks),
    }


def _backend_record(run: RunDir) -> dict[str, Any] | None:
    cfg = run.read_config()
    return None if cfg is None else cfg.backend


def min_agreement(report: dict[str, Any]) -> float | None:
    """The lowest answer agreement over all tasks and views (None when nothing was compared)."""
    vals = [v["answer_agreement"] for t in report["tasks"].values() for v in t["views"].values()
            if v["answer_agreement"] is not None]
    return min(vals) if vals else None
