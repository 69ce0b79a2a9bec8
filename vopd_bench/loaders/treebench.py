"""TreeBench (`HaochenWang/TreeBench`): `TreeBench.tsv` with a base64 `image`, `question`, option
columns A, B, ... (or a 'multi-choice options' text), the `answer` letter, `category` and
`target_instances` = a string holding a list of [x1, y1, x2, y2] pixel boxes."""

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
    lettered_lines,
    parse_boxes,
    read_table,
    resolve_image_refs,
    source,
)

LAYOUT = "TreeBench (TreeBench.tsv: index, image, question, A-E, answer, category, target_instances)"
COLUMNS = ("index", "image", "question", "answer", "category", "target_instances")


def load(spec: Any, data: Path | None) -> list[Item]:
    root = source(spec, data, ["TreeBench.tsv"])
    path = find_files(root, ["TreeBench.tsv", "*.tsv"], LAYOUT)[0]
    table = read_table(path)
    table.require(COLUMNS, LAYOUT)
    resolve_image_refs(table.rows)
    items = [_item(spec.name, row, f"{path}: row {n} (index {row['index']})") for n, row in enumerate(table.rows, 1)]
    check_unique((it.id for it in items), path)
    return items


def _item(task: str, row: dict[str, Any], where: str) -> Item:
    options = letter_columns(row) or lettered_lines(row.get("multi-choice options") or "")
    return Item(
        id=str(row["index"]),
        task=task,
        image=image_source(row["image"]),
        question=str(row["question"]).strip(),
        answer=answer_letter(row["answer"], len(options) or 4, where),
        options=options or None,
        boxes=parse_boxes(row["target_instances"], where, "target_instances"),
        category=str(row["category"]),
        meta={"l2_category": row.get("l2-category")},
    )
