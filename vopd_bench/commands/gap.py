"""`vopd-bench gap --from-lmms-eval`: turn lmms-eval sample logs of exported tasks into a run directory."""

from __future__ import annotations

import click

from vopd_bench.commands._outcome import allow_errors_option, finish
from vopd_bench.errors import UserError


@click.command("gap")
@click.option("--from-lmms-eval", "from_lmms", is_flag=True,
              help="PATHS are lmms-eval sample logs (full and crop) or an lmms-eval --output_path folder.")
@click.argument("paths", nargs=-1)
@click.option("--out", "-o", required=True, help="Run directory to write (config.json, samples/, results.json).")
@click.option("--task", "-t", default=None, help="Check doc ids against this task's items (name or YAML file).")
@click.option("--data", default=None, help="With --task: the task's local data, as given to export-lmms-eval.")
@click.option("--model", "-m", default=None, help="Model label for the run (default: from lmms-eval's results file).")
@click.option("--overwrite", is_flag=True, help="Replace a run directory that holds a different configuration.")
@allow_errors_option
def command(from_lmms: bool, paths: tuple[str, ...], out: str, task: str | None, data: str | None,
            model: str | None, overwrite: bool, allow_errors: bool) -> None:
    """Pair the full and crop views of lmms-eval logs by item and write the same run directory as `eval`."""
    from vopd_bench.lmms.importer import gap_from_lmms_eval
    from vopd_bench.summary import print_results

    if not from_lmms:
        raise UserError("gap reads lmms-eval logs: vopd-bench gap --from-lmms-eval FULL.jsonl CROP.jsonl --out DIR")
    if data and not task:
        raise UserError("--data needs --task")
    results = gap_from_lmms_eval(list(paths), out, task=task, data=data, model=model, overwrite=overwrite)
    from vopd_bench.evaluate import request_failures

    print_results(results)
    click.echo(f"run directory: {out}")
    finish(*request_failures(results["tasks"], list(results["tasks"])), allow_errors,
           "their records keep the error; re-run lmms-eval for them and import its logs again")
