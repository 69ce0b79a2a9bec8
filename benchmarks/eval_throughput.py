"""Eval throughput and harness overhead (issue 2). Prints figures; asserts nothing.

- items/s of `run_eval` on the reference tiny model (full + crop views);
- harness overhead = (eval wall time − time inside `model.generate`) / time inside `model.generate`,
  on the very same batches (the generate calls are timed inside the same run);
- a repeated run on the finished run directory, relative to the first (resume cost).

usage: python benchmarks/eval_throughput.py [--n 96] [--batch-size 16] [--model vopd-tiny]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

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
    a = ap.parse_args()
    torch.set_num_threads(2)
    bcfg = BackendConfig(model=a.model, batch_size=a.batch_size)
    backend = TimedHF(bcfg)
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "run"
        cfg = EvalConfig(tasks=[a.task], backend=bcfg, out=str(out), views=["full", "crop"], limit=a.n, progress=False)
        run_eval(cfg, backend)  # warm-up: data generation/caching, first-call costs (discarded)
        out2 = Path(d) / "run2"
        cfg2 = EvalConfig(**{**cfg.__dict__, "out": str(out2)})
        TimedHF.gen_seconds = 0.0
        t0 = time.perf_counter()
        run_eval(cfg2, backend)
        first = time.perf_counter() - t0
        gen = TimedHF.gen_seconds
        t0 = time.perf_counter()
        run_eval(cfg2, backend)
        again = time.perf_counter() - t0
    n_req = 2 * a.n
    print(f"model={a.model} task={a.task} items={a.n} views=full,crop requests={n_req} batch={a.batch_size} threads=2")
    print(f"eval throughput: {n_req / first:.2f} requests/s ({a.n / first:.2f} items/s, both views), wall {first:.2f} s")
    print(f"time inside model.generate: {gen:.2f} s; harness overhead: {100 * (first - gen) / gen:.1f}% (goal <= 10%)")
    print(f"repeated run on the finished run dir: {again:.3f} s = {100 * again / first:.2f}% of the first (goal <= 2%)")


if __name__ == "__main__":
    main()
