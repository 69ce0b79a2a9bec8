"""HR-Bench 4K / 8K (`DreamMr/HR-Bench`): `hr_bench_4k.tsv` / `hr_bench_8k.tsv` (or the .parquet of
the same columns): index, question, A-D, answer, category (single/cross), cycle_category, base64
image. Each question is asked 4 times with its options permuted (one row per cycle); all 4 rows get
the same `group` so statistics are clustered by question, and accuracy over all rows equals the
official mean of the per-cycle accuracies (each cycle holds every question once). No boxes."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from vopd_bench.items import Item
from vopd_bench.loaders._tabular import (
    answer_letter,
    check_unique,
    find_files,
    image_source,
    letter_columns,
    read_table,
    resolve_image_refs,
    source,
)

LAYOUT = "HR-Bench (hr_bench_4k.tsv: index, question, A-D, answer, category, cycle_category, image)"
COLUMNS = ("index", "question", "A", "B", "answer", "category", "cycle_category", "image")


def load(spec: Any, data: Path | None) -> list[Item]:
    name = spec.options.get("file", "hr_bench_4k.tsv")
    root = source(spec, data, [name])
    path = find_files(root, [name, str(Path(name).with_suffix(".parquet"))], LAYOUT)[0]
    table = read_table(path)
    table.require(COLUMNS, LAYOUT)
    resolve_image_refs(table.rows)
    items = [_item(spec.name, row, f"{path}: row {n} (index {row['index']})") for n, row in enumerate(table.rows, 1)]
    check_unique((it.id for it in items), path)
    return items


def question_key(question: str, image: Any) -> str:
    """The identity of a question across its option cycles: its text and its image."""
    h = hashlib.sha1(str(question).strip().encode())
    h.update(b"\x00")
    h.update(_image_bytes(image))
    return h.hexdigest()[:16]


def _image_bytes(v: Any) -> bytes:
    if isinstance(v, dict):
        v = v.get("bytes") or v.get("path") or b""
    return v if isinstance(v, (bytes, bytearray)) else str(v).encode()


def _item(task: str, row: dict[str, Any], where: str) -> Item:
    options = letter_columns(row, max_options=4)
    return Item(
        id=str(row["index"]),
        task=task,
        image=image_source(row["image"]),
        question=str(row["question"]).strip(),
        answer=answer_letter(row["answer"], len(options), where),
        options=options,
        category=str(row["category"]),
        group=question_key(row["question"], row["image"]),
        meta={"cycle": str(row["cycle_category"])},
    )
