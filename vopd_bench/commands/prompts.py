"""`vopd-bench prompts`: training prompts from a folder of real images (boxes from an annotation file, a
JSONL box file or a zero-shot detector; region filters; question templates; self-consistency filter)."""

from __future__ import annotations

import click

from vopd_bench.errors import UserError


@click.command("prompts")
@click.argument("images_dir", type=click.Path(file_okay=False))
@click.option("--out", "-o", required=True, help="Prompt JSONL to write (the trainer's format: train_data=OUT).")
@click.option("--boxes", default=None, help="Boxes: a COCO/LVIS annotation file (.json) or a JSONL box file (.jsonl).")
@click.option("--detector", default=None, help="Boxes from a zero-shot detector: a checkpoint folder or Hub id "
                                               "(OWLv2, OWL-ViT, Grounding DINO).")
@click.option("--objects", default=None, help="With --detector: comma-separated object names, e.g. 'cat,cup'.")
@click.option("--detector-threshold", type=float, default=0.1, show_default=True, help="Lowest detector score kept.")
@click.option("--min-area-ratio", type=float, default=0.0, show_default=True, help="Smallest box area / image area.")
@click.option("--max-area-ratio", type=float, default=0.1, show_default=True,
              help="Largest box area / image area (the paper keeps small regions: ~0.1).")
@click.option("--min-side", type=float, default=8.0, show_default=True, help="Shortest box side kept (pixels).")
@click.option("--max-regions", type=int, default=3, show_default=True, help="Regions per image (0 = all).")
@click.option("--templates", default="attribute,count,position", show_default=True,
              help="Question templates per region: attribute, count, text, position ('' = none).")
@click.option("--question", "questions", multiple=True,
              help="A question of your own per region (repeatable); {label} is the region's label.")
@click.option("--consistency-model", default=None,
              help="Keep only prompts whose answers on the crop view agree: the model to sample (e.g. vopd-tiny).")
@click.option("--consistency-backend", default="hf", show_default=True, help="Backend that samples it.")
@click.option("--consistency-n", type=int, default=4, show_default=True, help="Samples per prompt.")
@click.option("--consistency-threshold", type=float, default=0.75, show_default=True,
              help="Share of the most common answer needed to keep a prompt.")
@click.option("--consistency-temperature", type=float, default=1.0, show_default=True, help="Sampling temperature.")
@click.option("--consistency-max-new-tokens", type=int, default=16, show_default=True, help="Answer length.")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed of the consistency filter.")
@click.option("--limit", type=int, default=None, help="Only the first N images (quick looks).")
@click.option("--overwrite", is_flag=True, help="Start again (default: resume an interrupted run into OUT).")
def command(images_dir: str, out: str, boxes: str | None, detector: str | None, objects: str | None,
            detector_threshold: float, min_area_ratio: float, max_area_ratio: float, min_side: float,
            max_regions: int, templates: str, questions: tuple[str, ...], consistency_model: str | None,
            consistency_backend: str, consistency_n: int, consistency_threshold: float,
            consistency_temperature: float, consistency_max_new_tokens: int, seed: int, limit: int | None,
            overwrite: bool) -> None:
    """Turn the images in IMAGES_DIR into training prompts for `vopd-bench train train_task=null train_data=OUT`.

    Each kept prompt records its provenance (image, box source, region, filter scores) under
    meta.provenance; skipped images and rejected prompts go to OUT-stem.skipped.jsonl, counts and
    settings to OUT-stem.summary.json. An interrupted run resumes when re-run.
    """
    from vopd_bench.trainsets.consistency import ConsistencyConfig
    from vopd_bench.trainsets.pipeline import PromptsConfig, run
    from vopd_bench.trainsets.regions import RegionFilter
    from vopd_bench.trainsets.sources import open_boxes

    if (boxes is None) == (detector is None):
        raise UserError("give exactly one box source: --boxes FILE (.json COCO/LVIS or .jsonl) or --detector PATH")
    if detector is not None:
        from vopd_bench.trainsets.detector import Detector

        if not objects:
            raise UserError("--detector needs --objects 'name,name' (what to look for)")
        source = Detector(detector, objects.split(","), threshold=detector_threshold)
        source.load()  # a bad checkpoint fails here, before anything is written
    else:
        if objects:
            raise UserError("--objects goes with --detector")
        source = open_boxes(boxes)
    consistency = None
    if consistency_model:
        consistency = ConsistencyConfig(model=consistency_model, backend=consistency_backend, n=consistency_n,
                                        threshold=consistency_threshold, temperature=consistency_temperature,
                                        max_new_tokens=consistency_max_new_tokens, seed=seed)
    cfg = PromptsConfig(
        images_dir=images_dir, out=out, source=source,
        region_filter=RegionFilter(min_area_ratio=min_area_ratio, max_area_ratio=max_area_ratio, min_side=min_side,
                                   max_regions=max_regions,
                                   min_score=detector_threshold if detector else None),
        templates=[t.strip() for t in templates.split(",") if t.strip()], questions=list(questions),
        consistency=consistency, limit=limit, overwrite=overwrite,
    )
    summary = run(cfg)
    skipped = sum(summary["skipped"].values())
    click.echo(f"wrote {summary['n_prompts']} prompts from {summary['n_images']} images to {out} "
               f"({skipped} skip record(s) in {summary['skipped_file']})")
