"""V* Bench (`craigwu/vstar_bench`): `test_questions.jsonl` rows (question_id, image, text with the
'(A) ...' options and a trailing instruction, category, label) joined by file stem with the JSON next
to each image (`direct_attributes/sa_4690.json`: `bbox` = list of [x, y, w, h] pixel boxes)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from vopd_bench.errors import UserError
from vopd_bench.items import LETTERS, Item
from vopd_bench.loaders._tabular import (
    answer_letter,
    check_unique,
    parse_boxes,
    read_table,
    require_fields,
    source,
    split_sequential,
)

LAYOUT = "V* Bench (test_questions.jsonl + <category>/<stem>.jpg with <stem>.json)"
PATTERNS = ("test_questions.jsonl", "direct_attributes/*", "relative_position/*")
FIELDS = ("question_id", "image", "text", "category")
# The prompt suffix V* ships inside `text`; it must not end up in the last option.
_INSTRUCTION = re.compile(r"\s*Answer with the option'?s letter\b.*$", re.IGNORECASE | re.DOTALL)


def load(spec: Any, data: Path | None) -> list[Item]:
    root = source(spec, data, PATTERNS)
    qfile = root if root.is_file() else root / "test_questions.jsonl"
    if not qfile.is_file():
        raise UserError(f"{root}: missing test_questions.jsonl (expected the {LAYOUT} layout)")
    items = [_item(spec.name, row, qfile.parent, f"{qfile}:{n}") for n, row in enumerate(read_table(qfile).rows, 1)]
    check_unique((it.id for it in items), qfile)
    return items


def split_text(text: str) -> tuple[str, list[str]]:
    """V* `text` -> (question, option texts), without the trailing answer instruction."""
    body = _INSTRUCTION.sub("", text.strip())
    question, options = split_sequential(body, "({})")
    if options:  # anything on a new line after the last option is an instruction, not option text
        options[-1] = options[-1].split("\n", 1)[0].strip()
    return question, options


def _item(task: str, row: dict[str, Any], root: Path, where: str) -> Item:
    require_fields(row, FIELDS, where, LAYOUT)
    question, options = split_text(str(row["text"]))
    if len(options) < 2:
        raise UserError(f"{where}: field 'text' has no '(A) ... (B) ...' options")
    image = root / str(row["image"])
    meta = _image_json(image.with_suffix(".json"), where)
    boxes = parse_boxes(meta.get("bbox") or [], str(image.with_suffix(".json")), "bbox", fmt="xywh")
    return Item(
        id=str(row["question_id"]),
        task=task,
        image=str(image),
        question=question,
        answer=_answer(row, meta, options, where),
        options=options,
        boxes=boxes,
        category=str(row["category"]),
        meta={"target_object": meta.get("target_object"), "image": str(row["image"])},
    )


def _image_json(path: Path, where: str) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"{where}: missing {path.name} next to the image (expected the {LAYOUT} layout)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e.msg})") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path}: expected a JSON object with 'bbox'")
    return meta


def _answer(row: dict[str, Any], meta: dict[str, Any], options: list[str], where: str) -> str:
    """`label` when present; else the per-image JSON's first option (V* lists the correct one first)."""
    if row.get("label") not in (None, ""):
        return answer_letter(row["label"], len(options), where)
    first = (meta.get("options") or [None])[0]
    for i, opt in enumerate(options):
        if first is not None and opt.strip().lower() == str(first).strip().lower():
            return LETTERS[i]
    raise UserError(f"{where}: no 'label' and the image JSON's options do not identify the answer")
