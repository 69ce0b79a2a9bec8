"""`vopd-bench parity`: the same items on two backends (e.g. HF vs vLLM); agreement and accuracy drift."""

from __future__ import annotations

import re
from typing import Any

import click

from vopd_bench.backends import BackendConfig
from vopd_bench.commands._outcome import allow_errors_option, finish
from vopd_bench.commands.eval import parse_data
from vopd_bench.errors import UserError

BACKEND_CHOICE = click.Choice(["hf", "vllm", "openai"])


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


@click.command("parity")
@click.option("--model", "-m", default="vopd-tiny", show_default=True, help="vopd-tiny, a local folder, or a Hub id.")
@click.option("--a", "backend_a", type=BACKEND_CHOICE, default="hf", show_default=True, help="First backend.")
@click.option("--b", "backend_b", type=BACKEND_CHOICE, default="vllm", show_default=True, help="Second backend.")
@click.option("--task", "-t", "tasks", multiple=True, required=True, help="Task name (repeatable) or a task YAML file.")
@click.option("--data", multiple=True, help="Local files in the benchmark's published layout: PATH, or TASK=PATH.")
@click.option("--views", default=None, help="Comma-separated views. Default: full,crop where boxes exist.")
@click.option("--limit", type=int, default=None, help="Only the first N items of each task.")
@click.option("--out", "-o", default=None, help="Output folder (default runs/parity-<model>-<a>-vs-<b>); re-running resumes.")
@click.option("--overwrite", is_flag=True, help="Replace run directories that hold a different configuration.")
@click.option("--max-pixels", type=int, default=None, help="Image budget (the same on both sides).")
@click.option("--min-pixels", type=int, default=None)
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--dtype", default="auto", show_default=True)
@click.option("--revision", default=None)
@click.option("--max-new-tokens", type=int, default=None, help="Override the task's generation length.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--base-url", default=None, help="openai side: the server's /v1 URL.")
@click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True, help="openai side: env var holding the key.")
@click.option("--concurrency", type=int, default=8, show_default=True, help="openai side: parallel requests.")
@click.option("--tp", "tensor_parallel", type=int, default=1, show_default=True, help="vllm side: tensor parallel size.")
@click.option("--min-agreement", type=float, default=None,
              help="Exit with status 1 if any task/view's answer agreement is below this fraction (e.g. 0.98).")
@click.option("--no-preflight", is_flag=True, help="openai side: skip the check of the server's /models list.")
@allow_errors_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def command(**kw: Any) -> None:
    """Run the same items on backends A and B; report agreement of answers and accuracy drift per view."""
    from vopd_bench.parity import ParityConfig, min_agreement, run_parity, side_config

    try:
        base = BackendConfig(
            model=kw["model"], revision=kw["revision"], dtype=kw["dtype"], max_pixels=kw["max_pixels"],
            min_pixels=kw["min_pixels"], batch_size=kw["batch_size"], base_url=kw["base_url"],
            api_key_env=kw["api_key_env"], concurrency=kw["concurrency"],
        )
    except ValueError as e:
        raise UserError(str(e)) from None
    a, b = kw["backend_a"], kw["backend_b"]
    vllm_extra = {"tensor_parallel_size": kw["tensor_parallel"]} if kw["tensor_parallel"] != 1 else {}
    cfg_a = side_config(base, a)
    cfg_b = side_config(base, b)
    for c in (cfg_a, cfg_b):
        if c.backend == "vllm":
            c.extra.update(vllm_extra)
        if c.backend == "openai" and kw["no_preflight"]:
            c.extra["preflight"] = False
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", kw["model"].rstrip("/").split("/")[-1]) or "model"
    cfg = ParityConfig(
        tasks=list(kw["tasks"]), a=cfg_a, b=cfg_b, out=kw["out"] or f"runs/parity-{slug}-{a}-vs-{b}",
        views=[v.strip() for v in kw["views"].split(",") if v.strip()] if kw["views"] else None,
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
