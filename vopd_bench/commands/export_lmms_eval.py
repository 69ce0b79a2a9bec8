"""`vopd-bench export-lmms-eval`: write vopd-bench tasks as an lmms-eval task folder (full + crop views)."""

from __future__ import annotations

import click

from vopd_bench.commands.eval import parse_data


@click.command("export-lmms-eval")
@click.option("--task", "-t", "tasks", multiple=True, required=True, help="Task name (repeatable) or a task YAML file.")
@click.option("--data", multiple=True, help="Local files in the benchmark's published layout: PATH, or TASK=PATH.")
@click.option("--views", default=None, help="Comma-separated views to export. Default: full,crop where boxes exist.")
@click.option("--limit", type=int, default=None, help="Only the first N items of each task.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random_crop control view.")
@click.option("--crop-margin", type=float, default=None, help="Override the crop's context margin (fraction of the box).")
@click.option("--crop-upscale", type=float, default=None, help="Override the crop's zoom factor.")
@click.option("--out", "-o", required=True, help="Folder to write (pass it to lmms-eval as --include_path).")
def command(**kw) -> None:
    """Write an lmms-eval task folder whose tasks vopd_<task>_<view> use vopd-bench's items, views and scorer."""
    from vopd_bench.lmms.export import ExportRequest, export

    crop = {k: v for k, v in (("margin", kw["crop_margin"]), ("upscale", kw["crop_upscale"])) if v is not None}
    views = [v.strip() for v in kw["views"].split(",") if v.strip()] if kw["views"] else None
    data = parse_data(kw["data"], kw["tasks"])
    reqs = [ExportRequest(task=t, data=data.get(t), views=views, limit=kw["limit"], seed=kw["seed"], crop=crop or None)
            for t in kw["tasks"]]
    for e in export(reqs, kw["out"]):
        click.echo(f"{e['task']}: lmms-eval tasks {', '.join(e['lmms_tasks'].values())} (tag {e['tag']}) in {e['folder']}")
    click.echo(f"run: lmms-eval --include_path {kw['out']} --tasks <tag or tasks> --log_samples --output_path OUT ...")
