"""POPE (object hallucination, yes/no). Two published layouts: the lmms-eval parquet
(`lmms-lab/POPE`, data/test-*.parquet: id, question_id, question, answer, image, category) and the
original release (`coco_pope_{adversarial,popular,random}.json`, one JSON object per line with
question_id, image, text, label, plus the COCO val2014 images in `options.image_root`). No boxes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from vopd_bench.errors import UserError
from vopd_bench.items import Item
from vopd_bench.loaders._tabular import (
    Table,
    check_unique,
    find_files,
    image_source,
    is_missing,
    parquet_tables,
    read_table,
    require_fields,
    source,
)

LAYOUT = "POPE (lmms-eval data/test-*.parquet, or coco_pope_<category>.json + COCO images)"
COLUMNS = ("question_id", "question", "answer", "image", "category")
_ORIGINAL = re.compile(r"pope_(\w+?)\.jsonl?$")


def load(spec: Any, data: Path | None) -> list[Item]:
    if data is None:  # the Hub copy, through `datasets` (cache, revision pinning, fingerprint recorded)
        tables = parquet_tables(spec, None, ["data/test-*.parquet"], [], LAYOUT, lazy=("image",))
        items = [it for t in tables for it in _parquet_items(spec.name, t)]
        check_unique((it.id for it in items), spec.hub_id)
        return items
    root = source(spec, data, ["data/test-*.parquet"])
    files = find_files(root, ["data/test-*.parquet", "data/*.parquet", "*.parquet", "*pope_*.json", "*pope_*.jsonl"], LAYOUT)
    items: list[Item] = []
    for path in files:
        if path.suffix == ".parquet":
            items.extend(_parquet_items(spec.name, read_table(path, lazy=("image",))))
        else:
            items.extend(_original_items(spec, path))
    check_unique((it.id for it in items), root)
    return items


def _answer(v: Any, where: str) -> str:
    s = str(v).strip().lower()
    if s not in ("yes", "no"):
        raise UserError(f"{where}: answer must be yes or no, got {str(v)[:20]!r}")
    return s


def _parquet_items(task: str, table: Table) -> list[Item]:
    table.require(COLUMNS, LAYOUT)
    ids = [str(r.get("id")) for r in table.rows]
    if any(is_missing(r.get("id")) for r in table.rows) or len(set(ids)) < len(ids):
        ids = [f"{r['category']}-{r['question_id']}" for r in table.rows]  # question_id restarts per category
    out = []
    for n, (iid, row) in enumerate(zip(ids, table.rows, strict=True), 1):
        out.append(Item(id=iid, task=task, image=image_source(row["image"]), question=str(row["question"]).strip(),
                        answer=_answer(row["answer"], f"{table.path}: row {n}"), category=str(row["category"])))
    return out


def _original_items(spec: Any, path: Path) -> list[Item]:
    m = _ORIGINAL.search(path.name)
    cat = m.group(1) if m else path.stem
    image_root = path.parent / spec.options.get("image_root", "val2014")
    if not image_root.is_dir():
        image_root = path.parent
    out = []
    for n, row in enumerate(read_table(path).rows, 1):
        where = f"{path}:{n}"
        require_fields(row, ("question_id", "image", "text", "label"), where, LAYOUT)
        out.append(Item(id=f"{cat}-{row['question_id']}", task=spec.name, image=str(image_root / str(row["image"])),
                        question=str(row["text"]).strip(), answer=_answer(row["label"], where), category=cat))
    return out

