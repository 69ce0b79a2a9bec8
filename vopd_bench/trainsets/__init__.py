"""Training prompts from a user's own images (`vopd-bench prompts`) and the train/eval overlap check
(`vopd-bench overlap`), following the paper's data pipeline: boxes of objects (an annotation file, a
JSONL box file or a zero-shot detector), small regions kept (area ratio, minimum side, at most N per
image), questions written about each region, and optionally only the prompts whose crop-conditioned
answers agree (self-consistency). The output is the trainer's prompt JSONL (`id, image, question,
answer, boxes`, optionally `options`) with each row's provenance under `meta.provenance`.

Modules, one job each: `regions` (the `Region` record and the region filter), `sources` (box sources:
COCO/LVIS via pycocotools, JSONL, detector), `detector` (a transformers zero-shot detector),
`questions` (templates), `consistency` (the self-consistency filter), `provenance` (what a row records
of where it came from, and a summary of a prompt file), `pipeline` (the whole run, written
incrementally and resumable), `overlap` (perceptual-hash near-duplicates between train and eval images).
"""
