"""`vopd-bench demo`: the whole story on the embedded default (no arguments, no downloads)."""

from __future__ import annotations

import click


@click.command("demo")
@click.option("--out", default="runs/demo", show_default=True, help="Run directories (base eval, training).")
@click.option("--reports", default="reports", show_default=True, help="Where the report is written.")
@click.option("--eval-limit", type=int, default=200, show_default=True, help="Items per eval set.")
@click.argument("overrides", nargs=-1)
def command(out: str, reports: str, eval_limit: int, overrides: tuple[str, ...]) -> None:
    """Base gap of vopd-tiny → Vision-OPD (trainers/demo.yaml; KEY=VALUE overrides) → report."""
    from vopd_bench.demo import DemoConfig, full_gain, run_demo
    from vopd_bench.summary import print_results
    from vopd_bench.train.curve import read_curve

    def show_base(base: dict) -> None:
        print_results(base, title="Base model (vopd-tiny): regional-to-global gap")
        click.echo("next: Vision-OPD with trainers/demo.yaml, every checkpoint re-scored ...")

    res = run_demo(DemoConfig(out=out, reports=reports, eval_limit=eval_limit, overrides=list(overrides)), show_base)
    curve = read_curve(res["train_dir"] / "curve.jsonl")
    first, last = curve[0], curve[-1]
    for task, t in last["tasks"].items():
        g0, g1 = first["tasks"][task].get("gap"), t.get("gap")
        views = "  ".join(
            f"{v} {100 * first['tasks'][task]['views'][v]['accuracy']:.1f} -> {100 * s['accuracy']:.1f}"
            for v, s in t["views"].items()
        )
        line = f"{task}: step {first['step']} -> {last['step']}: {views}"
        if g0 and g1 and g0.get("value"):
            red = 100 * (g0["value"] - g1["value"]) / g0["value"]
            line += f"  gap {g0['value']:+.1f} -> {g1['value']:+.1f} pts ({red:.0f}% of the base gap closed)"
            g = full_gain(first, last, task)
            line += f"; full-image gain {g['gain']:+.1f} pts, McNemar p = {g['p_value']:.2g} (n = {g['n']})"
        click.echo(line)
    s = res["seconds"]
    click.echo(f"time: base eval {s['base_eval']:.0f} s, training {s['train']:.0f} s, report {s['report']:.0f} s, "
               f"total {s['total']:.0f} s")
    click.echo(f"report: {res['report']}  (figures and tables under {reports}/)")
