"""Wall time of `vopd-bench eval` re-run on a finished run directory, against the first run (CLI start-up
included). Goal (new-user issue): the finished re-run costs <= 5% of the first run at 200 items.
Prints figures; asserts nothing.

usage: python benchmarks/rerun_cli.py [--n 200] [--repeat 3] [--model vopd-tiny] [--task synth]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = [sys.executable, "-m", "vopd_bench.cli"]


def timed(args: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    p = subprocess.run(CLI + args, capture_output=True, text=True, check=True)
    return time.perf_counter() - t0, p.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="items (each in full and crop)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--model", default="vopd-tiny")
    ap.add_argument("--task", default="synth")
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="vopd-rerun-"))
    os.environ.setdefault("VOPD_BENCH_CACHE", str(root / "cache"))
    args = ["eval", "--model", a.model, "--task", a.task, "--limit", str(a.n), "-q"]
    timed([*args, "--out", str(root / "warm")])  # generates the synthetic data once, outside the timings
    firsts, reruns = [], []
    try:
        for i in range(a.repeat):
            out = ["--out", str(root / f"run{i}")]
            firsts.append(timed(args + out)[0])
            t, err = timed(args + out)
            if "already holds this run" not in err:
                print(f"warning: re-run {i} did not take the finished-run path", file=sys.stderr)
            reruns.append(t)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    f, r = statistics.median(firsts), statistics.median(reruns)
    print(f"first run   {f:6.2f} s  (median of {a.repeat}: {', '.join(f'{x:.2f}' for x in firsts)})")
    print(f"re-run      {r:6.2f} s  (median of {a.repeat}: {', '.join(f'{x:.2f}' for x in reruns)})")
    print(f"ratio       {100 * r / f:5.1f}%  (goal <= 5%: {'met' if r <= 0.05 * f else 'not met'})")


if __name__ == "__main__":
    main()
