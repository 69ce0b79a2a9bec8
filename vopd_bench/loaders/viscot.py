"""Visual-CoT benchmark (github.com/deepcs233/Visual-CoT, `viscot_benchmark/`): per subset,
`benchmark_det/<subset>.jsonl` rows (img_path, expression, bbox = [x1, y1, x2, y2] pixels, width,
height, question_id) joined by question_id with `benchmark/<subset>.json`, whose last conversation
turn is the free-text answer. Images live under the image root as `cot/<subset>/<file>`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vopd_bench.errors import UserError
from vopd_bench.items import Item
from vopd_bench.loaders._tabular import check_unique, parse_boxes, read_table, require_fields, source

log = logging.getLogger(__name__)
LAYOUT = "Visual-CoT viscot_benchmark (benchmark_det/<subset>.jsonl + benchmark/<subset>.json + cot/<subset>/ images)"
DET_FIELDS = ("img_path", "expression", "bbox", "question_id")


def load(spec: Any, data: Path | None) -> list[Item]:
    subset = spec.options.get("subset")
    if not subset:
        raise UserError(f"task {spec.name}: its spec needs options.subset (e.g. textvqa)")
    root = source(spec, data, [])
    bench = _bench_dir(root, subset)
    det = read_table(bench / "benchmark_det" / f"{subset}.jsonl")
    answers = _answers(bench / "benchmark" / f"{subset}.json")
    image_root = _image_root(spec, root, bench, det.rows)
    items = [_item(spec.name, row, answers, image_root, f"{det.path}:{n}") for n, row in enumerate(det.rows, 1)]
    check_unique((it.id for it in items), det.path)
    return items


def _bench_dir(root: Path, subset: str) -> Path:
    """The folder holding benchmark_det/ and benchmark/: `root`, `root/viscot_benchmark` or, for a
    .jsonl given directly, its grandparent."""
    if root.is_file():
        root = root.parent.parent
    for cand in (root, root / "viscot_benchmark"):
        if (cand / "benchmark_det" / f"{subset}.jsonl").is_file():
            if not (cand / "benchmark" / f"{subset}.json").is_file():
                raise UserError(f"{cand}: missing benchmark/{subset}.json (the answers; expected the {LAYOUT} layout)")
            return cand
    raise UserError(f"{root}: missing benchmark_det/{subset}.jsonl (expected the {LAYOUT} layout)")


def _answers(path: Path) -> dict[str, str]:
    """question_id -> answer text (the last turn of each conversation)."""
    out: dict[str, str] = {}
    for n, row in enumerate(read_table(path).rows, 1):
        where = f"{path}: entry {n}"
        require_fields(row, ("question_id", "conversations"), where, LAYOUT)
        conv = row["conversations"]
        if not isinstance(conv, list) or not conv or not isinstance(conv[-1], dict) or "value" not in conv[-1]:
            raise UserError(f"{where}: field 'conversations' must end with a turn holding the answer 'value'")
        out[str(row["question_id"])] = str(conv[-1]["value"]).strip()
    return out


def _image_root(spec: Any, root: Path, bench: Path, rows: list[dict[str, Any]]) -> Path:
    """`options.image_root` (relative to --data), else the first candidate holding the first image."""
    if spec.options.get("image_root"):
        return (root if root.is_dir() else bench) / spec.options["image_root"]
    cands = [bench, bench.parent, bench / "images", bench.parent / "playground" / "data"]
    first = str(rows[0].get("img_path", "")) if rows else ""
    for c in cands:
        if first and (c / first).is_file():
            return c
    log.warning("%s: images (%s) not found under %s; items will fail to load", bench, first, ", ".join(map(str, cands[:2])))
    return bench


def _item(task: str, row: dict[str, Any], answers: dict[str, str], image_root: Path, where: str) -> Item:
    require_fields(row, DET_FIELDS, where, LAYOUT)
    qid = str(row["question_id"])
    if qid not in answers:
        raise UserError(f"{where}: question_id {qid} has no answer in benchmark/*.json")
    return Item(
        id=qid,
        task=task,
        image=str(image_root / str(row["img_path"])),
        question=str(row["expression"]).strip(),
        answer=answers[qid],
        boxes=parse_boxes(row["bbox"], where, "bbox"),
        meta={"width": row.get("width"), "height": row.get("height"), "img_path": row["img_path"]},
    )
