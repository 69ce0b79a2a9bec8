"""`vopd-bench reference`: make and check the embedded reference tiny model."""

from __future__ import annotations

import json

import click


@click.group("reference")
def command() -> None:
    """Pre-train the reference tiny model (vopd-tiny) and run its diagnostics."""


@command.command("pretrain")
@click.option("--out", required=True, help="Output folder (a checkpoint loadable with Auto* classes).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--steps", type=int, default=None, help="Optimizer steps (default: the recipe's).")
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: the recipe's; numbers depend on it slightly).")
def pretrain_cmd(out: str, seed: int, steps: int | None, threads: int | None) -> None:
    """Supervised pre-training on zoomed views and easy scenes (deterministic given the seed)."""
    from vopd_bench.reference.pretrain import PretrainConfig, pretrain

    kw = {"seed": seed, "steps": steps, "threads": threads}
    kw = {k: v for k, v in kw.items() if v is not None}
    path = pretrain(PretrainConfig(**kw), out)
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
def measure_cmd(model: str, n: int) -> None:
    """Greedy accuracy of a tiny checkpoint per view on two synthetic seeds, and on the holdout (JSON)."""
    from vopd_bench.models import resolve_model
    from vopd_bench.reference.measure import measure

    click.echo(json.dumps(measure(resolve_model(model), n=n), indent=1))
