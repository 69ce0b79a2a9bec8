"""CV-Bench (`nyu-visionx/CV-Bench`): `test_2d.parquet` + `test_3d.parquet` (older releases: one
`test.parquet`) with idx, type (2D/3D), task (Count, Relation, Depth, Distance), image, question,
choices (list), answer '(A)' and source (ADE20K, COCO, Omni3D). Category = source, the unit of the
official score 1/2 * ((ADE20K + COCO) / 2 + Omni3D). No boxes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vopd_bench.items import Item
from vopd_bench.loaders._tabular import (
    Table,
    answer_letter,
    check_unique,
    image_source,
    parquet_tables,
    parse_list,
)

LAYOUT = "CV-Bench (test_2d.parquet / test_3d.parquet: idx, type, task, image, question, choices, answer, source)"
COLUMNS = ("idx", "type", "task", "image", "question", "choices", "answer", "source")


def load(spec: Any, data: Path | None) -> list[Item]:
    items: list[Item] = []
    for table in parquet_tables(spec, data, ["test_2d.parquet", "test_3d.parquet"],
                                ["test_*.parquet", "test.parquet", "*.parquet"], LAYOUT, lazy=("image",)):
        items.extend(_items(spec.name, table))
    check_unique((it.id for it in items), data or spec.hub_id)
    return items


def _items(task: str, table: Table) -> list[Item]:
    table.require(COLUMNS, LAYOUT)
    return [_item(task, row, f"{table.path}: row {n} (idx {row['idx']})") for n, row in enumerate(table.rows, 1)]


def _item(task: str, row: dict[str, Any], where: str) -> Item:
    choices = parse_list(row["choices"], where, "choices")
    return Item(
        id=f"{row['type']}-{row['idx']}",
        task=task,
        image=image_source(row["image"]),
        question=str(row["question"]).strip(),
        answer=answer_letter(row["answer"], len(choices), where),
        options=choices,
        category=str(row["source"]),
        meta={"type": row["type"], "task": row["task"]},
    )
