"""`vopd-bench train`: Vision-OPD self-distillation from the crop view, scored on the gap curve."""

from __future__ import annotations

from pathlib import Path

import click

from vopd_bench.commands._outcome import allow_errors_option, finish


@click.command("train", context_settings={"ignore_unknown_options": False})
@click.option("--recipe", "-r", default=None, help="Recipe YAML (trainers/NAME.yaml) or a shipped recipe name (demo).")
@click.option("--out", "-o", default=None, help="Output directory (default runs/train-<recipe>). Re-running resumes.")
@click.option("--options", "list_options", is_flag=True,
              help="List every config key with its default and help (words after it filter the keys: "
                   "--options vllm rollout_correction).")
@click.option("--show-config", is_flag=True, help="Print the resolved config as YAML and exit.")
@allow_errors_option
@click.argument("overrides", nargs=-1)
def command(recipe: str | None, out: str | None, list_options: bool, show_config: bool, allow_errors: bool,
            overrides: tuple[str, ...]) -> None:
    """Train a model to see the full image as well as the crop (Vision-OPD) and track the gap.

    OVERRIDES are key=value pairs applied on top of the recipe, e.g. `steps=40 beta=0 teacher=frozen`
    or `crop.margin=1.0`. Multi-process: `torchrun --nproc_per_node N -m vopd_bench.cli train ...`.
    """
    from vopd_bench.errors import UserError
    from vopd_bench.train.config import OPDConfig, load_config

    if list_options:
        rows = [r for r in OPDConfig.help_table() if not overrides or any(w in r[0] for w in overrides)]
        if not rows:
            raise UserError(f"--options: no config key contains {' or '.join(overrides)}")
        width = max(len(r[0]) for r in rows)
        for name, default, help_ in rows:
            click.echo(f"{name:{width}s} {default:28s} {help_}")
        return
    if recipe is None and not overrides:
        raise UserError("give --recipe (e.g. --recipe demo; shipped recipes are in trainers/) or key=value settings")
    cfg = load_config(recipe, overrides, out)
    if show_config:
        import yaml

        click.echo(yaml.safe_dump(cfg.to_dict(), sort_keys=False).rstrip())
        return
    from vopd_bench.train import dist
    from vopd_bench.train.trainer import run_training

    path = run_training(cfg)
    if dist.is_main():
        from vopd_bench.demo import summary_lines

        if (path / "curve.jsonl").is_file():
            for line in summary_lines(path):
                click.echo(line)
        click.echo(f"training run: {path} (curve: {path / 'curve.jsonl'})")
        failed, total, steps = rescoring_failures(path)
        hint = (f"the curve points of step(s) {', '.join(map(str, steps))} cover fewer items "
                f"(the errors are in {path}/evals/step-N/samples)")
        finish(failed, total, allow_errors, hint)


def rescoring_failures(train_dir: Path) -> tuple[int, int, list[int]]:
    """(failed, total) re-scoring requests over every curve point of a training run, and the steps with failures."""
    from vopd_bench.evaluate import request_failures
    from vopd_bench.rundir import RunDir
    from vopd_bench.train.rundir import TrainRun

    run = TrainRun(train_dir)
    failed = total = 0
    steps = []
    for point in run.curve():
        d = run.eval_dir(point)
        results = RunDir(d).read_results() if d is not None else None
        if results is None:
            continue
        f, t = request_failures(results.tasks, list(point.tasks))
        failed, total = failed + f, total + t
        if f:
            steps.append(point.step)
    return failed, total, steps
