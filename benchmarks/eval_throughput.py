"""Eval throughput and harness overhead (issue 2). Prints figures; asserts nothing.

- items/s of `run_eval` on the reference tiny model (full + crop views);
- harness overhead = (eval wall time − time inside `model.generate`) / time inside `model.generate`,
  on the very same batches (the generate calls are timed inside the same run);
- a repeated run on the finished run directory, relative to the first (resume cost);
- with `--prefetch on` (auto = off on CPU), the same run without it: prefetch overlaps CPU preprocessing with
  generate, which lowers the overhead figure, but shortens the wall time only where a core is free
  for it (on a CPU-only box whose cores torch already uses, it slows generate instead).

usage: python benchmarks/eval_throughput.py [--n 96] [--batch-size 16] [--model vopd-tiny]
       [--prefetch auto|on|off] [--no-image-cache]   (to measure each of the two speed-ups alone)
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from vopd_bench.backends import BackendConfig
from vopd_bench.backends.hf import HFBackend
from vopd_bench.evaluate import EvalConfig, run_eval


class TimedHF(HFBackend):
    """The HF backend with the time spent inside model.generate accumulated."""

    gen_seconds = 0.0

    def __init__(self, cfg: BackendConfig) -> None:
        super().__init__(cfg)
        inner = self.model.generate

        def timed(*a, **kw):
            t0 = time.perf_counter()
            out = inner(*a, **kw)
            TimedHF.gen_seconds += time.perf_counter() - t0
            return out

        self.model.generate = timed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--model", default="vopd-tiny")
    ap.add_argument("--task", default="synth")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (generate)")
    ap.add_argument("--prefetch", choices=["auto", "on", "off"], default="auto",
                    help="prepare the next batch in a thread while one generates (auto: off on CPU)")
    ap.add_argument("--no-image-cache", action="store_true", help="decode an item's image again for each view")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    bcfg = BackendConfig(model=a.model, batch_size=a.batch_size)
    backend = TimedHF(bcfg)
    with tempfile.TemporaryDirectory() as d:
        cfg = EvalConfig(tasks=[a.task], backend=bcfg, out=f"{d}/warm", views=["full", "crop"], limit=a.n,
                         progress=False, prefetch={"auto": None, "on": True, "off": False}[a.prefetch],
                         image_cache_mb=0 if a.no_image_cache else 256)
        run_eval(cfg, backend)  # warm-up: data generation/caching, first-call costs (discarded)
        first, gen = timed_run(cfg, f"{d}/run", backend)
        t0 = time.perf_counter()
        run_eval(EvalConfig(**{**cfg.__dict__, "out": f"{d}/run"}), backend)
        again = time.perf_counter() - t0
        # prefetch hides CPU work inside generate's wall time only where there is a spare core for it:
        # the same run without it tells whether the wall time really went down
        seq = timed_run(EvalConfig(**{**cfg.__dict__, "prefetch": False}), f"{d}/seq", backend) if a.prefetch == "on" else None
    n_req = 2 * a.n
    print(f"model={a.model} task={a.task} items={a.n} views=full,crop requests={n_req} batch={a.batch_size} threads={a.threads} "
          f"prefetch={a.prefetch} image_cache_mb={cfg.image_cache_mb} device={backend.device}")
    print(f"eval throughput: {n_req / first:.2f} requests/s ({a.n / first:.2f} items/s, both views), wall {first:.2f} s")
    print(f"time inside model.generate: {gen:.2f} s; harness overhead: {100 * (first - gen) / gen:.1f}% (goal <= 10%)")
    print(f"repeated run on the finished run dir: {again:.3f} s = {100 * again / first:.2f}% of the first (goal <= 2%)")
    if seq:
        print(f"same run without prefetch: wall {seq[0]:.2f} s, inside model.generate {seq[1]:.2f} s, "
              f"overhead {100 * (seq[0] - seq[1]) / seq[1]:.1f}%; prefetch wall / sequential wall = {first / seq[0]:.3f}")
        print(f"prefetch wall over the uncontended generate time (sequential run): {100 * (first - seq[1]) / seq[1]:.1f}%")


def timed_run(cfg: EvalConfig, out: str, backend: TimedHF) -> tuple[float, float]:
    """(wall seconds, seconds inside model.generate) of one run into a fresh directory."""
    TimedHF.gen_seconds = 0.0
    t0 = time.perf_counter()
    run_eval(EvalConfig(**{**cfg.__dict__, "out": out}), backend)
    return time.perf_counter() - t0, TimedHF.gen_seconds

if __name__ == "__main__":
    main()
