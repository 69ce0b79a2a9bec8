"""`vopd-bench synth`: write a seeded synthetic fine-detail dataset (images + items.jsonl)."""

from __future__ import annotations

import click

from vopd_bench.errors import UserError


@click.command("synth")
@click.option("--out", "-o", required=True, help="Output folder (written atomically).")
@click.option("--n", type=int, default=500, show_default=True, help="Number of items.")
@click.option("--seed", type=int, default=1234, show_default=True)
@click.option("--kind", type=click.Choice(["clutter", "holdout", "plain"]), default="clutter", show_default=True,
              help="clutter = the gap task; holdout = large uncluttered objects.")
@click.option("--clutter", type=float, default=None, help="Mean clutter strokes per image (default by kind).")
@click.option("--target-size", nargs=2, type=int, default=None, help="Min and max target size in pixels.")
@click.option("--image-size", type=int, default=224, show_default=True)
@click.option("--categories", default=None, help="Comma-separated subset of the categories (default: all).")
@click.option("--n-options", type=int, default=4, show_default=True)
def command(out, n, seed, kind, clutter, target_size, image_size, categories, n_options) -> None:
    """Generate synthetic items with ground-truth boxes; evaluate them with `--task synth --data OUT`."""
    from vopd_bench.synth import SynthConfig, generate

    kw = {"kind": kind, "image_size": image_size, "n_options": n_options, "clutter": clutter,
          "target_size": tuple(target_size) if target_size else None}
    if categories:
        kw["categories"] = tuple(c.strip() for c in categories.split(","))
    try:
        cfg = SynthConfig(**kw)
        path = generate(out, cfg, n=n, seed=seed)
    except ValueError as e:
        raise UserError(str(e)) from None
    click.echo(f"wrote {n} {kind} items to {path}")
