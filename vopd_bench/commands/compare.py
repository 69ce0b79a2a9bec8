"""`vopd-bench compare`: which items a method fixed or broke, per task and view."""

from __future__ import annotations

from pathlib import Path

import click

from vopd_bench.compare import compare_runs, training_endpoints
from vopd_bench.errors import UserError
from vopd_bench.runtime import atomic_write_json
from vopd_bench.train.rundir import TrainRun

SHOW_IDS = 8


@click.command("compare")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--steps", nargs=2, type=int, default=None, metavar="FIRST LAST",
              help="For a training run: compare these two checkpoints (default: the first and the last scored).")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None,
              help="Also write every table with the full lists of fixed/broken item ids to this JSON file.")
def command(runs: tuple[Path, ...], steps: tuple[int, int] | None, json_out: Path | None) -> None:
    """Per task and view: items fixed, broken, right in both, wrong in both, and the exact McNemar p.

    RUNS: two eval run directories (A = before, B = after), or one training run (its first vs last scored
    checkpoint)."""
    for r in runs:
        if not r.is_dir():
            raise UserError(f"run directory not found: {r}")
    if len(runs) == 1:
        if TrainRun(runs[0]).read_config() is None:
            raise UserError(f"{runs[0]} is not a training run; give two eval run dirs (A B) or one training run")
        a, b, la, lb = training_endpoints(runs[0], *(steps or (None, None)))
    elif len(runs) == 2:
        if steps:
            raise UserError("--steps applies to one training run, not to two eval run dirs")
        a, b = runs
        la, lb = str(a), str(b)
    else:
        raise UserError(f"give two eval run dirs or one training run, got {len(runs)} paths")
    table = compare_runs(a, b)
    click.echo(f"A = {la}\nB = {lb}")
    click.echo(f"{'task':<18} {'view':<14} {'n':>5} {'both ✓':>7} {'fixed':>6} {'broken':>7} {'both ✗':>7} "
               f"{'net (pts)':>9} {'McNemar p':>10}")
    for t in table:
        net = "—" if t.net_points is None else f"{t.net_points:+.1f}"
        click.echo(f"{t.task:<18} {t.view:<14} {t.n:>5} {t.both_right:>7} {t.fixed:>6} {t.broken:>7} "
                   f"{t.both_wrong:>7} {net:>9} {t.p_value:>10.3g}")
    for t in table:
        for name, ids in (("fixed", t.fixed_ids), ("broken", t.broken_ids)):
            if ids:
                more = f" … (+{len(ids) - SHOW_IDS}; --json for all)" if len(ids) > SHOW_IDS else ""
                click.echo(f"{t.task}/{t.view} {name}: {', '.join(ids[:SHOW_IDS])}{more}")
        if t.errors or t.only_in_one:
            click.echo(f"{t.task}/{t.view}: {t.errors} item(s) with an error in a run and {t.only_in_one} scored in "
                       "one run only are left out")
    if json_out:
        atomic_write_json(json_out, {"a": str(a), "b": str(b), "label_a": la, "label_b": lb,
                                     "tables": [t.to_dict() for t in table]})
        click.echo(f"wrote {json_out}")
