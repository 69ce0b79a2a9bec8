"""MMStar (`Lin-Chen/MMStar`): `mmstar.parquet` with index, question (options inline as
'Options: A: ..., B: ..., C: ..., D: ...'), image, answer letter, category, l2_category. The options
are split out of the question so the prompt lists them like every other multiple-choice task; a
question whose options cannot be split is kept verbatim (options then only known as letters A-D)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vopd_bench.items import Item
from vopd_bench.loaders._tabular import (
    answer_letter,
    check_unique,
    find_files,
    image_source,
    letter_columns,
    parquet_tables,
    split_sequential,
)

LAYOUT = "MMStar (mmstar.parquet: index, question, image, answer, category, l2_category)"
COLUMNS = ("index", "question", "image", "answer", "category")


def load(spec: Any, data: Path | None) -> list[Item]:
    if data is not None and data.is_dir() and not list(data.glob("*.parquet")):  # a folder of the VLMEvalKit TSV
        data = find_files(data, ["*.tsv"], LAYOUT)[0]
    table = parquet_tables(spec, data, ["mmstar.parquet"], ["mmstar.parquet", "*.parquet"], LAYOUT, lazy=("image",))[0]
    path = table.path
    table.require(COLUMNS, LAYOUT)
    items = [_item(spec.name, row, f"{path}: row {n} (index {row['index']})") for n, row in enumerate(table.rows, 1)]
    check_unique((it.id for it in items), path)
    return items


def split_question(text: str) -> tuple[str, list[str]]:
    """'Q?\\nOptions: A: x, B: y' -> ('Q?', ['x', 'y']); unsplittable -> (text, [])."""
    head, sep, block = text.rpartition("Options:")
    if not sep:
        return text.strip(), []
    _, options = split_sequential(" " + block.strip(), " A: ", ", {}: ")
    return (head.strip(), options) if options else (text.strip(), [])


def _item(task: str, row: dict[str, Any], where: str) -> Item:
    question, options = split_question(str(row["question"]))
    options = options or letter_columns(row, max_options=4)  # the VLMEvalKit TSV also has columns A-D
    return Item(
        id=str(row["index"]),
        task=task,
        image=image_source(row["image"]),
        question=question,
        answer=answer_letter(row["answer"], len(options) or 4, where),
        options=options or None,
        category=str(row["category"]),
        meta={"l2_category": row.get("l2_category")},
    )
