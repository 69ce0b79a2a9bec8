"""Per-sample records → results.json: accuracy per view with CIs, the paired gap with a bootstrap CI
and an exact McNemar p-value, the chance level, the same per category, and an average over tasks."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from vopd_bench.items import LETTERS
from vopd_bench.stats import cluster_mean_ci, mcnemar_exact, paired_bootstrap

Record = dict[str, Any]


def view_stats(recs: list[Record], n_skipped: int = 0) -> dict[str, Any]:
    """n, accuracy, 95% CI, parse failures and errors for one view's records."""
    ok = [r for r in recs if not r.get("error")]
    n = len(ok)
    correct = [float(bool(r["correct"])) for r in ok]
    groups = [r.get("group") or r["id"] for r in ok]
    clustered = len(set(groups)) < n
    lo, hi = cluster_mean_ci(correct, groups if clustered else None) if n else (float("nan"), float("nan"))
    pf = sum(1 for r in ok if r.get("parsed") is None)
    return {
        "n": n,
        "accuracy": float(np.mean(correct)) if n else float("nan"),
        "ci_low": lo,
        "ci_high": hi,
        "parse_failures": pf,
        "parse_failure_rate": pf / n if n else float("nan"),
        "errors": len(recs) - n,
        "skipped_no_box": n_skipped,
    }


def gap_stats(full: list[Record], crop: list[Record], seed: int = 0) -> dict[str, Any]:
    """Paired gap crop − full in points over items answered (without error) in both views."""
    f = {r["id"]: r for r in full if not r.get("error")}
    c = {r["id"]: r for r in crop if not r.get("error")}
    ids = [i for i in f if i in c]
    if not ids:
        return {"value": None, "ci_low": None, "ci_high": None, "p_value": None, "n_pairs": 0}
    a = [float(bool(f[i]["correct"])) for i in ids]
    b = [float(bool(c[i]["correct"])) for i in ids]
    groups = [f[i].get("group") or i for i in ids]
    clustered = len(set(groups)) < len(ids)
    lo, hi = paired_bootstrap(a, b, groups if clustered else None, seed=seed)
    only_crop = sum(1 for x, y in zip(a, b) if y > x)
    only_full = sum(1 for x, y in zip(a, b) if x > y)
    return {
        "value": 100.0 * (np.mean(b) - np.mean(a)),
        "ci_low": 100.0 * lo,
        "ci_high": 100.0 * hi,
        "p_value": mcnemar_exact(only_crop, only_full),
        "n_pairs": len(ids),
        "crop_only_correct": only_crop,
        "full_only_correct": only_full,
        "clustered": clustered,
    }


def chance_level(recs: list[Record]) -> float | None:
    """Expected accuracy of a uniform guess on these records' items, or None when unknown (free text).

    Yes/no answers: 1/2. Option letters: the mean of 1/(number of options) -- each record's `n_options`
    where every record has one, else the count implied by the furthest letter among the gold and parsed
    answers (a lower bound on the number of options, so chance is never understated).
    """
    answers = {str(r.get("answer") or "").strip() for r in recs}
    if not recs or not all(answers):
        return None
    if {a.lower() for a in answers} <= {"yes", "no"}:
        return 0.5
    if all(r.get("n_options") for r in recs):
        return float(np.mean([1 / r["n_options"] for r in recs]))
    letters = {a.upper() for a in answers} | {str(r["parsed"]) for r in recs if r.get("parsed")}
    if not letters <= set(LETTERS):
        return None
    return 1 / (1 + max(LETTERS.index(x) for x in letters))


def _block(by_view: dict[str, list[Record]], skipped: dict[str, int], seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {"views": {v: view_stats(r, skipped.get(v, 0)) for v, r in by_view.items()}}
    out["chance"] = chance_level([r for recs in by_view.values() for r in recs if not r.get("error")])
    if "full" in by_view and "crop" in by_view:
        out["gap"] = gap_stats(by_view["full"], by_view["crop"], seed)
    return out


def task_results(by_view: dict[str, list[Record]], skipped: dict[str, int] | None = None, seed: int = 0) -> dict[str, Any]:
    """Results of one task: overall block plus one block per category."""
    skipped = skipped or {}
    res = _block(by_view, skipped, seed)
    cats: dict[str, dict[str, list[Record]]] = defaultdict(lambda: defaultdict(list))
    for v, recs in by_view.items():
        for r in recs:
            if r.get("category") is not None:
                cats[str(r["category"])][v].append(r)
    if cats:
        res["categories"] = {c: _block(dict(bv), {}, seed) for c, bv in sorted(cats.items())}
    return res


def average(tasks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Unweighted mean over tasks of each view's accuracy and of the gap (tasks lacking it are left out)."""
    views: dict[str, list[float]] = defaultdict(list)
    gaps: list[float] = []
    for t in tasks.values():
        for v, s in t["views"].items():
            if s["n"]:
                views[v].append(s["accuracy"])
        g = t.get("gap")
        if g and g.get("value") is not None:
            gaps.append(g["value"])
    return {
        "views": {v: {"accuracy": float(np.mean(a)), "n_tasks": len(a)} for v, a in views.items()},
        "gap": {"value": float(np.mean(gaps)), "n_tasks": len(gaps)} if gaps else None,
    }


def build_results(per_task: dict[str, dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    return {"tasks": per_task, "average": average(per_task), **meta}
