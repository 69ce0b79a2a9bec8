"""Where a training prompt came from, recorded in its row under `meta.provenance`, and a summary of a
prompt set for the training run's record (how many prompts were overlap-checked against which evals)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

KEY = "provenance"


def settings_hash(settings: Mapping[str, Any]) -> str:
    """A short stable hash of a pipeline's settings (rows of one run carry the same one)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


def of(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """The provenance of a row's (or an Item's) `meta`, {} when it has none."""
    p = (meta or {}).get(KEY)
    return p if isinstance(p, dict) else {}


def summarize(metas: Iterable[Mapping[str, Any] | None]) -> dict[str, Any]:
    """What a training run records of its prompts: counts by source and box source, how many passed the
    self-consistency filter, and whether every prompt was checked for train/eval image overlap."""
    n = with_prov = consistent = checked = 0
    sources: Counter[str] = Counter()
    box_sources: Counter[str] = Counter()
    against: set[str] = set()
    for meta in metas:
        n += 1
        p = of(meta)
        if not p:
            continue
        with_prov += 1
        sources[str(p.get("source", {}).get("name") if isinstance(p.get("source"), dict) else p.get("source"))] += 1
        bs = p.get("box_source")
        box_sources[str(bs.get("kind") if isinstance(bs, dict) else bs)] += 1
        if isinstance(p.get("filters"), dict) and p["filters"].get("consistency"):
            consistent += 1
        ov = p.get("overlap")
        if isinstance(ov, dict) and ov.get("checked"):
            checked += 1
            against.update(str(e) for e in ov.get("eval", []))
    return {
        "n_prompts": n,
        "with_provenance": with_prov,
        "sources": dict(sources),
        "box_sources": dict(box_sources),
        "consistency_filtered": consistent,
        "overlap_checked": checked,
        "overlap_checked_all": n > 0 and checked == n,
        "overlap_against": sorted(against),
    }


def sentence(summary: Mapping[str, Any] | None) -> str:
    """The report's words for a run's prompt summary (`summarize`), e.g. "24 training prompts (images: 24);
    train/eval image overlap checked against eval/ (phash)" or "... overlap not checked"."""
    if not summary:
        return "training prompts: provenance not recorded"
    n = summary.get("n_prompts", 0)
    sources = ", ".join(f"{k}: {v}" for k, v in (summary.get("sources") or {}).items())
    head = f"{n} training prompts" + (f" ({sources})" if sources else "")
    if summary.get("overlap_checked_all"):
        return f"{head}; train/eval image overlap checked against {', '.join(summary.get('overlap_against') or [])}"
    k = summary.get("overlap_checked", 0)
    return f"{head}; train/eval image overlap not checked" + (f" ({k} of {n} checked)" if k else "")
