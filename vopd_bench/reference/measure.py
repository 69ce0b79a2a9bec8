"""Greedy accuracy of the reference model: pre-training's in-memory evaluation, and `measure` (the harness)."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vopd_bench.items import Item
from vopd_bench.reference.data import HOLDOUT_TASK, TASK, Example, TaskData
from vopd_bench.reference.encode import encode_prompts
from vopd_bench.schema import SampleRecord
from vopd_bench.tasks import get_task

_ANSWER_RE = re.compile(r"Answer:\s*([A-Z])\b")


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
    model_dir: str | Path, n: int = 500, seeds: Sequence[int] = (1234, 5678), threads: int = 2
) -> dict[str, Any]:
    """Greedy accuracy of a checkpoint on the synth task's views (one set per seed) and on the holdout.

    Runs the eval harness (`vopd_bench.evaluate`, HF backend, float32 on the CPU, batches of 50) on the
    first `n` items of each set, in a temporary run directory; the per-view summary is `accuracy`'s."""
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
    return res
