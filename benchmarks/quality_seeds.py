"""Quality variance of the demo: the demo recipe's gap reduction over several training seeds.

    .venv/bin/python benchmarks/quality_seeds.py                      # seeds 0 1 2, the demo's 100 steps
    .venv/bin/python benchmarks/quality_seeds.py --repeat 0           # + seed 0 again: byte-identical?

Each seed is one `vopd-bench train --recipe demo seed=S eval_every=STEPS` run (only the recipe's `seed` key
differs: the prompt order and the rollout sampling; the data, the eval items and the model are the same), scored
at step 0 and at the last step (the demo scores every 25 steps; scoring does not move the training's random
stream, so the last point is the same). The model is the reference checkpoint as found when the script starts,
copied to `<out>/models/<sha256[:12]>/` so a model shipped meanwhile cannot mix into a run; the run directories
are `<out>/<sha256[:12]>/<recipe>_seed-S` and a re-run resumes them (a finished run is only read).

Prints one line per seed (full / crop / holdout at step 0 and at the last step, the gap before/after, the share of
the base gap closed by the full view), then mean / min / max over the seeds as its last lines; writes the figures
(with the model's sha256, the commit, the wall time per run) to `--json`. `recipe_sweep.py` imports the helpers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from vopd_bench.runtime import file_sha256

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "quality"
GAP_TASK, HOLDOUT_TASK = "synth", "synth_holdout"


# ----------------------------------------------------------------------------- model and provenance
def model_snapshot(model: str, out: Path) -> tuple[str, str]:
    """(folder to train, sha256 of its model.safetensors). `vopd-tiny` is copied to `out/models/<sha[:12]>` (the
    hash taken on the copy, so a checkpoint replaced during the copy is caught by the next run, not mixed in)."""
    from vopd_bench.models import REFERENCE_NAME, resolve_model

    src = Path(resolve_model(model))
    if model != REFERENCE_NAME:
        return str(src), file_sha256(src / "model.safetensors")
    tmp = out / "models" / f".copy-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    digest = file_sha256(tmp / "model.safetensors")
    dest = out / "models" / digest[:12]
    if dest.is_dir():
        shutil.rmtree(tmp)
    else:
        tmp.rename(dest)
    return str(dest), digest


def provenance() -> dict[str, Any]:
    """Commit, files changed in the working tree, host CPU and the time: what a figure was measured on."""
    def git(*args: str) -> str:
        p = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return p.stdout.strip() if p.returncode == 0 else ""

    cpu = ""
    with contextlib.suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
    return {"commit": git("rev-parse", "HEAD"), "dirty": git("status", "--short", "--untracked-files=no").split("\n"),
            "cpu": cpu, "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


# ----------------------------------------------------------------------------- one run
def run_name(recipe: str, settings: dict[str, Any], every: int | None = None, steps: int | None = None) -> str:
    """`<recipe>_<key>-<value>...`, with `_every-N` when the run is scored every N < `steps` steps."""
    stem = Path(recipe).stem
    suffix = [f"every-{every}"] if every is not None and every != steps else []
    return "_".join([stem, *(f"{k}-{v}" for k, v in settings.items()), *suffix])


def train(recipe: str, settings: dict[str, Any], extra: list[str], model_dir: str, out: Path) -> dict[str, Any]:
    """One `vopd-bench train` process (resumes `out`); its log goes to `out.log`. Returns `summarize(out)` with the
    wall time and the exit status."""
    out.parent.mkdir(parents=True, exist_ok=True)
    overrides = [f"{k}={v}" for k, v in settings.items()] + [f"model={model_dir}", "progress=false", *extra]
    cmd = [sys.executable, "-m", "vopd_bench.cli", "train", "--recipe", recipe, "--out", str(out), *overrides]
    before = summarize(out)["steps_done"] if (out / "curve.jsonl").is_file() else None
    t0 = time.perf_counter()
    with open(f"{out}.log", "a") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        rc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    res = summarize(out) if (out / "curve.jsonl").is_file() else {}
    if res.get("steps_done") != before:  # it trained (or scored): add its time to the run's wall time
        walls = wall_times(out) + [round(wall, 1)]
        Path(f"{out}.wall.json").write_text(json.dumps(walls) + "\n")
    res.update({"run": str(out), "overrides": overrides, "rc": rc, "wall_s": sum(wall_times(out)),
                "wall_s_this_call": round(wall, 1)})
    if rc != 0:
        res["error"] = Path(f"{out}.log").read_text().strip().splitlines()[-1:]
    return res


def wall_times(out: Path) -> list[float]:
    """Seconds of each invocation that trained or scored the run `out` (a resumed run has several)."""
    p = Path(f"{out}.wall.json")
    return json.loads(p.read_text()) if p.is_file() else []


def _acc(point: Any, task: str, view: str) -> float | None:
    t = point.tasks.get(task)
    s = t.views.get(view) if t is not None else None
    return None if s is None or s.accuracy is None else round(100.0 * s.accuracy, 2)


def summarize(out: Path) -> dict[str, Any]:
    """Step 0 and the last scored step of a training run: full / crop / holdout accuracy (%), the gap, the closure,
    the collapse warnings of any point, the mean step time and the final weights' sha256."""
    from vopd_bench.train.curve import closure_block
    from vopd_bench.train.rundir import TrainRun

    run = TrainRun(out)
    curve = run.curve()
    first, last = curve[0], curve[-1]
    cfg = json.loads((out / "config.json").read_text())

    def point(p: Any) -> dict[str, Any]:
        t = p.tasks.get(GAP_TASK)
        return {"step": p.step, "full": _acc(p, GAP_TASK, "full"), "crop": _acc(p, GAP_TASK, "crop"),
                "holdout": _acc(p, HOLDOUT_TASK, "full"),
                "gap": None if t is None or t.gap is None else round(t.gap.value, 2)}

    closure = None
    if last.step != first.step and GAP_TASK in last.tasks:
        c = last.tasks[GAP_TASK].closure or closure_block(run, first, last, GAP_TASK)
        closure = None if c is None else {"value": c.value, "ci_low": c.ci_low, "ci_high": c.ci_high,
                                          "gap_reduction": c.gap_reduction}
    weights = out / "checkpoints" / f"step-{last.step}" / "model.safetensors"
    return {"seed": cfg.get("seed"), "steps_done": last.step, "start": point(first), "end": point(last),
            "closure": closure, "collapse_warning": any(p.warnings for p in curve),
            "warnings": [w for p in curve for w in p.warnings],
            "step_s": (last.train or {}).get("step_s"), "eval_s": [p.eval_s for p in curve],
            "weights_sha256": file_sha256(weights) if weights.is_file() else None}


def report_model(model: str, sha: str | None) -> tuple[str, str]:
    """(folder, sha256) of the model whose runs a --report-only call reads: `sha` when given, else the model's own."""
    from vopd_bench.models import resolve_model

    folder = resolve_model(model)
    return folder, sha or file_sha256(Path(folder) / "model.safetensors")


def finished(out: Path) -> dict[str, Any] | None:
    """A run's figures as far as it got (its last scored step; None before a trained step was scored), for
    --report-only."""
    if not (out / "curve.jsonl").is_file():
        return None
    r = summarize(out)
    return None if r["steps_done"] == 0 else r | {"run": str(out), "wall_s": sum(wall_times(out))}


def copy_raw(out: Path, dest: Path) -> None:
    """The run's small records (config.json, curve.jsonl, train_log.jsonl, the log) into the results folder."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "curve.jsonl", "train_log.jsonl"):
        if (out / name).is_file():
            shutil.copy2(out / name, dest / name)
    for suffix, name in ((".log", "train.log"), (".wall.json", "wall.json")):
        if Path(f"{out}{suffix}").is_file():
            shutil.copy2(f"{out}{suffix}", dest / name)


def same_run(a: Path, b: Path) -> dict[str, Any]:
    """Whether two runs of one config agree: final weights byte for byte, and the responses of every scored item."""
    from vopd_bench.train.rundir import TrainRun

    sa, sb = summarize(a), summarize(b)
    step = sa["steps_done"]

    def responses(run: Path) -> dict[str, str]:
        d = TrainRun(run).path / "evals" / f"step-{step}" / "samples"
        out = {}
        for f in sorted(d.rglob("*.jsonl")):
            for line in f.read_text().splitlines():
                r = json.loads(line)
                out[f"{f.parent.name}/{f.stem}/{r['id']}"] = r.get("response")
        return out

    ra, rb = responses(a), responses(b)
    return {"a": str(a), "b": str(b), "step": step, "weights_identical": sa["weights_sha256"] == sb["weights_sha256"],
            "weights_sha256": [sa["weights_sha256"], sb["weights_sha256"]],
            "responses_compared": len(ra), "responses_differing": sum(ra.get(k) != rb.get(k) for k in ra | rb),
            "end_identical": sa["end"] == sb["end"], "end": [sa["end"], sb["end"]]}


# ----------------------------------------------------------------------------- printing
def fmt(x: float | None, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def seed_line(r: dict[str, Any]) -> str:
    s, e, c = r["start"], r["end"], r.get("closure") or {}
    return (f"seed {r['seed']} (step {s['step']} -> {e['step']}): full {fmt(s['full'])} -> {fmt(e['full'])}  crop {fmt(s['crop'])} -> {fmt(e['crop'])}  "
            f"holdout {fmt(s['holdout'])} -> {fmt(e['holdout'])}  gap {fmt(s['gap'], '+.1f')} -> {fmt(e['gap'], '+.1f')}"
            f"  closure {fmt(100 * c['value'] if c.get('value') is not None else None)}%"
            f"{'  COLLAPSE WARNING' if r['collapse_warning'] else ''}  ({r['wall_s']:.0f} s)")


def spread(values: list[float | None]) -> dict[str, float] | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"mean": round(statistics.fmean(vals), 2), "min": min(vals), "max": max(vals), "n": len(vals)}


def seed_spread(runs: list[dict[str, Any]]) -> dict[str, Any]:
    closures = [100 * r["closure"]["value"] if r.get("closure") and r["closure"]["value"] is not None else None
                for r in runs]
    return {"full_end": spread([r["end"]["full"] for r in runs]), "crop_end": spread([r["end"]["crop"] for r in runs]),
            "holdout_end": spread([r["end"]["holdout"] for r in runs]), "gap_start": spread([r["start"]["gap"] for r in runs]),
            "gap_end": spread([r["end"]["gap"] for r in runs]),
            "closure_pct": spread([None if c is None else round(c, 2) for c in closures])}


def spread_lines(sp: dict[str, Any]) -> list[str]:
    names = {"full_end": "full (last step)", "crop_end": "crop (last step)", "holdout_end": "holdout (last step)",
             "gap_start": "gap (step 0)", "gap_end": "gap (last step)", "closure_pct": "closure %"}
    return [f"{names[k]:20s} mean {v['mean']:.1f}  min {v['min']:.1f}  max {v['max']:.1f}  (n = {v['n']})"
            for k, v in sp.items() if v is not None]


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", default="demo", help="training recipe (default: the demo's)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (the recipe's `seed`)")
    ap.add_argument("--model", default="vopd-tiny", help="model (vopd-tiny: snapshot of the shipped checkpoint)")
    ap.add_argument("--eval-every", type=int, default=None, help="steps between scorings (default: the run's steps)")
    ap.add_argument("--repeat", type=int, default=None, metavar="SEED",
                    help="run this seed a second time and compare (weights byte for byte, every response)")
    ap.add_argument("--compare-with", type=Path, default=None, metavar="RUN",
                    help="an earlier training run of the same config to compare the first seed with (e.g. runs/demo/train)")
    ap.add_argument("--report-only", action="store_true",
                    help="train nothing: the figures of the runs there, unfinished ones at their last scored step")
    ap.add_argument("--model-sha", default=None, metavar="SHA",
                    help="with --report-only: the runs of this model (sha256; default: the shipped checkpoint's)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "quality", help="where the runs go")
    ap.add_argument("--json", type=Path, default=None, help="figures (default benchmarks/results/quality/seeds_<sha>.json)")
    ap.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                    help="another override for every run (e.g. steps=2 for a smoke test)")
    args = ap.parse_args(argv)

    from vopd_bench.train.config import load_config

    steps = load_config(args.recipe, args.extra).steps
    every = args.eval_every or steps
    model_dir, digest = report_model(args.model, args.model_sha) if args.report_only else model_snapshot(args.model,
                                                                                                          args.out)
    print(f"model {args.model}: sha256 {digest} ({model_dir})", flush=True)
    base = args.out / digest[:12]
    extra = [*args.extra, f"eval_every={every}"]
    path = args.json or RESULTS / f"seeds_{digest[:12]}.json"
    raw = path.parent / digest[:12]  # each run's config, curve, train log and log beside the figures
    runs = []
    for seed in args.seeds:
        out = base / run_name(args.recipe, {"seed": seed}, every, steps)
        if args.report_only:
            r = finished(out)
            if r is not None:
                copy_raw(out, raw / out.name)
                runs.append(r)
                print(seed_line(r), flush=True)
            continue
        r = train(args.recipe, {"seed": seed}, extra, model_dir, out)
        if r.get("rc") == 0:
            copy_raw(out, raw / out.name)
            runs.append(r)
            print(seed_line(r), flush=True)
        else:
            print(f"seed {seed}: FAILED (exit {r['rc']}): {r.get('error')} (log {out}.log)", flush=True)
    checks = []
    if args.repeat is not None and not args.report_only:
        first = base / run_name(args.recipe, {"seed": args.repeat}, every, steps)
        again = base / (run_name(args.recipe, {"seed": args.repeat}, every, steps) + "_repeat")
        r = train(args.recipe, {"seed": args.repeat}, extra, model_dir, again)
        if r.get("rc") == 0 and first.is_dir():
            checks.append(same_run(first, again) | {"wall_s": r["wall_s"]})
    if args.compare_with is not None and args.seeds:
        checks.append(same_run(base / run_name(args.recipe, {"seed": args.seeds[0]}, every, steps), args.compare_with))
    for c in checks:
        print(f"same config twice ({c['a']} vs {c['b']}, step {c['step']}): weights byte-identical "
              f"{c['weights_identical']}; {c['responses_differing']} of {c['responses_compared']} responses differ",
              flush=True)
    sp = seed_spread(runs)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"what": "demo recipe over training seeds", "recipe": args.recipe,
                                "model": args.model, "model_sha256": digest, "steps": steps, "eval_every": every,
                                "extra": args.extra, "provenance": provenance(), "runs": runs,
                                "determinism": checks, "spread": sp}, indent=1) + "\n")
    print(f"figures: {path}")
    last = "/".join(str(s) for s in sorted({r["end"]["step"] for r in runs})) or "-"
    print(f"over {len(runs)} seed(s) of `{args.recipe}` (step {last} of {steps}, model sha256 {digest[:12]}):")
    for line in spread_lines(sp):
        print(line)
    return 0 if len(runs) == len(args.seeds) or args.report_only else 1


if __name__ == "__main__":
    sys.exit(main())
