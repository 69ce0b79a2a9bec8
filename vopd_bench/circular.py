"""Circular evaluation of multiple choice (MMBench's CircularEval): each question is asked under the N rotations
of its options; it counts as right only if every rotation is answered right. Option-order bias (a model that
prefers a letter) inflates plain accuracy; the circular figure removes it.

`expand(items)` turns each multiple-choice item into its rotations (ids `<id>@c<k>`, the gold letter moved with
its option, all rotations in one statistics group); `circular_scores(records)` folds the records back to one
verdict per question. Items without options (free text, yes/no) pass through unchanged and count as themselves.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from vopd_bench.items import LETTERS, Item

SEP = "@c"


def rotate(item: Item, k: int) -> Item:
    """`item` with its options shifted left by `k` (rotation 0 = as published) and the gold letter moved along."""
    opts = list(item.options or [])
    n = len(opts)
    gold = LETTERS.index(item.answer.strip().upper())
    return replace(
        item,
        id=f"{item.id}{SEP}{k}",
        options=opts[k:] + opts[:k],
        answer=LETTERS[(gold - k) % n],
        group=item.group or item.id,
        meta={**item.meta, "circular": {"base": item.id, "shift": k}},
    )


def circular_ok(item: Item) -> bool:
    """Whether `item` can be rotated: multiple choice with >= 2 options and a gold letter among them."""
    opts = item.options or []
    ans = item.answer.strip().upper()
    return len(opts) >= 2 and len(ans) == 1 and ans in LETTERS[: len(opts)]


def expand(items: Iterable[Item]) -> list[Item]:
    """Every rotation of every multiple-choice item (others unchanged), rotations of an item adjacent."""
    out: list[Item] = []
    for it in items:
        if circular_ok(it):
            out.extend(rotate(it, k) for k in range(len(it.options or [])))
        else:
            out.append(it)
    return out


def base_id(item_id: str) -> str:
    """The published item id of a rotation id (an id without a rotation suffix is its own)."""
    head, sep, tail = item_id.rpartition(SEP)
    return head if sep and tail.isdigit() else item_id


def circular_scores(records: Mapping[str, Mapping[str, Any]] | Iterable[Mapping[str, Any]]) -> dict[str, bool | None]:
    """Question id → right under every rotation (True), wrong under at least one (False), or None when a
    rotation has an error and none is wrong yet (undecided: left out of the accuracy)."""
    recs = records.values() if isinstance(records, Mapping) else records
    by_q: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in recs:
        by_q[base_id(str(r["id"]))].append(r)
    out: dict[str, bool | None] = {}
    for q, rs in by_q.items():
        answered = [r for r in rs if not r.get("error")]
        if any(not r.get("correct") for r in answered):
            out[q] = False
        elif len(answered) < len(rs):
            out[q] = None
        else:
            out[q] = True
    return out


def circular_accuracy(records: Mapping[str, Mapping[str, Any]] | Iterable[Mapping[str, Any]]) -> tuple[float | None, int]:
    """(share of questions right under every rotation, number of decided questions)."""
    verdicts = [v for v in circular_scores(records).values() if v is not None]
    return (sum(verdicts) / len(verdicts) if verdicts else None), len(verdicts)
