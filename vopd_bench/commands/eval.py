"""`vopd-bench eval`: score a model on tasks, full image vs crop, and print the gap table."""

from __future__ import annotations

from typing import Any

import click

from vopd_bench.backends import resolve_backend
from vopd_bench.commands._options import (
    BackendChoice,
    BackendCommand,
    backend_config,
    model_slug,
    shared_options,
    split_views,
)
from vopd_bench.commands._outcome import finish
from vopd_bench.errors import UserError
from vopd_bench.judge import judge_options


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


def default_out(model: str, backend: str) -> str:
    return f"runs/{model_slug(model)}-{backend}"


@click.command("eval", cls=BackendCommand)
@click.option("--backend", "-b", type=BackendChoice(auto=True), default="auto", show_default=True,
              help="auto: vllm where vLLM is installed and a CUDA device is present, else hf (the choice is printed "
              "and recorded in config.json).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option("--boxes", default=None, help="JSONL of {id, boxes: [[x1,y1,x2,y2]]} giving any task a crop view.")
@click.option("--crop-margin", type=float, default=None, help="Override the crop's context margin (fraction of the box).")
@click.option("--crop-upscale", type=float, default=None, help="Override the crop's zoom factor.")
@click.option("--protocol", default="vopd-bench", show_default=True, metavar="NAME",
              help="Scoring protocol: how prompts, budget, answer extraction and aggregation follow a published "
              "harness (vopd-bench, vision-opd, lmms-eval, vlmevalkit; or a preset .yaml). Recorded; every "
              "protocol's verdict is kept per sample (docs/protocols.md).")
@click.option("--system-prompt", default=None, metavar="TEXT",
              help="System prompt for every request (overrides the task's and the protocol's; recorded).")
@click.option("--circular", is_flag=True,
              help="Ask each multiple-choice question under every rotation of its options; a question counts as right "
              "only if all are (results: circular_accuracy beside the plain accuracy over all rotations).")
@click.option("--grounding-format", type=click.Choice(["auto", "json", "qwen2.5-vl", "qwen-1000"]), default="auto",
              show_default=True,
              help="self_zoom view: how the model states its box (auto: the model family's own — Qwen2.5-VL absolute "
              "pixels, Qwen2/3-VL, GLM, InternVL 0-1000 — else JSON pixels). Recorded.")
@click.option("--locate-max-new-tokens", type=click.IntRange(min=1), default=64, show_default=True,
              help="self_zoom view: generation length of the first stage (the box). Recorded.")
@click.option("--prefetch", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="Prepare the next batch while one generates (speed only). auto: on unless the model runs on "
              "this CPU with no core to spare beyond torch's threads.")
@judge_options
@shared_options(
    out="Run directory (default runs/<model>-<backend>). Re-running resumes.",
    batch_size="Requests per backend call (default: hf 16, vllm 256, openai 4 x --concurrency).",
)
def command(**kw: Any) -> None:
    """Score MODEL on TASKs, full image vs crop; write a run directory and print the gap table.

    Exit status: 0 done; 2 bad input (nothing written); 3 some requests still failed after retries
    (what succeeded is kept: re-run the same command to retry only those; --allow-errors exits 0)."""
    from vopd_bench import presets
    from vopd_bench.evaluate import EvalConfig, evaluate, request_failures
    from vopd_bench.runtime import rank
    from vopd_bench.summary import print_results

    protocol = presets.load(kw["protocol"])  # an unknown protocol: one line, exit 2, before a backend is chosen
    jcfg = judge_config(kw, protocol)
    backend, why = resolve_backend(kw["backend"])
    bcfg = backend_config(backend, kw, device=kw["device"], chosen_by=why)
    crop = {}
    if kw["crop_margin"] is not None:
        crop["margin"] = kw["crop_margin"]
    if kw["crop_upscale"] is not None:
        crop["upscale"] = kw["crop_upscale"]
    cfg = EvalConfig(
        tasks=list(kw["tasks"]),
        backend=bcfg,
        out=kw["out"] or default_out(kw["model"], backend),
        views=split_views(kw["views"]),
        data=parse_data(kw["data"], kw["tasks"]),
        boxes=kw["boxes"],
        limit=kw["limit"],
        seed=kw["seed"],
        max_new_tokens=kw["max_new_tokens"],
        crop=crop,
        protocol=kw["protocol"],
        system_prompt=kw["system_prompt"],
        judge=jcfg.record() if jcfg else None,
        circular=kw["circular"],
        grounding_format=kw["grounding_format"],
        locate_max_new_tokens=kw["locate_max_new_tokens"],
        overwrite=kw["overwrite"],
        progress=not kw["quiet"],
        prefetch={"auto": None, "on": True, "off": False}[kw["prefetch"]],
    )
    judge = None
    if jcfg is not None:
        from vopd_bench.judge import Judge

        judge = Judge(jcfg, run_dir=cfg.out)  # preflight of the judge server: before anything is written
    try:
        results, names, finished = evaluate(cfg, judge=judge.reply if judge else None)
    finally:
        if judge is not None:
            judge.close()
    if rank() != 0:
        return
    if finished:
        click.echo(f"{cfg.out} already holds this run: nothing recomputed, no model loaded (--overwrite to redo it)",
                   err=True)
    print_results({**results, "tasks": {t: results["tasks"][t] for t in names if t in results["tasks"]}})
    click.echo(f"backend: {backend} ({why})")
    click.echo(f"protocol: {cfg.protocol}" + (f" (system prompt: {cfg.system_prompt!r})" if cfg.system_prompt else ""))
    if judge is not None:
        click.echo(f"judge: {jcfg.model} consulted on {judge.consulted} response(s), {judge.cache_hits} from its cache "
                   f"({judge.cache.path})")
    click.echo(f"run directory: {cfg.out}")
    failed, total = request_failures(results["tasks"], names)
    finish(failed, total, kw["allow_errors"], retry_hint(cfg.out, results, names) if failed else "")


def judge_config(kw: dict[str, Any], protocol: Any) -> Any:
    """The judge's settings from `--judge ...` (None without it); a protocol that never consults a judge refuses one."""
    from vopd_bench.judge import judge_config_from_cli

    jcfg = judge_config_from_cli(kw, default_prompt="vision-opd" if protocol.name == "vision-opd" else "generic")
    if jcfg is not None and protocol.judge == "never":
        raise UserError(f"--judge: protocol {protocol.name} never consults a judge (its rules decide every response); "
                        "use --protocol vision-opd or lmms-eval, whose rules leave some verdicts to a judge")
    return jcfg


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
