"""Sample records → the results of a run: accuracy per view with CIs (`ViewStats`), the paired gap with a
bootstrap CI and an exact McNemar p-value (`GapStats`), the chance level, the same per category
(`TaskResult`), and an average over tasks (`Results`)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vopd_bench.circular import base_id, circular_accuracy
from vopd_bench.errors import UserError
from vopd_bench.items import LETTERS
from vopd_bench.schema import GapStats, Results, SampleRecord, TaskResult, ViewStats
from vopd_bench.stats import cluster_mean_ci, mcnemar_exact, paired_bootstrap, paired_counts
from vopd_bench.tasks import get_task

DEFAULT_PROTOCOL = "vopd-bench"

ByView = Mapping[str, Sequence[SampleRecord]]


def view_stats(recs: Sequence[SampleRecord], n_skipped: int = 0) -> ViewStats:
    """n, accuracy, 95% CI, parse failures (responses cut off inside their reasoning by the token limit
    counted apart, as `truncated`), verdicts left to a judge, errors and mean visual tokens for one view."""
    ok = [r for r in recs if not r.error]
    n = len(ok)
    correct = [float(bool(r.correct)) for r in ok]
    groups = [r.group or r.id for r in ok]
    clustered = len(set(groups)) < n
    lo, hi = cluster_mean_ci(correct, groups if clustered else None) if n else (float("nan"), float("nan"))
    truncated = sum(1 for r in ok if r.truncated) if any(r.truncated is not None for r in ok) else None
    pf = sum(1 for r in ok if r.parsed is None and not r.truncated)
    undecided = (sum(1 for r in ok if r.verdicts and r.verdicts.get(r.protocol or DEFAULT_PROTOCOL, False) is None)
                 if any(r.verdicts is not None for r in ok) else None)  # None: records from before protocols
    vt = [r.visual_tokens for r in recs if r.visual_tokens is not None]
    judged = [r for r in ok if (r.extra or {}).get("judge")]
    both = [r for r in judged if (r.verdicts or {}).get(DEFAULT_PROTOCOL) is not None]
    agree = sum(1 for r in both if r.verdicts[DEFAULT_PROTOCOL] == r.correct) / len(both) if both else None
    circ, circ_n = None, None
    if recs and all(base_id(r.id) != r.id for r in recs):  # --circular: every record is a rotation
        circ, circ_n = circular_accuracy([r.to_dict() for r in recs])
    return ViewStats(
        n=n, accuracy=float(np.mean(correct)) if n else float("nan"), ci_low=lo, ci_high=hi, parse_failures=pf,
        parse_failure_rate=pf / n if n else float("nan"), errors=len(recs) - n, skipped_no_box=n_skipped,
        truncated=truncated, undecided=undecided, visual_tokens=float(np.mean(vt)) if vt else None,
        judged=len(judged) if judged else None, judge_agreement=agree, circular_accuracy=circ, circular_n=circ_n,
        grounding=grounding_stats(ok),
    )


def grounding_stats(recs: Sequence[SampleRecord]) -> dict[str, Any] | None:
    """The self_zoom view's first stage over records answered without error: n, fall-backs to the full image
    (no usable box), mean IoU with the gold box and the share >= 0.5 (items with one), mean generated tokens
    of both stages; None for any other view."""
    facts = [(r, (r.extra or {}).get("self_zoom")) for r in recs]
    facts = [(r, f) for r, f in facts if f is not None]
    if not facts:
        return None
    ious = [f["iou"] for _, f in facts if f.get("iou") is not None]
    toks = [(r.n_tokens or 0) + (f.get("n_tokens") or 0) for r, f in facts]
    return {
        "n": len(facts),
        "fallback": sum(1 for _, f in facts if f.get("fallback")),
        "iou_n": len(ious),
        "iou_mean": round(float(np.mean(ious)), 4) if ious else None,
        "iou_ge_0_5": round(sum(1 for x in ious if x >= 0.5) / len(ious), 4) if ious else None,
        "tokens_mean": round(float(np.mean(toks)), 2),
    }


def gap_stats(full: Sequence[SampleRecord], crop: Sequence[SampleRecord], seed: int = 0) -> GapStats:
    """Paired gap crop − full in points over items answered (without error) in both views."""
    f = {r.id: r for r in full if not r.error}
    c = {r.id: r for r in crop if not r.error}
    ids = [i for i in f if i in c]
    if not ids:
        return GapStats(n_pairs=0)
    a = [float(bool(f[i].correct)) for i in ids]
    b = [float(bool(c[i].correct)) for i in ids]
    groups = [f[i].group or i for i in ids]
    clustered = len(set(groups)) < len(ids)
    lo, hi = paired_bootstrap(a, b, groups if clustered else None, seed=seed)
    only_full, only_crop = paired_counts(a, b)
    return GapStats(
        value=100.0 * (np.mean(b) - np.mean(a)), ci_low=100.0 * lo, ci_high=100.0 * hi,
        p_value=mcnemar_exact(only_crop, only_full), n_pairs=len(ids), crop_only_correct=only_crop,
        full_only_correct=only_full, clustered=clustered,
    )


def chance_level(recs: Sequence[SampleRecord]) -> float | None:
    """Expected accuracy of a uniform guess on these records' items, or None when unknown (free text).

    Yes/no answers: 1/2. Option letters: the mean of 1/(number of options) -- each record's `n_options`
    where every record has one, else the count implied by the furthest letter among the gold and parsed
    answers (a lower bound on the number of options, so chance is never understated).
    """
    answers = {str(r.answer or "").strip() for r in recs}
    if not recs or not all(answers):
        return None
    if {a.lower() for a in answers} <= {"yes", "no"}:
        return 0.5
    if all(r.n_options for r in recs):
        return float(np.mean([1 / r.n_options for r in recs if r.n_options]))
    letters = {a.upper() for a in answers} | {str(r.parsed) for r in recs if r.parsed}
    if not letters <= set(LETTERS):
        return None
    return 1 / (1 + max(LETTERS.index(x) for x in letters))


def _block(by_view: ByView, skipped: Mapping[str, int], seed: int) -> TaskResult:
    res = TaskResult(views={v: view_stats(r, skipped.get(v, 0)) for v, r in by_view.items()})
    res.chance = chance_level([r for recs in by_view.values() for r in recs if not r.error])
    if "full" in by_view and "crop" in by_view:
        res.gap = gap_stats(by_view["full"], by_view["crop"], seed)
    return res


def task_result(by_view: ByView, skipped: Mapping[str, int] | None = None, seed: int = 0,
                task: str | None = None) -> TaskResult:
    """Results of one task: overall block plus one block per category, and (given the `task` name, for
    records that carry verdicts) each protocol's accuracy and aggregate metrics per view."""
    res = _block(by_view, skipped or {}, seed)
    cats: dict[str, dict[str, list[SampleRecord]]] = defaultdict(lambda: defaultdict(list))
    for v, recs in by_view.items():
        for r in recs:
            if r.category is not None:
                cats[str(r.category)][v].append(r)
    if cats:
        res.categories = {c: _block(dict(bv), {}, seed) for c, bv in sorted(cats.items())}
    if task is not None:
        res.protocols = protocol_blocks(task, by_view)
    return res


def protocol_rows(recs: Sequence[SampleRecord], name: str) -> list[dict[str, Any]]:
    """What protocol `name`'s aggregation reads of each record answered without error (its verdict, what it
    read, the gold answer, category, group and the record's facets)."""
    rows = []
    for r in recs:
        if r.error or not r.verdicts or name not in r.verdicts:
            continue
        parsed = (r.parsed_by or {}).get(name, r.parsed)
        rows.append({"correct": r.verdicts[name], "parsed": parsed, "prediction": parsed, "answer": r.answer,
                     "category": r.category, "group": r.group, **(r.facets or {})})
    return rows


def protocol_blocks(task: str, by_view: ByView) -> dict[str, dict[str, Any]] | None:
    """protocol -> view -> {n, accuracy (decided verdicts), undecided, metrics, same_prompt}: the same
    responses under every protocol. `same_prompt` is false where that protocol would have asked with
    another prompt than the one these responses answered (its numbers then only re-score these responses)."""
    from vopd_bench import presets

    names = sorted({n for recs in by_view.values() for r in recs for n in (r.verdicts or {})})
    if not names:
        return None
    asked = {r.prompt_hash for recs in by_view.values() for r in recs if r.prompt_hash}
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        try:
            proto = presets.load(name)
            same = proto.apply(get_task(task)).prompt.hash() in asked
        except UserError:  # a protocol of a newer release or a task spec file no longer there
            proto, same = None, None
        block: dict[str, Any] = {}
        for view, recs in by_view.items():
            rows = protocol_rows(recs, name)
            decided = [r for r in rows if r["correct"] is not None]
            right = sum(1 for r in decided if r["correct"])
            block[view] = {
                "n": len(rows), "undecided": len(rows) - len(decided),
                "accuracy": right / len(decided) if decided else None,  # over the verdicts its rules decided
                # bounds over every row: undecided (judge) verdicts all wrong / all right
                "accuracy_low": right / len(rows) if rows else None,
                "accuracy_high": (right + len(rows) - len(decided)) / len(rows) if rows else None,
                "metrics": proto.aggregate(task, rows) if proto is not None else {},
            }
        out[name] = {"same_prompt": same, "views": block}
    return out


def average(tasks: Mapping[str, TaskResult]) -> dict[str, Any]:
    """Unweighted mean over tasks of each view's accuracy and of the gap (tasks lacking it are left out)."""
    views: dict[str, list[float]] = defaultdict(list)
    gaps: list[float] = []
    for t in tasks.values():
        for v, s in t.views.items():
            if s.n:
                views[v].append(s.accuracy)
        if t.gap is not None and t.gap.value is not None:
            gaps.append(t.gap.value)
    return {
        "views": {v: {"accuracy": float(np.mean(a)), "n_tasks": len(a)} for v, a in views.items()},
        "gap": {"value": float(np.mean(gaps)), "n_tasks": len(gaps)} if gaps else None,
    }


def build_results(tasks: Mapping[str, TaskResult], model: str | None, backend: str | None,
                  views: Mapping[str, list[str]], limit: int | None, protocol: str | None = None) -> Results:
    """results.json: the tasks, their average and what was run (`complete` is added by `resume.remember`)."""
    return Results(tasks=dict(tasks), average=average(tasks), model=model, backend=backend, views=dict(views),
                   limit=limit, protocol=protocol)
