"""Greedy accuracy of the reference model: pre-training's in-memory evaluation, and `measure` (the harness)."""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vopd_bench import grounding
from vopd_bench.items import Item
from vopd_bench.reference.data import BOX_FORMAT, HOLDOUT_TASK, TASK, Example, TaskData
from vopd_bench.reference.encode import encode_prompts
from vopd_bench.schema import SampleRecord
from vopd_bench.tasks import get_task

_ANSWER_RE = re.compile(r"Answer:\s*([A-Z])\b")
GROUND_MAX_NEW_TOKENS = 48  # `{"bbox_2d": [x1, y1, x2, y2]}` is 31 byte-level tokens at most (+ <|im_end|>)


def parse_letter(text: str) -> str | None:
    """The letter after the last 'Answer:' in `text`, or None."""
    found = _ANSWER_RE.findall(text)
    return found[-1] if found else None


@torch.no_grad()
def generate(
    model: Any, processor: Any, examples: Sequence[Example], max_new_tokens: int = 16, batch_size: int = 50
) -> list[str]:
    """Greedy responses (decoded, special tokens dropped), in order."""
    model.eval()
    out: list[str] = []
    for i in range(0, len(examples), batch_size):
        chunk = examples[i : i + batch_size]
        enc = encode_prompts(processor, [e.image for e in chunk], [e.prompt for e in chunk])
        model.model.rope_deltas = None
        gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
        new = gen[:, enc["input_ids"].shape[1] :]
        out += [t.strip() for t in processor.batch_decode(new, skip_special_tokens=True)]
    return out


def accuracy(
    model: Any, processor: Any, examples: Sequence[Example], max_new_tokens: int = 16, batch_size: int = 50
) -> dict[str, Any]:
    """Greedy accuracy on `examples`: overall, per category, and the parse-failure rate."""
    texts = generate(model, processor, examples, max_new_tokens, batch_size)
    ok = [parse_letter(t) == e.answer for t, e in zip(texts, examples)]
    by_cat: dict[str, list[bool]] = {}
    for e, c in zip(examples, ok):
        by_cat.setdefault(e.category, []).append(c)
    return {
        "n": len(ok),
        "accuracy": float(np.mean(ok)),
        "parse_failures": float(np.mean([parse_letter(t) is None for t in texts])),
        "by_category": {k: round(float(np.mean(v)), 4) for k, v in sorted(by_cat.items())},
        "example": texts[0] if texts else "",
    }


def evaluate_views(
    model: Any, processor: Any, data: TaskData, items: Sequence[Item], views: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Accuracy per view of `items` (rendered as the eval renders them)."""
    max_new = int(data.spec.generation.get("max_new_tokens", 16))
    return {v: accuracy(model, processor, [data.example(it, v) for it in items], max_new) for v in views}


def box_scores(pred: Sequence[float] | None, gold: Sequence[float]) -> dict[str, float]:
    """IoU of a predicted box with the gold one, and whether its centre lies inside the gold box
    (both 0 for no box)."""
    if pred is None:
        return {"iou": 0.0, "centre_hit": 0.0}
    cx, cy = (pred[0] + pred[2]) / 2, (pred[1] + pred[3]) / 2
    hit = gold[0] <= cx <= gold[2] and gold[1] <= cy <= gold[3]
    return {"iou": grounding.iou(pred, gold), "centre_hit": float(hit)}


def grounding_stats(
    model: Any, processor: Any, data: TaskData, items: Sequence[Item], self_zoom: bool = True
) -> dict[str, Any]:
    """How well the model answers the grounding prompt on `items` (greedy, the eval's encoding): parse rate,
    mean IoU with the gold (union) box, share with IoU >= 0.5, share whose box centre lies in the gold box
    (misses count 0), seconds per item; with `self_zoom`, also the accuracy of asking the question on the
    crop of its own box (the task's crop protocol; the full image where no box parses), as the two-stage
    view does."""
    t0 = time.perf_counter()
    examples = [data.ground_example(it) for it in items]
    texts = generate(model, processor, examples, max_new_tokens=GROUND_MAX_NEW_TOKENS)
    boxes = []
    for t, e in zip(texts, examples):
        w, h = e.image.size
        boxes.append(grounding.parse_box(t, w, h, BOX_FORMAT))
    scores = [box_scores(b, e.box or []) for b, e in zip(boxes, examples)]
    out: dict[str, Any] = {
        "n": len(examples),
        "parse_rate": float(np.mean([b is not None for b in boxes])),
        "mean_iou": float(np.mean([s["iou"] for s in scores])),
        "iou50": float(np.mean([s["iou"] >= 0.5 for s in scores])),
        "centre_hit": float(np.mean([s["centre_hit"] for s in scores])),
        "s_per_item": round((time.perf_counter() - t0) / max(1, len(examples)), 4),
        "example": texts[0] if texts else "",
    }
    if self_zoom:
        zoomed = [
            data.example(replace(it, boxes=[b]), "crop") if b is not None else data.example(it, "full")
            for it, b in zip(items, boxes)
        ]
        out["self_zoom_accuracy"] = accuracy(model, processor, zoomed)["accuracy"]
    return out


def quick_measure(model: Any, processor: Any, n: int = 200, seed: int = 1234, holdout_seed: int = 4321) -> dict[str, Any]:
    """In-memory figures of a loaded checkpoint on the gap task's first `n` items of `seed` (the eval's items):
    full and crop accuracy, grounding (`grounding_stats`, with self-zoom accuracy), and the holdout's full
    accuracy on its first `n` items."""
    data, holdout = TaskData(get_task(TASK)), TaskData(get_task(HOLDOUT_TASK))
    items = data.items(n, seed)
    res: dict[str, Any] = {k: v["accuracy"] for k, v in evaluate_views(model, processor, data, items, ["full", "crop"]).items()}
    res["holdout"] = evaluate_views(model, processor, holdout, holdout.items(n, holdout_seed), ["full"])["full"]["accuracy"]
    res["gap"] = round(100 * (res["crop"] - res["full"]), 1)
    res["grounding"] = grounding_stats(model, processor, data, items)
    return res


def view_stats(records: Iterable[SampleRecord]) -> dict[str, Any]:
    """`accuracy`'s summary of one view from the harness's sample records."""
    recs = list(records)
    by_cat: dict[str, list[bool]] = {}
    for r in recs:
        by_cat.setdefault(r.category or "", []).append(r.correct)
    return {
        "n": len(recs),
        "accuracy": float(np.mean([r.correct for r in recs])),
        "parse_failures": float(np.mean([r.parsed is None for r in recs])),
        "by_category": {k: round(float(np.mean(v)), 4) for k, v in sorted(by_cat.items())},
        "example": (recs[0].response or "") if recs else "",
    }


def measure(
    model_dir: str | Path, n: int = 500, seeds: Sequence[int] = (1234, 5678), threads: int = 2, ground_n: int = 200
) -> dict[str, Any]:
    """Greedy accuracy of a checkpoint on the synth task's views (one set per seed) and on the holdout, and
    its grounding (`grounding_stats`) on the first `ground_n` items of the first seed's set (0: skipped).

    Runs the eval harness (`vopd_bench.evaluate`, HF backend, float32 on the CPU, batches of 50) on the
    first `n` items of each set, in a temporary run directory; the per-view summary is `accuracy`'s.
    Grounding is measured in memory on the same items (the eval's encoding and greedy decoding)."""
    from vopd_bench.backends.base import BackendConfig
    from vopd_bench.backends.hf import HFBackend
    from vopd_bench.evaluate import EvalConfig, run_eval
    from vopd_bench.rundir import RunDir
    from vopd_bench.synth import ensure_dataset

    torch.set_num_threads(threads)
    bcfg = BackendConfig(model=str(model_dir), device="cpu", dtype="float32", batch_size=50)
    backend = HFBackend(bcfg)
    spec, hspec = get_task(TASK), get_task(HOLDOUT_TASK)
    sets = [(f"synth_seed{s}", spec, s, list(spec.views)) for s in seeds]
    sets.append(("holdout", hspec, int(hspec.options.get("seed", 4321)), ["full"]))
    res: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, sp, seed, views in sets:
            data = ensure_dataset(**{**sp.options, "n": n, "seed": seed})
            out = Path(tmp) / key
            cfg = EvalConfig(tasks=[sp.name], backend=bcfg, out=str(out), views=views,
                             data={sp.name: str(data)}, progress=False)
            run_eval(cfg, backend)
            res[key] = {v: view_stats(RunDir(out).samples(sp.name, v).values()) for v in views}
    for s in seeds:
        views = res[f"synth_seed{s}"]
        views["gap"] = round(100 * (views["crop"]["accuracy"] - views["full"]["accuracy"]), 1)
    res["holdout"] = res["holdout"]["full"]
    if ground_n > 0:
        from vopd_bench.reference.build import load

        model, processor = load(model_dir)
        data = TaskData(spec)
        res["grounding"] = grounding_stats(model, processor, data, data.items(ground_n, seeds[0]))
        res["grounding"]["seed"] = seeds[0]
    return res
