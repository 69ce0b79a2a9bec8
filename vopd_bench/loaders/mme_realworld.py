"""MME-RealWorld (EN, CN, Lite) in the lmms-eval parquet layout (`yifanzhang114/MME-RealWorld-Lmms-eval`
and its -CN / -lite siblings): index, question, `multi-choice options` (a list of '(A) ...' strings,
A-E), answer letter, category 'Perception/<subtask>' or 'Reasoning/<subtask>', l2-category, and the
base64 image in `bytes`. The VLMEvalKit TSV of the same columns (image in `image`) also loads. No boxes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vopd_bench.items import Item
from vopd_bench.loaders._tabular import (
    Table,
    answer_letter,
    check_unique,
    find_files,
    image_source,
    parquet_tables,
    parse_list,
    read_table,
    source,
    strip_letter,
)

LAYOUT = "MME-RealWorld lmms-eval parquet (index, question, multi-choice options, answer, category, bytes)"
COLUMNS = ("index", "question", "multi-choice options", "answer", "category")


def load(spec: Any, data: Path | None) -> list[Item]:
    if data is None:  # the Hub copy, through `datasets` (cache, revision pinning, fingerprint recorded)
        tables = parquet_tables(spec, None, ["data/*.parquet"], [], LAYOUT, lazy=("bytes", "image"))
        items = [it for t in tables for it in _items(spec.name, t)]
        check_unique((it.id for it in items), spec.hub_id)
        return items
    root = source(spec, data, ["data/*.parquet"])
    items = []
    for path in find_files(root, ["data/*.parquet", "*.parquet", "*.tsv"], LAYOUT):
        items.extend(_items(spec.name, read_table(path, lazy=("bytes", "image"))))
    check_unique((it.id for it in items), root)
    return items


def _items(task: str, table: Table) -> list[Item]:
    table.require(COLUMNS, LAYOUT)
    img = table.first(("bytes", "image"), LAYOUT)
    return [_item(task, row, img, f"{table.path}: row {n} (index {row['index']})") for n, row in enumerate(table.rows, 1)]


def _item(task: str, row: dict[str, Any], img: str, where: str) -> Item:
    options = [strip_letter(o) for o in parse_list(row["multi-choice options"], where, "multi-choice options")]
    return Item(
        id=str(row["index"]),
        task=task,
        image=image_source(row[img]),
        question=str(row["question"]).strip(),
        answer=answer_letter(row["answer"], len(options), where),
        options=options,
        category=str(row["category"]),
        meta={"l2_category": row.get("l2-category")},
    )

