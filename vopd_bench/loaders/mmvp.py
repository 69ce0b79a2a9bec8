"""MMVP (`MMVP/MMVP`): `Questions.csv` (Index, Question, Options '(a) Open (b) Closed', Correct Answer
'(a)') with the images in `MMVP Images/<Index>.jpg`; a parquet export of the same columns with an
`image` column also loads. The 300 questions come in 150 pairs (same question, two images): each pair
is one `group`. The four labels lmms-eval corrects (MMVP issue #30) are corrected the same way."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from vopd_bench.errors import UserError
from vopd_bench.items import Item
from vopd_bench.loaders._tabular import (
    Table,
    answer_letter,
    check_unique,
    find_files,
    image_source,
    read_table,
    source,
)

LAYOUT = "MMVP (Questions.csv: Index, Question, Options, Correct Answer + 'MMVP Images/<Index>.jpg')"
COLUMNS = ("Index", "Question", "Options", "Correct Answer")
# 1-based Index -> corrected label (github.com/tsb0601/MMVP/issues/30, lmms-eval issue #1018)
CORRECTIONS = {99: "B", 100: "A", 279: "B", 280: "A"}
_OPTION = re.compile(r"\(([a-z])\)\s*([^(]+?)(?=\s*\([a-z]\)|$)", re.IGNORECASE)


def load(spec: Any, data: Path | None) -> list[Item]:
    root = source(spec, data, ["Questions.csv", "MMVP Images/*"])
    path = find_files(root, ["Questions.csv", "*.csv", "*.parquet", "data/*.parquet"], LAYOUT)[0]
    table = read_table(path, lazy=("image",))
    table.require(COLUMNS, LAYOUT)
    fix = bool(spec.options.get("fix_labels", True))
    items = [_item(spec.name, row, table, fix, f"{path}: row {n}") for n, row in enumerate(table.rows, 1)]
    check_unique((it.id for it in items), path)
    return items


def parse_options(text: str) -> list[str]:
    """'(a) Open (b) Closed' -> ['Open', 'Closed']."""
    return [m.group(2).strip() for m in _OPTION.finditer(str(text))]


def _item(task: str, row: dict[str, Any], table: Table, fix: bool, where: str) -> Item:
    try:
        index = int(str(row["Index"]).strip())
    except ValueError:
        raise UserError(f"{where}: column 'Index' is not a number: {row['Index']!r}") from None
    options = parse_options(row["Options"])
    if len(options) < 2:
        raise UserError(f"{where}: column 'Options' has no '(a) ... (b) ...' options: {str(row['Options'])[:60]!r}")
    answer = answer_letter(str(row["Correct Answer"]).strip().upper(), len(options), where)
    if fix and index in CORRECTIONS:
        answer = CORRECTIONS[index]
    image = row["image"] if "image" in table.columns else str(table.path.parent / "MMVP Images" / f"{index}.jpg")
    return Item(
        id=str(index),
        task=task,
        image=image_source(image),
        question=str(row["Question"]).strip(),
        answer=answer,
        options=options,
        group=f"pair{(index - 1) // 2}",
        meta={"label_corrected": fix and index in CORRECTIONS},
    )
