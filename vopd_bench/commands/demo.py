"""`vopd-bench demo`: the whole story on the embedded default (no arguments, no downloads)."""

from __future__ import annotations

import click


@click.command("demo")
@click.option("--out", default="runs/demo", show_default=True, help="Run directories (base eval, training).")
@click.option("--report-dir", "--reports", "report_dir", default=None,
              help="Where the report is written (default OUT/report). `--report-dir reports` refreshes the "
                   "repository's committed snapshot.")
@click.option("--eval-limit", type=int, default=200, show_default=True, help="Items per eval set.")
@click.argument("overrides", nargs=-1)
def command(out: str, report_dir: str | None, eval_limit: int, overrides: tuple[str, ...]) -> None:
    """Base gap of vopd-tiny → Vision-OPD (trainers/demo.yaml; KEY=VALUE overrides) → report."""
    from vopd_bench.demo import DemoConfig, run_demo, summary_lines
    from vopd_bench.summary import print_results

    def show_base(base: dict) -> None:
        print_results(base, title="Base model (vopd-tiny): regional-to-global gap")
        click.echo("next: Vision-OPD with trainers/demo.yaml, every checkpoint re-scored ...")

    cfg = DemoConfig(out=out, reports=report_dir, eval_limit=eval_limit, overrides=list(overrides))
    res = run_demo(cfg, show_base)
    for line in summary_lines(res["train_dir"]):
        click.echo(line)
    s = res["seconds"]
    click.echo(f"time: base eval {s['base_eval']:.0f} s, training {s['train']:.0f} s, report {s['report']:.0f} s, "
               f"total {s['total']:.0f} s")
    click.echo(f"report: {res['report']}  (figures and tables under {res['report'].parent}/)")
