"""`vopd-bench eval`: score a model on tasks, full image vs crop, and print the gap table."""

from __future__ import annotations

import re
from typing import Any

import click
import yaml

from vopd_bench.backends import BACKENDS, BackendConfig, resolve_backend
from vopd_bench.commands._outcome import allow_errors_option, finish
from vopd_bench.errors import UserError


def parse_data(data: tuple[str, ...], tasks: tuple[str, ...]) -> dict[str, str]:
    """`--data PATH` (one task) or `--data TASK=PATH` (several)."""
    out: dict[str, str] = {}
    for d in data:
        if "=" in d and not d.startswith(("/", ".")) and d.split("=", 1)[0] in tasks:
            t, p = d.split("=", 1)
            out[t] = p
        elif len(tasks) == 1:
            out[tasks[0]] = d
        else:
            raise UserError(f"--data {d!r}: with several tasks write --data TASK=PATH")
    return out


def parse_engine_args(args: tuple[str, ...]) -> dict[str, Any]:
    """`KEY=VALUE` pairs; values parsed as YAML scalars (numbers, booleans) when they look like them."""
    out: dict[str, Any] = {}
    for a in args:
        if "=" not in a:
            raise UserError(f"--vllm-arg {a!r}: expected KEY=VALUE")
        k, v = a.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def default_out(model: str, backend: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model.rstrip("/").split("/")[-1]) or "model"
    return f"runs/{slug}-{backend}"


@click.command("eval")
@click.option("--model", "-m", default="vopd-tiny", show_default=True, help="vopd-tiny, a local folder, or a Hub id.")
@click.option("--backend", "-b", type=click.Choice(["auto", *BACKENDS]), default="auto", show_default=True,
              help="auto: vllm where vLLM is installed and a CUDA device is present, else hf (the choice is printed "
              "and recorded in config.json).")
@click.option("--task", "-t", "tasks", multiple=True, required=True, help="Task name (repeatable) or a task YAML file.")
@click.option("--data", multiple=True, help="Local files in the benchmark's published layout: PATH, or TASK=PATH.")
@click.option("--views", default=None, help="Comma-separated views (full,crop,masked,random_crop). Default: full,crop where boxes exist.")
@click.option("--boxes", default=None, help="JSONL of {id, boxes: [[x1,y1,x2,y2]]} giving any task a crop view.")
@click.option("--limit", type=int, default=None, help="Only the first N items of each task (quick looks).")
@click.option("--out", "-o", default=None, help="Run directory (default runs/<model>-<backend>). Re-running resumes.")
@click.option("--overwrite", is_flag=True, help="Replace a run directory that holds a different configuration.")
@click.option("--max-pixels", type=int, default=None, help="Image budget: max pixels per image after resizing (recorded).")
@click.option("--min-pixels", type=int, default=None, help="Image budget: min pixels per image (recorded).")
@click.option("--batch-size", type=int, default=None,
              help="Requests per backend call (default: hf 16, vllm 256, openai 4 x --concurrency).")
@click.option("--dtype", default="auto", show_default=True, help="auto, float32, bfloat16 or float16.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option("--revision", default=None, help="Hub revision (branch, tag or commit).")
@click.option("--max-new-tokens", type=int, default=None, help="Override the task's generation length.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--crop-margin", type=float, default=None, help="Override the crop's context margin (fraction of the box).")
@click.option("--crop-upscale", type=float, default=None, help="Override the crop's zoom factor.")
@click.option("--base-url", default=None, help="openai backend: the server's /v1 URL.")
@click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True, help="openai backend: env var holding the key.")
@click.option("--concurrency", type=int, default=8, show_default=True, help="openai backend: parallel requests.")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="openai backend: seconds per request.")
@click.option("--max-retries", type=int, default=5, show_default=True, help="openai backend: retries on 429/5xx/timeouts.")
@click.option("--no-preflight", is_flag=True,
              help="openai backend: skip the check of the server's /models list before the run (servers without it).")
@click.option("--tp", "tensor_parallel", type=int, default=1, show_default=True, help="vllm backend: tensor parallel size.")
@click.option("--vllm-arg", "vllm_args", multiple=True, help="vllm backend: engine argument KEY=VALUE (repeatable), e.g. max_model_len=8192.")
@click.option("--prefetch", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="Prepare the next batch while one generates (speed only). auto: on unless the model runs on "
              "this CPU with no core to spare beyond torch's threads.")
@allow_errors_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def command(**kw) -> None:
    """Score MODEL on TASKs, full image vs crop; write a run directory and print the gap table.

    Exit status: 0 done; 2 bad input (nothing written); 3 some requests still failed after retries
    (what succeeded is kept: re-run the same command to retry only those; --allow-errors exits 0)."""
    from vopd_bench.evaluate import EvalConfig, dist_info, evaluate, request_failures
    from vopd_bench.summary import print_results

    extra = parse_engine_args(kw["vllm_args"])
    if kw["tensor_parallel"] != 1:
        extra["tensor_parallel_size"] = kw["tensor_parallel"]
    backend, why = resolve_backend(kw["backend"])
    if kw["no_preflight"] and backend == "openai":
        extra["preflight"] = False
    batch = kw["batch_size"] or {"hf": 16, "vllm": 256, "openai": 4 * kw["concurrency"]}[backend]
    try:
        bcfg = BackendConfig(
            backend=backend, model=kw["model"], revision=kw["revision"], dtype=kw["dtype"], device=kw["device"],
            max_pixels=kw["max_pixels"], min_pixels=kw["min_pixels"], batch_size=batch,
            base_url=kw["base_url"], api_key_env=kw["api_key_env"], concurrency=kw["concurrency"],
            timeout=kw["timeout"], max_retries=kw["max_retries"], extra=extra, chosen_by=why,
        )
    except ValueError as e:
        raise UserError(str(e)) from None
    crop = {}
    if kw["crop_margin"] is not None:
        crop["margin"] = kw["crop_margin"]
    if kw["crop_upscale"] is not None:
        crop["upscale"] = kw["crop_upscale"]
    cfg = EvalConfig(
        tasks=list(kw["tasks"]),
        backend=bcfg,
        out=kw["out"] or default_out(kw["model"], backend),
        views=[v.strip() for v in kw["views"].split(",") if v.strip()] if kw["views"] else None,
        data=parse_data(kw["data"], kw["tasks"]),
        boxes=kw["boxes"],
        limit=kw["limit"],
        seed=kw["seed"],
        max_new_tokens=kw["max_new_tokens"],
        crop=crop,
        overwrite=kw["overwrite"],
        progress=not kw["quiet"],
        prefetch={"auto": None, "on": True, "off": False}[kw["prefetch"]],
    )
    results, names, finished = evaluate(cfg)
    if dist_info()[0] != 0:
        return
    if finished:
        click.echo(f"{cfg.out} already holds this run: nothing recomputed, no model loaded (--overwrite to redo it)",
                   err=True)
    print_results({**results, "tasks": {t: results["tasks"][t] for t in names if t in results["tasks"]}})
    click.echo(f"backend: {backend} ({why})")
    click.echo(f"run directory: {cfg.out}")
    failed, total = request_failures(results["tasks"], names)
    finish(failed, total, kw["allow_errors"], retry_hint(cfg.out, results, names) if failed else "")


def retry_hint(out: str, results: dict[str, Any], names: list[str]) -> str:
    """What re-running does for the failed records: retries those that can succeed, says how many cannot."""
    from vopd_bench.commands._outcome import RETRY_HINT
    from vopd_bench.rundir import RunDir

    run = RunDir(out)
    permanent = sum(
        1 for t in names for v in results.get("views", {}).get(t, [])
        for r in run.load_records(t, v).values() if r.get("error") and not r.get("retryable")
    )
    if not permanent:
        return RETRY_HINT
    return (f"{RETRY_HINT}; {permanent} of them will fail again (an undecodable image or a request the backend "
            "rejected: see their `error` field in samples/), --allow-errors accepts that")
