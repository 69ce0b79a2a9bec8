"""`vopd-bench synth`: write a seeded synthetic fine-detail dataset (images + items.jsonl)."""

from __future__ import annotations

import click

from vopd_bench.errors import UserError


@click.command("synth")
@click.option("--out", "-o", required=True, help="Output folder (written atomically).")
@click.option("--kind", type=click.Choice(["clutter", "holdout", "plain"]), default="clutter", show_default=True,
              help="clutter = the gap task (`synth`); holdout = large uncluttered objects (`synth_holdout`).")
@click.option("--n", type=int, default=None, help="Number of items.")
@click.option("--seed", type=int, default=None)
@click.option("--clutter", type=float, default=None, help="Mean clutter strokes per image.")
@click.option("--target-size", nargs=2, type=int, default=None, help="Min and max target size in pixels.")
@click.option("--image-size", type=int, default=None)
@click.option("--categories", default=None, help="Comma-separated subset of colour,shape,digit.")
@click.option("--n-options", type=int, default=None)
def command(out, kind, **given) -> None:
    """Generate synthetic items with ground-truth boxes; evaluate them with `--task synth --data OUT`.

    An option left out takes its value from the `options` of the task that asks this kind of scene
    (tasks/synth.yaml for clutter and plain, tasks/synth_holdout.yaml for holdout), so by default OUT
    holds the items that task evaluates: colour questions, the only category `vopd-tiny` was taught.
    """
    from vopd_bench.synth import SynthConfig, generate, task_options

    kw = task_options(kind)
    if given["categories"]:
        given["categories"] = tuple(c.strip() for c in given["categories"].split(","))
    kw.update({k: v for k, v in given.items() if v is not None})
    n, seed = kw.pop("n"), kw.pop("seed")
    try:
        cfg = SynthConfig(**kw)
        path = generate(out, cfg, n=n, seed=seed)
    except ValueError as e:
        raise UserError(str(e)) from None
    click.echo(f"wrote {n} {kind} items ({', '.join(cfg.categories)}; seed {seed}) to {path}")
