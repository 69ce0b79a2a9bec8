"""The vopd-bench rules (`vopd_bench.scoring`): reasoning stripped, one stated answer or a parse failure;
its aggregations add the benchmarks' headline metrics (MMVP pair accuracy, MMStar mean over l2
categories, POPE precision/recall/F1/yes ratio, HR-Bench single/cross/average, CV-Bench 2D/3D mean)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from vopd_bench.grading import ItemFacts, Verdict
from vopd_bench.scoring import score


def grade(kind: str | None, response: str, item: ItemFacts) -> Verdict:
    parsed, correct = score(item.scorer, response, item.answer, list(item.options) if item.options else None)
    return Verdict(parsed, correct, facets={"prediction": parsed} if kind == "pope" else {})


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def group_mean(rows: list[dict[str, Any]], key: str) -> float:
    """Unweighted mean over the groups `key` of each group's accuracy."""
    groups: dict[Any, list[float]] = defaultdict(list)
    for r in rows:
        groups[r.get(key)].append(float(bool(r["correct"])))
    return mean([mean(v) for v in groups.values()])


def pair_accuracy(rows: list[dict[str, Any]]) -> float:
    """Share of complete pairs (MMVP: two questions on one image pair) with both answers right."""
    pairs: dict[Any, list[bool]] = defaultdict(list)
    for r in rows:
        pairs[r.get("pair")].append(bool(r["correct"]))
    full = [v for v in pairs.values() if len(v) == 2]
    return mean([float(all(v)) for v in full])


def yesno_metrics(pred: list[str | None], gold: list[str]) -> dict[str, float]:
    """Accuracy, precision/recall/F1 of "yes", and the share of "yes" predictions."""
    tp = sum(1 for p, g in zip(pred, gold) if p == "yes" and g == "yes")
    fp = sum(1 for p, g in zip(pred, gold) if p == "yes" and g == "no")
    fn = sum(1 for p, g in zip(pred, gold) if p != "yes" and g == "yes")
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {"accuracy": mean([float(p == g) for p, g in zip(pred, gold)]), "precision": precision, "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "yes_ratio": mean([float(p == "yes") for p in pred])}


def aggregate(kind: str | None, rows: list[dict[str, Any]]) -> dict[str, float]:
    rows = [r for r in rows if r.get("correct") is not None]
    if not rows:
        return {}
    acc = mean([float(bool(r["correct"])) for r in rows])
    if kind == "mmvp":
        return {"accuracy": acc, "pair_accuracy": pair_accuracy(rows)}
    if kind == "mmstar":
        return {"accuracy": acc, "l2_category_mean": group_mean(rows, "l2_category")}
    if kind == "pope":
        return yesno_metrics([r.get("prediction") for r in rows], [str(r["answer"]).lower() for r in rows])
    if kind == "hrbench":
        out = {"average": group_mean(rows, "cycle")}
        for cat in ("single", "cross"):
            sub = [r for r in rows if str(r.get("category")) == cat]
            if sub:
                out[cat] = group_mean(sub, "cycle")
        return out
    if kind == "cvbench":
        d2 = [r for r in rows if r.get("type") == "2D"]
        d3 = [r for r in rows if r.get("type") == "3D"]
        out = {"accuracy": acc}
        if d2 and d3:
            out["2d_3d_mean"] = (group_mean(d2, "_") + group_mean(d3, "_")) / 2
        return out
    return {}
