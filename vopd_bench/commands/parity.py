"""`vopd-bench parity`: the same items on two backends (e.g. HF vs vLLM); agreement and accuracy drift."""

from __future__ import annotations

from typing import Any

import click

from vopd_bench.commands import _options as opts
from vopd_bench.commands._outcome import finish
from vopd_bench.commands.eval import parse_data

BATCH_SIZE = 16  # both sides, whatever their own default: the comparison is of backends, not of batch sizes


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _pts(x: float | None) -> str:
    return "–" if x is None else f"{x:+.1f}"


def print_report(report: dict[str, Any], a: str, b: str) -> None:
    """One row per task and view: n, answer/text agreement, both accuracies, difference, McNemar p."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Backend parity: {a} (a) vs {b} (b); gap = crop − full", title_justify="left")
    for col in ("task", "view", "n", "same answer %", "same text %", f"acc {a} %", f"acc {b} %", "Δ pts", "McNemar p"):
        table.add_column(col, justify="left" if col in ("task", "view") else "right")
    for task, t in report["tasks"].items():
        for view, v in t["views"].items():
            table.add_row(task, view, str(v["n"]), _pct(v["answer_agreement"]), _pct(v["text_agreement"]),
                          _pct(v["accuracy_a"]), _pct(v["accuracy_b"]), _pts(v["accuracy_diff"]), f"{v['mcnemar_p']:.3f}")
        if t["gap_a"] is not None:
            table.add_row(task, "gap", "", "", "", _pts(t["gap_a"]), _pts(t["gap_b"]), _pts(t["gap_diff"]), "")
    Console().print(table)


@click.command("parity", cls=opts.BackendCommand)
@click.option("--a", "backend_a", type=opts.BackendChoice(), default="hf", show_default=True, help="First backend.")
@click.option("--b", "backend_b", type=opts.BackendChoice(), default="vllm", show_default=True, help="Second backend.")
@click.option("--min-agreement", type=float, default=None,
              help="Exit with status 1 if any task/view's answer agreement is below this fraction (e.g. 0.98).")
@opts.shared_options(
    out="Output folder (default runs/parity-<model>-<a>-vs-<b>); re-running resumes.",
    overwrite="Replace run directories that hold a different configuration.",
    batch_size=f"Requests per backend call (default {BATCH_SIZE}, the same on both sides).",
)
def command(**kw: Any) -> None:
    """Run the same items on backends A and B; report agreement of answers and accuracy drift per view."""
    from vopd_bench.parity import ParityConfig, min_agreement, run_parity

    a, b = kw["backend_a"], kw["backend_b"]
    cfg = ParityConfig(
        tasks=list(kw["tasks"]), a=opts.backend_config(a, kw, BATCH_SIZE), b=opts.backend_config(b, kw, BATCH_SIZE),
        out=kw["out"] or f"runs/parity-{opts.model_slug(kw['model'])}-{a}-vs-{b}", views=opts.split_views(kw["views"]),
        data=parse_data(kw["data"], kw["tasks"]), limit=kw["limit"], seed=kw["seed"],
        max_new_tokens=kw["max_new_tokens"], overwrite=kw["overwrite"], progress=not kw["quiet"],
    )
    report = run_parity(cfg)
    print_report(report, a, b)
    click.echo(f"parity report: {cfg.out}/parity.json")
    views = [v for t in report["tasks"].values() for v in t["views"].values()]
    finish(sum(v["errors_a"] + v["errors_b"] for v in views), sum(2 * v["n"] for v in views), kw["allow_errors"])
    worst = min_agreement(report)
    if kw["min_agreement"] is not None and (worst is None or worst < kw["min_agreement"]):
        click.echo(f"answer agreement {worst} is below --min-agreement {kw['min_agreement']}", err=True)
        raise SystemExit(1)
