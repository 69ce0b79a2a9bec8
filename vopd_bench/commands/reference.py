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
def pretrain_cmd(out: str, seed: int, steps: int | None, threads: int) -> None:
    """Supervised pre-training on zoomed views and easy scenes (deterministic given the seed)."""
    from vopd_bench.reference import PretrainConfig, pretrain

    kw = {"seed": seed, "steps": steps, "threads": threads}
    kw = {k: v for k, v in kw.items() if v is not None}
    path = pretrain(PretrainConfig(**kw), out)
    click.echo(f"reference model written to {path}")


@command.command("ceiling")
@click.option("--model", default="vopd-tiny", show_default=True)
@click.option("--steps", type=int, default=160, show_default=True, help="Same budget as the demo's distillation.")
@click.option("--out", default=None, help="Where to save the label-supervised model (optional).")
def ceiling_cmd(model: str, steps: int, out: str | None) -> None:
    """Diagnostic: label-supervised training on full cluttered scenes — the ceiling distillation can reach."""
    from vopd_bench.models import resolve_model
    from vopd_bench.reference import supervised_ceiling

    click.echo(json.dumps(supervised_ceiling(resolve_model(model), steps=steps, out_dir=out), indent=1))
