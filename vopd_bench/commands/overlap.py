"""`vopd-bench overlap TRAIN EVAL...`: training images that are perceptual-hash near-duplicates of
evaluation images; report them, and with `--drop OUT` write the training prompts without them."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("overlap")
@click.argument("train")
@click.argument("evals", nargs=-1, required=True)
@click.option("--threshold", type=int, default=10, show_default=True,
              help="Near-duplicate when the hashes differ in at most this many of 64 bits.")
@click.option("--hash", "method", default="phash", show_default=True, help="phash, dhash, average_hash or whash.")
@click.option("--report", default=None, help="Write the pairs found as JSON to this file.")
@click.option("--drop", "drop_out", default=None,
              help="Write TRAIN (a JSONL) without the near-duplicates to this file, each row marked as checked.")
def command(train: str, evals: tuple[str, ...], threshold: int, method: str, report: str | None,
            drop_out: str | None) -> None:
    """Check TRAIN against each EVAL. Each is an image folder, a JSONL with image paths (the prompt file of
    `vopd-bench prompts`, Vision-OPD-6K's train.jsonl or its folder) or a task: NAME or NAME=DATA."""
    from vopd_bench.runtime import atomic_write_json
    from vopd_bench.trainsets.overlap import check, drop, open_source

    tr = open_source(train)
    ev = [open_source(e) for e in evals]
    res = check(tr, ev, threshold=threshold, method=method)
    click.echo(f"{len(res.matches)} of {res.n_train} training images are near-duplicates (<= {threshold} bits, "
               f"{method}) of one of {res.n_eval} evaluation images ({', '.join(e.name for e in ev)})")
    for m in res.matches[:20]:
        click.echo(f"  {m.train_id}  ~  {m.eval_source}:{m.eval_id}  (distance {m.distance})")
    if len(res.matches) > 20:
        click.echo(f"  ... {len(res.matches) - 20} more (--report FILE lists all)")
    if res.unreadable:
        click.echo(f"{len(res.unreadable)} image(s) could not be read, e.g. {res.unreadable[0]}")
    if report:
        atomic_write_json(Path(report), res.to_dict())
        click.echo(f"report: {report}")
    if drop_out:
        n = drop(tr, res, list(evals), Path(drop_out))
        click.echo(f"wrote {len(tr.entries) - n} checked prompts to {drop_out} ({n} dropped)")
