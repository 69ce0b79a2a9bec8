"""The project's own local layout (also `vopd-bench synth` output and users' own data): a folder with
`items.jsonl` (or a .jsonl file) whose rows hold id, image (path relative to the file), question,
answer, and optionally options (list), boxes (list of [x1,y1,x2,y2] pixels), category, group."""

from __future__ import annotations

from pathlib import Path

from vopd_bench.errors import UserError
from vopd_bench.items import Item
from vopd_bench.runtime import iter_jsonl

REQUIRED = ("id", "image", "question", "answer")


def resolve(data: Path) -> Path:
    path = data / "items.jsonl" if data.is_dir() else data
    if not path.is_file():
        raise UserError(f"{data}: expected a folder with items.jsonl or a .jsonl file")
    return path


def read_items(path: Path, task: str) -> list[Item]:
    items: list[Item] = []
    seen: set[str] = set()
    for ln, row in iter_jsonl(path):
        missing = [k for k in REQUIRED if k not in row]
        if missing:
            raise UserError(f"{path}:{ln}: missing field '{missing[0]}'")
        iid = str(row["id"])
        if iid in seen:
            raise UserError(f"{path}:{ln}: duplicate id {iid!r}")
        seen.add(iid)
        boxes = row.get("boxes") or []
        if not isinstance(boxes, list) or not all(isinstance(b, list) and len(b) == 4 for b in boxes):
            raise UserError(f"{path}:{ln}: field 'boxes' must be a list of [x1, y1, x2, y2]")
        opts = row.get("options")
        if opts is not None and (not isinstance(opts, list) or len(opts) < 2):
            raise UserError(f"{path}:{ln}: field 'options' must be a list of at least 2 strings")
        img = row["image"]
        items.append(
            Item(
                id=iid,
                task=task,
                image=str(path.parent / img) if isinstance(img, str) else img,
                question=str(row["question"]),
                answer=str(row["answer"]),
                options=[str(o) for o in opts] if opts else None,
                boxes=[[float(v) for v in b] for b in boxes],
                category=row.get("category"),
                group=row.get("group"),
                meta=row.get("meta") or {},
            )
        )
    return items


def load(spec, data: Path | None) -> list[Item]:
    if data is None:
        raise UserError(f"task {spec.name}: needs --data PATH (a folder with items.jsonl or a .jsonl file)")
    return read_items(resolve(data), spec.name)
