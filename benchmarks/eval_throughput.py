"""Eval throughput and harness overhead (issue 2). Prints figures; asserts nothing.

- items/s of `run_eval` on the reference tiny model (full + crop views);
- harness overhead = (eval wall time − time inside `model.generate`) / time inside `model.generate`,
  on the very same batches (the generate calls are timed inside the same run);
- a repeated run on the finished run directory, relative to the first (resume cost);
- where the overhead goes: the model's processor, image decoding + view rendering, the rest (the harness's
  own bookkeeping);
- with prefetch on (`--prefetch on`, or auto with a core to spare: `--threads 1` on 2 cores), the same run
  without it: prefetch overlaps CPU preprocessing with generate, which lowers the overhead figure, but
  shortens the wall time only where a core is free for it (on a CPU-only box whose cores torch already
  uses, it slows generate instead): the last line compares with the uncontended generate time.

usage: python benchmarks/eval_throughput.py [--n 96] [--batch-size 16] [--model vopd-tiny]
       [--repeat 3] [--prefetch auto|on|off] [--no-image-cache] [--pil-images]   (to measure each speed-up alone)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from vopd_bench import evaluate, inputs
from vopd_bench.backends import BackendConfig
from vopd_bench.backends.hf import HFBackend
from vopd_bench.evaluate import EvalConfig, run_eval


class TimedHF(HFBackend):
    """The HF backend with the seconds spent inside model.generate and inside the model's processor
    (chat template, tokenizer, image processor) accumulated."""

    gen_seconds = 0.0
    proc_seconds = 0.0

    def __init__(self, cfg: BackendConfig) -> None:
        super().__init__(cfg)
        self.model.generate = _timed(self.model.generate, "gen_seconds")
        self._encode = _timed(self._encode, "proc_seconds")  # type: ignore[method-assign]


def _timed(fn, slot: str, owner: type = TimedHF):
    def timed(*a, **kw):
        t0 = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            setattr(owner, slot, getattr(owner, slot) + time.perf_counter() - t0)

    return timed


class Parts:
    """Seconds per part of one run."""

    render_seconds = 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--model", default="vopd-tiny")
    ap.add_argument("--task", default="synth")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (generate)")
    ap.add_argument("--repeat", type=int, default=3, help="measured runs (medians are printed; this host is shared)")
    ap.add_argument("--prefetch", choices=["auto", "on", "off"], default="auto",
                    help="prepare the next batch in a thread while one generates (auto: off on CPU)")
    ap.add_argument("--no-image-cache", action="store_true", help="decode an item's image again for each view")
    ap.add_argument("--pil-images", action="store_true",
                    help="hand the processor PIL images (as before the tensor path) to measure that speed-up alone")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    evaluate.render = _timed(evaluate.render, "render_seconds", Parts)
    if a.pil_images:
        inputs.processor_images = lambda processor, images: list(images)
    bcfg = BackendConfig(model=a.model, batch_size=a.batch_size)
    backend = TimedHF(bcfg)
    runs, seqs = [], []
    with tempfile.TemporaryDirectory() as d:
        cfg = EvalConfig(tasks=[a.task], backend=bcfg, out=f"{d}/warm", views=["full", "crop"], limit=a.n,
                         progress=False, prefetch={"auto": None, "on": True, "off": False}[a.prefetch],
                         image_cache_mb=0 if a.no_image_cache else 256)
        run_eval(cfg, backend)  # warm-up: data generation/caching, first-call costs (discarded)
        prefetch = evaluate.Evaluator(cfg, backend).prefetch  # what auto chose
        for r in range(a.repeat):
            runs.append(timed_run(cfg, f"{d}/run{r}", backend))
            # prefetch hides CPU work inside generate's wall time only where there is a spare core for it:
            # the same run without it tells whether the wall time really went down
            if prefetch:
                seqs.append(timed_run(EvalConfig(**{**cfg.__dict__, "prefetch": False}), f"{d}/seq{r}", backend))
        t0 = time.perf_counter()
        run_eval(EvalConfig(**{**cfg.__dict__, "out": f"{d}/run0"}), backend)
        again = time.perf_counter() - t0
    wall, gen, proc, rend = (statistics.median(x) for x in zip(*runs))
    n_req = 2 * a.n
    print(f"model={a.model} task={a.task} items={a.n} views=full,crop requests={n_req} batch={a.batch_size} threads={a.threads} "
          f"prefetch={a.prefetch} ({'on' if prefetch else 'off'}) image_cache_mb={cfg.image_cache_mb} images={'PIL' if a.pil_images else 'auto'} "
          f"device={backend.device} repeat={a.repeat} (medians)")
    print(f"eval throughput: {n_req / wall:.2f} requests/s ({a.n / wall:.2f} items/s, both views), wall {wall:.2f} s")
    over = [100 * (w - g) / g for w, g, *_ in runs]
    print(f"time inside model.generate: {gen:.2f} s; harness overhead: {statistics.median(over):.1f}% (goal <= 10%)"
          f"  [runs: {', '.join(f'{o:.1f}%' for o in over)}]")
    parts = (f"model processor {1e3 * proc / n_req:.2f} ms ({100 * proc / gen:.1f}%), "
             f"image decode + view rendering {1e3 * rend / n_req:.2f} ms ({100 * rend / gen:.1f}%)")
    if prefetch:
        print(f"  in the prefetch thread, per request: {parts}; model.generate {1e3 * gen / n_req:.2f} ms")
    else:
        rest = wall - gen - proc - rend
        print(f"  outside generate, per request: {parts}, the rest (records, scoring, writes, set-up) "
              f"{1e3 * rest / n_req:.2f} ms ({100 * rest / gen:.1f}%); model.generate {1e3 * gen / n_req:.2f} ms")
    print(f"repeated run on the finished run dir: {again:.3f} s = {100 * again / wall:.2f}% of the first (goal <= 2%)")
    if seqs:
        sw, sg = statistics.median(x[0] for x in seqs), statistics.median(x[1] for x in seqs)
        print(f"same run without prefetch: wall {sw:.2f} s, inside model.generate {sg:.2f} s, "
              f"overhead {100 * (sw - sg) / sg:.1f}%; prefetch wall / sequential wall = {wall / sw:.3f}")
        print(f"prefetch wall over the uncontended generate time (sequential run): {100 * (wall - sg) / sg:.1f}%")


def timed_run(cfg: EvalConfig, out: str, backend: TimedHF) -> tuple[float, float, float, float]:
    """(wall, inside model.generate, inside the processor, rendering) seconds of one run into a fresh directory."""
    TimedHF.gen_seconds = TimedHF.proc_seconds = Parts.render_seconds = 0.0
    t0 = time.perf_counter()
    run_eval(EvalConfig(**{**cfg.__dict__, "out": out}), backend)
    return time.perf_counter() - t0, TimedHF.gen_seconds, TimedHF.proc_seconds, Parts.render_seconds


if __name__ == "__main__":
    main()
