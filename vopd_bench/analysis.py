"""Where the gap comes from, read from a run's sample records.

- `decomposition`: accuracy of full → red_box → blur_surround → crop_native → crop (the views a run has, in
  that order) on the items every one of them answered, each step with its paired difference, 95% paired
  bootstrap CI (clustered by question group) and exact McNemar p. Steps: attention cue, context removed from
  sight, context removed, zoom.
- `size_bins`: items binned by their target's relative size (box area / image area; quantile bins), per bin
  the accuracy of each view with its Wilson CI, and the crop − full gap with its paired CI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vopd_bench.errors import UserError
from vopd_bench.items import Item
from vopd_bench.rundir import RunDir
from vopd_bench.stats import mcnemar_exact, paired_bootstrap, paired_counts, wilson
from vopd_bench.views import DECOMPOSITION, CropParams, box_fraction

STEP_NAMES = {"red_box": "attention cue (region outlined)", "blur_surround": "surroundings blurred",
              "crop_native": "context removed (no zoom)", "crop": "zoom"}


@dataclass
class Step:
    """One view of the decomposition and its paired change from the view before it (points)."""

    view: str
    accuracy: float  # percent
    ci_low: float
    ci_high: float
    delta: float | None = None  # this view − the previous one, points
    delta_ci: tuple[float, float] | None = None
    p_value: float | None = None
    what: str = ""


def _answered(recs: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {k: r for k, r in recs.items() if not r.get("error")}


def decomposition(run: Path, task: str, views: Sequence[str] | None = None, seed: int = 0) -> tuple[list[Step], int]:
    """The decomposition steps of `task` in `run` over the items all its views answered, and that item count.
    `views`: the run's views (default: what its config records)."""
    rd = RunDir(run)
    if views is None:
        from vopd_bench.compare import run_views

        views = run_views(Path(run)).get(task, [])
    order = [v for v in DECOMPOSITION if v in views]
    if len(order) < 2 or "full" not in order:
        return [], 0
    recs = {v: _answered(rd.load_records(task, v)) for v in order}
    ids = sorted(set.intersection(*(set(r) for r in recs.values())))
    if not ids:
        return [], 0
    groups = [recs["full"][i].get("group") or i for i in ids]
    steps: list[Step] = []
    prev: list[float] | None = None
    for v in order:
        x = [float(bool(recs[v][i].get("correct"))) for i in ids]
        lo, hi = wilson(int(sum(x)), len(x))
        st = Step(v, 100 * float(np.mean(x)), 100 * lo, 100 * hi, what=STEP_NAMES.get(v, ""))
        if prev is not None:
            dlo, dhi = paired_bootstrap(prev, x, groups, seed=seed)
            b, c = paired_counts(prev, x)
            st.delta, st.delta_ci, st.p_value = 100 * (np.mean(x) - np.mean(prev)), (100 * dlo, 100 * dhi), mcnemar_exact(b, c)
        steps.append(st)
        prev = x
    return steps, len(ids)


@dataclass
class SizeBin:
    """Items whose target covers [lo, hi) of the image area."""

    lo: float
    hi: float
    n: int
    accuracy: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # view → (acc, ci_low, ci_high) %
    gap: float | None = None  # crop − full, points
    gap_ci: tuple[float, float] | None = None
    ids: list[str] = field(default_factory=list)


def load_items(run: Path, task: str, ids: list[str]) -> dict[str, tuple[Item, CropParams]]:
    """The items `ids` of `task` as the run loaded them, with its crop parameters."""
    from vopd_bench.protocol import load_spec  # task specs: loaded only when items are needed

    cfg = RunDir(run).read_config()
    rec = (cfg.tasks if cfg else {}).get(task)
    if rec is None:
        raise UserError(f"{run}: task {task!r} is not in its config.json")
    spec = load_spec(rec.get("spec_file") or task)
    crop = CropParams(**rec["crop"]) if rec.get("crop") else spec.crop
    if rec.get("options"):
        spec.options = {**spec.options, **rec["options"]}
    items = {it.id: it for it in spec.load_items(rec.get("data"))}
    missing = [i for i in ids if i not in items]
    if missing:
        raise UserError(f"{run}: task {task} has no item(s) {', '.join(missing[:5])} in its data")
    return {i: (items[i], crop) for i in ids}


def run_fractions(run: Path, task: str) -> dict[str, float]:
    """Item id → target area fraction: from the records (`box_frac`) where present, else from the items as the
    run loaded them (their boxes and decoded image sizes)."""
    recs = RunDir(run).load_records(task, "full")
    out = {k: float(r["box_frac"]) for k, r in recs.items() if r.get("box_frac") is not None}
    if len(out) == len(recs):
        return out
    missing = [k for k in recs if k not in out]
    for k, (item, _) in load_items(run, task, missing).items():
        if item.boxes:
            w, h = item.load_image().size
            frac = box_fraction(item.boxes, w, h)
            if frac is not None:
                out[k] = frac
    return out


def size_bins(run: Path, task: str, n_bins: int = 4, fractions: Mapping[str, float] | None = None,
              seed: int = 0) -> list[SizeBin]:
    """Quantile bins of target size over the items answered on full and crop; every such item with a size is in
    exactly one bin."""
    rd = RunDir(run)
    full, crop = _answered(rd.load_records(task, "full")), _answered(rd.load_records(task, "crop"))
    fr = dict(fractions) if fractions is not None else run_fractions(run, task)
    ids = sorted((i for i in full if i in crop and i in fr), key=lambda i: (fr[i], i))
    if not ids:
        return []
    k = max(1, min(n_bins, len(ids)))
    bins = []
    for part in np.array_split(np.arange(len(ids)), k):
        members = [ids[j] for j in part]
        lo, hi = fr[members[0]], fr[members[-1]]
        b = SizeBin(lo, hi, len(members), ids=members)
        xs = {}
        for view, recs in (("full", full), ("crop", crop)):
            x = [float(bool(recs[i].get("correct"))) for i in members]
            wl, wh = wilson(int(sum(x)), len(x))
            b.accuracy[view] = (100 * float(np.mean(x)), 100 * wl, 100 * wh)
            xs[view] = x
        b.gap = b.accuracy["crop"][0] - b.accuracy["full"][0]
        glo, ghi = paired_bootstrap(xs["full"], xs["crop"], [full[i].get("group") or i for i in members], seed=seed)
        b.gap_ci = (100 * glo, 100 * ghi)
        bins.append(b)
    return bins
