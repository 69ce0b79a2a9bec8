"""Recipe sensitivity: the paper's Vision-OPD recipe on the reference model over a grid of lr and EMA rate.

    .venv/bin/python benchmarks/recipe_sweep.py                               # lr 1e-4 2e-4 4e-4 7e-4, EMA 0.05
    .venv/bin/python benchmarks/recipe_sweep.py --ema 0.05 0.2                # + a second EMA rate
    .venv/bin/python benchmarks/recipe_sweep.py --report-only                 # the table of the finished runs

The paper's recipe is `trainers/paper_recipe_tiny.yaml` (EMA teacher 0.05, generalized JSD beta 0.5 over the
student's top-100 logits + a tail bucket, no anchor) with the demo's data, steps, batch and schedule; each cell is
one `vopd-bench train --recipe paper_recipe_tiny lr=LR ema_rate=R eval_every=STEPS` run (step 0 and the last step
scored). The grid runs EMA rate by EMA rate in the order given (the first rate's lr grid first), then the demo
recipe's own row (frozen teacher, forward KL (beta 0) over the full vocabulary, anchor 0.5: what its deviations
buy), which is `quality_seeds.py`'s seed-0 run and shares its directory. The model, the run directories and
resuming are as in `quality_seeds.py`.

Prints the table of full / crop / holdout at step 0 and the last step, the gap, the closure and whether the
collapse warning fired, one row per run, as its last lines; writes the figures to `--json`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import quality_seeds as qs  # noqa: E402  (the sibling script: benchmarks/ is on the path)

PAPER = "paper_recipe_tiny"
DEMO = "demo"


def cells(lrs: list[float], emas: list[float], demo: bool) -> list[tuple[str, dict[str, Any]]]:
    """(recipe, settings) in run order: every lr at the first EMA rate, the demo's row, then the other rates."""
    out: list[tuple[str, dict[str, Any]]] = [(PAPER, {"lr": lr, "ema_rate": emas[0]}) for lr in lrs]
    if demo:
        out.append((DEMO, {"seed": 0}))
    out += [(PAPER, {"lr": lr, "ema_rate": r}) for r in emas[1:] for lr in lrs]
    return out


def row(recipe: str, settings: dict[str, Any], r: dict[str, Any]) -> str:
    s, e, c = r["start"], r["end"], r.get("closure") or {}
    what = ("demo (frozen, beta 0, anchor 0.5, lr 7e-4)" if recipe == DEMO
            else f"paper lr {settings['lr']:g} ema {settings['ema_rate']:g}")
    closure = qs.fmt(100 * c["value"]) if c.get("value") is not None else "-"
    return (f"| {what} | {e['step']} | {qs.fmt(s['full'])} → {qs.fmt(e['full'])} | {qs.fmt(s['crop'])} → {qs.fmt(e['crop'])} | "
            f"{qs.fmt(s['holdout'])} → {qs.fmt(e['holdout'])} | {qs.fmt(s['gap'], '+.1f')} → {qs.fmt(e['gap'], '+.1f')} | "
            f"{closure} | {'yes' if r['collapse_warning'] else 'no'} | {r.get('wall_s', 0):.0f} |")


HEADER = ("| recipe | last step | full | crop | holdout | gap | closure % | collapse warning | wall s |\n"
          "|---|---|---|---|---|---|---|---|---|")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lr", type=float, nargs="+", default=[1e-4, 2e-4, 4e-4, 7e-4], help="learning rates")
    ap.add_argument("--ema", type=float, nargs="+", default=[0.05], help="EMA rates (the first one's grid runs first)")
    ap.add_argument("--no-demo", action="store_true", help="leave out the demo recipe's row")
    ap.add_argument("--model", default="vopd-tiny", help="model (vopd-tiny: snapshot of the shipped checkpoint)")
    ap.add_argument("--model-sha", default=None, metavar="SHA",
                    help="with --report-only: the runs of this model (sha256 or its first 12 digits; default: the "
                         "shipped checkpoint's)")
    ap.add_argument("--report-only", action="store_true",
                    help="train nothing: the table of the runs there, unfinished ones at their last scored step")
    ap.add_argument("--eval-every", type=int, default=None, help="steps between scorings (default: the run's steps)")
    ap.add_argument("--out", type=Path, default=qs.ROOT / "runs" / "quality", help="where the runs go")
    ap.add_argument("--json", type=Path, default=None, help="figures (default benchmarks/results/quality/sweep_<sha>.json)")
    ap.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                    help="another override for every run (e.g. steps=2 for a smoke test)")
    args = ap.parse_args(argv)

    from vopd_bench.train.config import load_config

    steps = load_config(PAPER, args.extra).steps
    every = args.eval_every or steps
    if args.report_only:
        model_dir, digest = qs.report_model(args.model, args.model_sha)
    else:
        model_dir, digest = qs.model_snapshot(args.model, args.out)
    print(f"model {args.model}: sha256 {digest} ({model_dir})", flush=True)
    base = args.out / digest[:12]
    extra = [*args.extra, f"eval_every={every}"]
    path = args.json or qs.RESULTS / f"sweep_{digest[:12]}.json"  # the runs' raw records go beside it
    done: list[dict[str, Any]] = []
    lines = []
    for recipe, settings in cells(args.lr, args.ema, not args.no_demo):
        out = base / qs.run_name(recipe, settings, every, steps)
        if args.report_only:
            r = qs.finished(out)
            if r is None:
                continue
            if args.json:
                qs.copy_raw(out, path.parent / digest[:12] / out.name)
        else:
            r = qs.train(recipe, settings, extra, model_dir, out)
            if r.get("rc") != 0:
                print(f"{recipe} {settings}: FAILED (exit {r['rc']}): {r.get('error')} (log {out}.log)", flush=True)
                continue
            qs.copy_raw(out, path.parent / digest[:12] / out.name)
        r.update({"recipe": recipe, "settings": settings})
        done.append(r)
        lines.append(row(recipe, settings, r))
        print(lines[-1], flush=True)
    if not args.report_only or args.json:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"what": "paper recipe over lr x EMA rate, and the demo recipe", "model": args.model,
                                    "model_sha256": digest, "steps": steps, "eval_every": every, "extra": args.extra,
                                    "provenance": qs.provenance(), "runs": done}, indent=1) + "\n")
        print(f"figures: {path}")
    print(f"the paper recipe ({PAPER}) vs the demo's, {steps} steps, model sha256 {digest[:12]}; "
          "accuracies %, step 0 → last step:")
    print(HEADER)
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
