"""How eval cost grows: wall time vs number of items (full + crop) and vs image size (full view), with the
log-log slopes, and a small log-log plot.

    python benchmarks/scaling.py [--items 32,64,128,256] [--sizes 112,224,448] [--repeat 3] [--plot FILE.png]

Every point is `run_eval` (what `vopd-bench eval --backend hf` runs) into a fresh run directory with one
loaded backend; the value is the median of `--repeat` runs. Items: the synth task's own data, first N items.
Image size: synth data generated at each side length (`image_size`, same seed, `--size-items` items), full
view only (the crop view is resized to a fixed size), under the model's image budget (a larger image is
shrunk to it). The slope of log(time) on log(x) is the growth exponent: 1 = linear.
Step time vs rollouts per prompt: `benchmarks/step_breakdown.py --rollout-sweep 2,4,8`.
The last lines are the slopes.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log(y) on log(x)."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    den = sum((x - mx) ** 2 for x in lx)
    return sum((x - mx) * (y - my) for x, y in zip(lx, ly)) / den if den else float("nan")


def plot(items: list[tuple[int, float]], sizes: list[tuple[int, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(7.5, 3.0))
    for ax, pts, xlabel, title in ((axes[0], items, "items (x2 views)", "eval time vs items"),
                                   (axes[1], sizes, "image side (px)", "eval time vs image size")):
        if pts:
            xs, ys = zip(*pts)
            ax.loglog(xs, ys, "o-", base=2)
            ax.set_title(f"{title} (slope {slope(list(xs), list(ys)):.2f})", fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("seconds")
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="checkpoint folder (default: the reference vopd-tiny)")
    p.add_argument("--items", default="32,64,128,256")
    p.add_argument("--sizes", default="112,224,448")
    p.add_argument("--size-items", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--plot", default=None, help="write the log-log plot here (PNG)")
    p.add_argument("--json", default=None, help="also write the figures here")
    a = p.parse_args(argv)

    import torch

    torch.set_num_threads(a.threads)
    from vopd_bench.backends import BackendConfig
    from vopd_bench.backends.hf import HFBackend
    from vopd_bench.evaluate import EvalConfig, run_eval
    from vopd_bench.models import REFERENCE_DIR
    from vopd_bench.synth import ensure_dataset

    root = Path(tempfile.mkdtemp(prefix="vopd-scaling-"))
    bcfg = BackendConfig(model=a.model or str(REFERENCE_DIR), batch_size=a.batch_size)
    backend = HFBackend(bcfg)
    counter = iter(range(10**6))

    def timed(**kw: Any) -> float:
        runs = []
        for _ in range(a.repeat):
            cfg = EvalConfig(tasks=["synth"], backend=bcfg, out=str(root / f"r{next(counter)}"), progress=False, **kw)
            t0 = time.perf_counter()
            run_eval(cfg, backend)
            runs.append(time.perf_counter() - t0)
        return statistics.median(runs)

    ns = [int(x) for x in a.items.split(",") if x.strip()]
    sides = [int(x) for x in a.sizes.split(",") if x.strip()]
    run_eval(EvalConfig(tasks=["synth"], backend=bcfg, out=str(root / "warm"), limit=max(ns), progress=False), backend)
    data = {s: str(ensure_dataset(kind="clutter", n=a.size_items, seed=1234, image_size=s)) for s in sides}
    item_pts = [(n, timed(limit=n, views=["full", "crop"])) for n in ns]
    size_pts = [(s, timed(data={"synth": data[s]}, views=["full"])) for s in sides]
    print(f"model {bcfg.model}; batch {a.batch_size}; {a.threads} threads; medians of {a.repeat} runs")
    for n, t in item_pts:
        print(f"items {n:5d} (x2 views): {t:7.2f} s  {2 * n / t:6.2f} view-items/s")
    for s, t in size_pts:
        print(f"image {s:4d} px ({a.size_items} items, full view): {t:7.2f} s  {a.size_items / t:6.2f} items/s")
    if a.plot:
        plot(item_pts, size_pts, Path(a.plot))
        print(f"plot: {a.plot}")
    si = slope(*map(list, zip(*item_pts))) if len(item_pts) > 1 else float("nan")
    ss = slope(*map(list, zip(*size_pts))) if len(size_pts) > 1 else float("nan")
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "items": item_pts, "sizes": size_pts,
                                            "slope_items": si, "slope_size": ss}, indent=2))
    print(f"log-log slope, eval time vs items: {si:.2f}")
    print(f"log-log slope, eval time vs image side: {ss:.2f} (vs pixels: {ss / 2:.2f})")


if __name__ == "__main__":
    main()
