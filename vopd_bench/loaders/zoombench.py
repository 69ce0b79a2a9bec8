"""ZoomBench (`inclusionAI/ZoomBench`): `data/test*.parquet` with `image`, `crop_image` (the decisive
region, may be null), the question (`prompt`, `query` in some releases) and the answer (`answer` or
`response`). No box coordinates: the `crop` view shows the shipped crop image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vopd_bench.items import Item
from vopd_bench.loaders._tabular import (
    Table,
    check_unique,
    find_files,
    image_source,
    is_missing,
    parquet_tables,
    read_table,
    source,
)

LAYOUT = "ZoomBench (data/test*.parquet: image, crop_image, prompt|query, answer|response)"
CATEGORY_COLUMNS = ("category", "dimension", "question_type", "type")


def load(spec: Any, data: Path | None) -> list[Item]:
    items: list[Item] = []
    if data is None:  # the Hub copy, through `datasets` (cache, revision pinning, fingerprint recorded)
        for table in parquet_tables(spec, None, ["data/test*.parquet"], [], LAYOUT, lazy=("image",)):
            items.extend(_items(spec.name, table, len(items)))
        check_unique((it.id for it in items), spec.hub_id)
        return items
    root = source(spec, data, ["data/*", "*.parquet"])
    for path in find_files(root, ["data/test*.parquet", "data/*.parquet", "*.parquet"], LAYOUT):
        items.extend(_items(spec.name, read_table(path, lazy=("image",)), len(items)))
    check_unique((it.id for it in items), root)
    return items


def _items(task: str, table: Table, start: int) -> list[Item]:
    table.require(("image", "crop_image"), LAYOUT)
    q = table.first(("prompt", "query", "question"), LAYOUT)
    a = table.first(("answer", "response"), LAYOUT)
    cat = next((c for c in CATEGORY_COLUMNS if c in table.columns), None)
    out = []
    for n, row in enumerate(table.rows):
        crop = row["crop_image"]
        out.append(Item(
            id=str(row["id"]) if not is_missing(row.get("id")) else str(start + n),
            task=task,
            image=row["image"],
            question=str(row[q]).replace("<image>", "").strip(),
            answer=str(row[a]).strip(),
            category=str(row[cat]) if cat and not is_missing(row.get(cat)) else None,
            crop_image=None if _empty(crop) else image_source(crop),
        ))
    return out


def _empty(v: Any) -> bool:
    return v is None or (isinstance(v, dict) and v.get("bytes") is None and not v.get("path")) or is_missing(v)
