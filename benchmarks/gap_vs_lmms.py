"""Gap eval (full + crop) items/s: vopd-bench's HF backend vs lmms-eval running the exported task, in one run.

Three sides, each on the same model, items, views, image budget, max new tokens, batch size and dtype:

- `vopd-bench`: `run_eval` (what `vopd-bench eval --backend hf` runs), into a fresh run directory each time;
- `lmms qwen2_5_vl`: lmms-eval's own HF model for Qwen2.5-VL (what its users run; it always loads bfloat16,
  hands images over as JPEG data URLs and resizes them with qwen_vl_utils) on the task exported by
  `vopd-bench export-lmms-eval`, with `min_pixels`/`max_pixels` set to the model processor's own budget;
- `lmms vopd_hf`: our HF backend inside lmms-eval (`vopd_bench.lmms.model.VopdHF`): the harness difference alone.

Each model is loaded once (outside the timings); each side is then timed `--repeat` times, the sides taking
turns, so drift on a shared machine hits them alike. lmms-eval is timed through `simple_evaluate` with
`log_samples=True` (what `vopd-bench gap --from-lmms-eval` needs) and no bootstrap. The seconds inside the
model's `generate` are measured on every side, so the figure splits into model time and harness time.

Prototypes of speed-ups (`--prototypes`, vopd-bench side only; same backend, same requests):
- `both views ... per batch`: the full and crop requests of the same items sent in one `generate` (at the same
  batch size, and at twice it), against the views sent apart as the eval sends them (backend calls only);
- `eval at batch 4B`: the eval with a 4x larger batch.

    python benchmarks/gap_vs_lmms.py [--n 500] [--batch-size 16] [--repeat 3] [--dtype bfloat16]

The last lines are the figures: items/s per side (medians) and the ratios, each ratio the median of the
per-repeat ratios.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class GenTimer:
    """Seconds spent inside a model's `generate` (wrapped in place)."""

    def __init__(self, model: Any) -> None:
        self.seconds = 0.0
        inner = model.generate

        def generate(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return inner(*a, **kw)
            finally:
                self.seconds += time.perf_counter() - t0

        model.generate = generate


def export(task: str, n: int, out: Path) -> None:
    """`vopd-bench export-lmms-eval` as a user runs it."""
    cmd = [sys.executable, "-m", "vopd_bench.cli", "export-lmms-eval", "--task", task, "--limit", str(n), "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


def run_lmms(model: Any, include: Path, task: str, limit: int | None = None) -> dict[str, list[str]]:
    """One lmms-eval evaluation of the exported task (both views); responses per view in doc order."""
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    res = simple_evaluate(model=model, tasks=[f"vopd_{task}"], log_samples=True, bootstrap_iters=0, limit=limit,
                          task_manager=TaskManager(include_path=str(include), include_defaults=False))
    out = {}
    for name, samples in res["samples"].items():
        view = name.rsplit("_", 1)[1]
        out[view] = [s["resps"][0][0] if isinstance(s["resps"][0], list) else s["resps"][0]
                     for s in sorted(samples, key=lambda s: s["doc_id"])]
    return out


def ours_responses(run: Path, task: str) -> dict[str, list[str]]:
    out = {}
    for f in sorted((run / "samples" / task).glob("*.jsonl")):
        out[f.stem] = [json.loads(line)["response"] for line in f.read_text().splitlines() if line.strip()]
    return out


def agreement(a: dict[str, list[str]], b: dict[str, list[str]]) -> str:
    same = sum(x.strip() == y.strip() for v in a for x, y in zip(a[v], b.get(v, [])))
    total = sum(len(v) for v in a.values())
    return f"{same}/{total}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="a Qwen2.5-VL checkpoint folder (default: the reference vopd-tiny)")
    p.add_argument("--task", default="synth")
    p.add_argument("--n", type=int, default=500, help="items; each is asked in full and crop (2n view-items)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--dtype", default="bfloat16", help="both sides (lmms-eval's qwen2_5_vl only loads bfloat16)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--sides", default="ours,lmms_qwen,lmms_vopd_hf")
    p.add_argument("--prototypes", action="store_true", help="also time the speed-up prototypes (vopd-bench side)")
    p.add_argument("--json", default=None, help="also write the figures here")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)

    import torch

    torch.set_num_threads(a.threads)
    from vopd_bench.backends import BackendConfig
    from vopd_bench.backends.hf import HFBackend
    from vopd_bench.evaluate import EvalConfig, run_eval
    from vopd_bench.lmms import register
    from vopd_bench.models import REFERENCE_DIR

    model_dir = a.model or str(REFERENCE_DIR)
    sides = [s.strip() for s in a.sides.split(",") if s.strip()]
    root = Path(tempfile.mkdtemp(prefix="vopd-gap-vs-lmms-"))
    include = root / "lmms_tasks"
    export(a.task, a.n, include)
    register()

    bcfg = BackendConfig(backend="hf", model=model_dir, batch_size=a.batch_size, dtype=a.dtype, device="cpu")
    ours = HFBackend(bcfg)
    budget = ours.budget
    timers: dict[str, GenTimer] = {"ours": GenTimer(ours.model)}
    models: dict[str, Any] = {}
    if "lmms_qwen" in sides:
        from lmms_eval.models.chat.qwen2_5_vl import Qwen2_5_VL

        m = Qwen2_5_VL(pretrained=model_dir, device="cpu", device_map="cpu", batch_size=a.batch_size,
                       min_pixels=budget["min_pixels"], max_pixels=budget["max_pixels"])
        if a.dtype != "bfloat16":
            m._model.to(getattr(torch, a.dtype))
        models["lmms_qwen"] = m
        timers["lmms_qwen"] = GenTimer(m._model)
    if "lmms_vopd_hf" in sides:
        from vopd_bench.lmms.model import VopdHF

        theirs = HFBackend(bcfg)
        models["lmms_vopd_hf"] = VopdHF(pretrained=model_dir, batch_size=a.batch_size, device="cpu", dtype=a.dtype,
                                        backend=theirs)
        timers["lmms_vopd_hf"] = GenTimer(theirs.model)

    def cfg(out: str, batch: int = a.batch_size, limit: int = a.n) -> EvalConfig:
        b = BackendConfig(**{**bcfg.__dict__, "batch_size": batch})
        return EvalConfig(tasks=[a.task], backend=b, out=out, views=["full", "crop"], limit=limit, progress=False)

    # warm-up on one batch per view (first-call costs), discarded
    warm = min(a.n, a.batch_size)
    run_eval(cfg(str(root / "warm"), limit=warm), ours)
    for s in sides[1:]:
        models[s].clean = lambda: None  # lmms-eval drops the model's weights after each evaluation; keep them loaded
        run_lmms(models[s], include, a.task, limit=warm)

    times: dict[str, list[float]] = {s: [] for s in sides}
    gens: dict[str, list[float]] = {s: [] for s in sides}
    answers: dict[str, dict[str, list[str]]] = {}
    for r in range(a.repeat):
        for s in sides:
            timers[s].seconds = 0.0
            t0 = time.perf_counter()
            if s == "ours":
                run_eval(cfg(str(root / f"ours{r}")), ours)
            else:
                answers[s] = run_lmms(models[s], include, a.task)
            times[s].append(time.perf_counter() - t0)
            gens[s].append(timers[s].seconds)
    answers["ours"] = ours_responses(root / "ours0", a.task)

    proto: dict[str, list[float]] = {}
    if a.prototypes:
        proto = prototypes(a, cfg, ours, root, timers["ours"])

    n_req = sum(len(v) for v in answers["ours"].values())
    med = {s: statistics.median(times[s]) for s in sides}
    rows: dict[str, Any] = {}
    print(f"model {model_dir}; task {a.task}, {a.n} items x (full, crop) = {n_req} view-items; batch {a.batch_size}; "
          f"dtype {a.dtype}; image budget {budget}; max_new_tokens from the task; {a.threads} threads; "
          f"medians of {a.repeat} runs, sides in turn")
    names = {"ours": "vopd-bench (hf)", "lmms_qwen": "lmms-eval qwen2_5_vl", "lmms_vopd_hf": "lmms-eval vopd_hf"}
    print(f"{'side':24s} {'wall s':>8s} {'generate s':>10s} {'harness s':>9s} {'view-items/s':>12s}  answers = vopd-bench's")
    for s in sides:
        g = statistics.median(gens[s])
        rows[s] = {"seconds": times[s], "generate_seconds": gens[s], "items_per_s": n_req / med[s]}
        print(f"{names[s]:24s} {med[s]:8.2f} {g:10.2f} {med[s] - g:9.2f} {n_req / med[s]:12.2f}  "
              f"{agreement(answers['ours'], answers[s])}")
    for name, secs in proto.items():
        print(f"{'  prototype: ' + name:38s} {statistics.median(secs):8.2f} s ({n_req / statistics.median(secs):.2f} view-items/s)")
    ratios = {}
    for s in sides[1:]:
        ratios[s] = statistics.median(t / o for t, o in zip(times[s], times["ours"]))
        goal = " (goal >= 3x)" if s == "lmms_qwen" else ""
        print(f"vopd-bench / {names[s]}: {ratios[s]:.2f}x items/s{goal}")
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "view_items": n_req, "sides": rows, "ratios": ratios,
                                            "prototypes": proto}, indent=2))


def prototypes(a: argparse.Namespace, cfg: Any, backend: Any, root: Path, timer: GenTimer) -> dict[str, list[float]]:
    """Speed-ups timed on the vopd-bench side: both views in one batch (same requests, pure backend calls,
    rendering included), and the eval at 4x the batch."""
    from vopd_bench.backends import Request
    from vopd_bench.evaluate import run_eval
    from vopd_bench.protocol import gen_kwargs, load_spec, render

    spec = load_spec(a.task)
    items = spec.load_items(None)[: a.n]
    gen = gen_kwargs(spec)
    b = a.batch_size
    out: dict[str, list[float]] = {f"views apart, batch {b}, backend only": [],
                                   f"both views of {b // 2} items per batch of {b}, backend only": [],
                                   f"both views of {b} items per batch of {2 * b}, backend only": [],
                                   f"eval at batch {4 * b}": []}
    for r in range(a.repeat):
        for name in out:
            t0 = time.perf_counter()
            if name.startswith("eval at"):
                run_eval(cfg(str(root / f"big{r}"), 4 * b), backend)
            else:
                together = name.startswith("both")
                step = int(name.split()[3]) if together else b
                views = [["full", "crop"]] if together else [["full"], ["crop"]]
                for vs in views:
                    for i in range(0, len(items), step):
                        reqs = [Request(it.id, [render(spec, it, v).image], spec.prompt.render(it), spec.prompt.system)
                                for it in items[i : i + step] for v in vs]
                        backend.generate(reqs, gen)
            out[name].append(time.perf_counter() - t0)
    return out


if __name__ == "__main__":
    main()
