"""`vopd-bench report`: figures, tables and report.md from eval run dirs and training dirs."""

from __future__ import annotations

from pathlib import Path

import click

from vopd_bench.errors import UserError


def parse_labels(labels: tuple[str, ...], run_dirs: list[Path]) -> dict[Path, str]:
    """`--label NAME` (matched to RUN_DIRs in order) or `--label RUN_DIR=NAME`."""
    out: dict[Path, str] = {}
    plain: list[str] = []
    for lab in labels:
        head, sep, tail = lab.partition("=")
        if sep and Path(head).is_dir() and tail:
            out[Path(head)] = tail
        else:
            plain.append(lab)
    if len(plain) > len(run_dirs):
        raise UserError(f"{len(plain)} --label values for {len(run_dirs)} RUN_DIR(s); use --label RUN_DIR=NAME "
                        "for --before/--after dirs")
    for p, lab in zip(run_dirs, plain, strict=False):
        out.setdefault(p, lab)
    return out


@click.command("report")
@click.argument("run_dirs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--out", "-o", type=click.Path(path_type=Path), default=None,
              help="Output folder (default: RUN_DIR/report for one run dir, else ./report).")
@click.option("--label", "labels", multiple=True, metavar="NAME|RUN_DIR=NAME",
              help="Row/legend label instead of the model's basename; plain NAMEs match RUN_DIRs in order. Repeatable.")
@click.option("--before", "before", multiple=True, type=click.Path(path_type=Path), metavar="RUN_DIR",
              help="Eval run dir of the base model for a before/after figure; pairs with the --after at the same "
                   "position. Repeatable.")
@click.option("--after", "after", multiple=True, type=click.Path(path_type=Path), metavar="RUN_DIR",
              help="Eval run dir of the distilled checkpoint (scored on the same tasks) paired with --before.")
@click.option("--examples", type=int, default=1, show_default=True,
              help="Items per qualitative panel (full image with the region outlined, crop, each model's answers): "
                   "picked from the records (fixed by training, else full wrong + crop right). 0: none.")
@click.option("--example-ids", default=None, metavar="ID,ID",
              help="The items of the qualitative panel, by id (instead of picking).")
def command(run_dirs: tuple[Path, ...], out: Path | None, labels: tuple[str, ...], before: tuple[Path, ...],
            after: tuple[Path, ...], examples: int, example_ids: str | None) -> None:
    """Draw the report of RUN_DIRs: eval run dirs (results.json) and/or training dirs (curve.jsonl).

    \b
    Writes under --out:
      figures/gap_models.{png,pdf}     full vs crop accuracy per model (95% CIs), gap annotated
      figures/before_after_*.{png,pdf} gap before vs after distillation, per task: for each training
                                       dir (first vs last scored step of curve.jsonl) and for each
                                       --before/--after pair of eval run dirs; with the relative gap
                                       change and the gap closed, (full_N - full_0) / (crop_0 - full_0)
                                       with a paired bootstrap CI (negative when full got worse)
      figures/curve_*.{png,pdf}        full/crop/holdout accuracy and gap vs training step
      figures/categories_*.{png,pdf}   per-category breakdown, tasks with categories
      figures/decomposition_*          full -> red_box -> blur_surround -> crop_native -> crop (runs with those views)
      figures/size_*                   full/crop accuracy and the gap per bin of target size (boxed tasks)
      figures/transitions_*            items fixed / broken between a base and its trained model
      figures/examples_*               the qualitative panel (--examples N, --example-ids)
      tables/table1_full.*, tables/table2_crop_gap.*   Markdown, LaTeX (booktabs), CSV
      report.md                        everything above, with a protocol line
    A training dir adds two rows: its base model (first scored step) and the distilled checkpoint
    (last step). --before/--after dirs are included in the tables too. A model whose crop or holdout
    accuracy fell more than collapse_warn_points (the training run's; default 10) below its base is
    marked with a dagger and a footnote wherever its gap is shown, and never bolded as best. An eval
    run of a training checkpoint folder is labelled by its run and step.
    """
    from vopd_bench.report import build_report

    if len(before) != len(after):
        raise UserError(f"--before given {len(before)} time(s) but --after {len(after)} time(s); give them in pairs")
    if not run_dirs and not before:
        raise UserError("give at least one RUN_DIR (or a --before/--after pair)")
    dirs = list(run_dirs)
    if out is None:
        out = dirs[0] / "report" if len(dirs) == 1 and not before else Path("report")
    if examples < 0:
        raise UserError(f"--examples must be >= 0, got {examples}")
    ids = [i.strip() for i in example_ids.split(",") if i.strip()] if example_ids else None
    path = build_report(dirs, out, labels=parse_labels(labels, dirs), pairs=list(zip(before, after, strict=True)),
                        examples=examples, example_ids=ids)
    click.echo(f"report: {path}")
