"""`vopd-bench reference`: make and check the embedded reference tiny model."""

from __future__ import annotations

import json

import click


@click.group("reference")
def command() -> None:
    """Pre-train the reference tiny model (vopd-tiny) and run its diagnostics."""


def _mix(value: str | None) -> dict[str, float] | None:
    """`crop=0.35,ground=0.3,...` -> {source: weight}."""
    if not value:
        return None
    out = {}
    for part in value.split(","):
        key, sep, weight = part.partition("=")
        try:
            out[key.strip()] = float(weight)
        except ValueError:
            sep = ""
        if not sep:
            raise click.BadParameter(f"expected SOURCE=WEIGHT pairs separated by commas, got {part!r}")
    return out


def _pair(value: str | None, name: str) -> list[float] | None:
    """`LO,HI` -> [LO, HI]."""
    if not value:
        return None
    try:
        lo, hi = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected MIN,MAX, got {value!r}", param_hint=name) from None
    return [lo, hi]


@command.command("pretrain")
@click.option("--out", required=True, help="Output folder (a checkpoint loadable with Auto* classes).")
@click.option("--recipe", type=click.Choice(["base", "ground"]), default="base", show_default=True,
              help="base: the first stage from random weights; ground: the grounding stage (needs --init).")
@click.option("--init", default=None, help="Continue from this checkpoint folder (a previous stage's --out).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--steps", type=int, default=None, help="Optimizer steps (default: the recipe's).")
@click.option("--lr", type=float, default=None, help="Peak learning rate (default: the recipe's).")
@click.option("--warmup", type=int, default=None, help="Warm-up steps (default: the recipe's).")
@click.option("--mix", default=None, help="Example sources and weights, e.g. crop=0.35,ground=0.3 (default: the recipe's; "
              "sources: crop, plain, plain_small, light, ground).")
@click.option("--ground-clutter", default=None, help="ground scenes' clutter range MIN,MAX strokes (default: the recipe's).")
@click.option("--eval-every", type=int, default=None, help="Steps between evaluations (default: the recipe's).")
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: the recipe's; numbers depend on it slightly).")
@click.option("--rope-theta", type=float, default=None,
              help="With --init: the text decoder's new rotary base (M-RoPE theta; default: keep the checkpoint's).")
def pretrain_cmd(out: str, recipe: str, init: str | None, seed: int, steps: int | None, lr: float | None,
                 warmup: int | None, mix: str | None, ground_clutter: str | None, eval_every: int | None,
                 threads: int | None, rope_theta: float | None) -> None:
    """Supervised pre-training on zoomed views and easy scenes (deterministic given the seed); with
    `--recipe ground --init STAGE1`, the second stage that teaches the grounding prompt."""
    from vopd_bench.errors import UserError
    from vopd_bench.reference.pretrain import PretrainConfig, pretrain

    if recipe == "ground" and not init:
        raise UserError("--recipe ground continues a pre-trained checkpoint: give --init FOLDER (e.g. the first "
                        "stage's --out)")
    kw = {"seed": seed, "steps": steps, "threads": threads, "lr": lr, "warmup": warmup, "init": init,
          "mix": _mix(mix), "ground_clutter": _pair(ground_clutter, "--ground-clutter"), "eval_every": eval_every, "rope_theta": rope_theta}
    kw = {k: v for k, v in kw.items() if v is not None}
    try:
        cfg = PretrainConfig.recipe(recipe, **kw)
    except ValueError as e:
        raise UserError(f"vopd-bench reference pretrain: {e}") from None
    path = pretrain(cfg, out)
    click.echo(f"reference model written to {path}")


@command.command("ceiling", context_settings={"ignore_unknown_options": True})
@click.option("--recipe", default="demo", show_default=True, help="The distillation recipe whose budget is matched.")
@click.option("--out", default="runs/ceiling", show_default=True, help="Run directory (curve.jsonl, gap_curve.png).")
@click.argument("overrides", nargs=-1)
def ceiling_cmd(recipe: str, out: str, overrides: tuple[str, ...]) -> None:
    """Diagnostic: the label-supervised ceiling of a distillation recipe.

    Trains with the recipe's prompts, steps, batch, optimiser and anchor, but on the gold answers of the
    full-image prompts (cross-entropy) instead of the crop teacher -- what a label-free run of the same
    budget is judged against. Never part of the demo. OVERRIDES are key=value like `vopd-bench train`.
    """
    from vopd_bench.reference.ceiling import ceiling, curve_lines

    run = ceiling(recipe, out, overrides)
    for line in curve_lines(run):
        click.echo(line)
    click.echo(f"label-supervised ceiling written to {run}")


@command.command("measure")
@click.option("--model", default="vopd-tiny", show_default=True)
@click.option("--n", type=int, default=500, show_default=True, help="Items per synthetic set.")
@click.option("--seeds", default="1234,5678", show_default=True, help="Seeds of the synthetic sets (comma-separated).")
@click.option("--ground-n", type=int, default=200, show_default=True,
              help="Items of the first seed's set on which grounding is measured (0: skip).")
def measure_cmd(model: str, n: int, seeds: str, ground_n: int) -> None:
    """Greedy accuracy of a tiny checkpoint per view on synthetic seeds and on the holdout, and how well it
    answers the grounding prompt (parse rate, IoU, centre hits, self-zoom accuracy) (JSON)."""
    from vopd_bench.errors import UserError
    from vopd_bench.models import resolve_model
    from vopd_bench.reference.measure import measure

    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds: expected comma-separated integers, got {seeds!r}") from None
    if not seed_list or n < 1 or ground_n < 0:
        raise UserError("--seeds needs at least one seed, --n must be >= 1 and --ground-n >= 0")
    click.echo(json.dumps(measure(resolve_model(model), n=n, seeds=seed_list, ground_n=ground_n), indent=1))
