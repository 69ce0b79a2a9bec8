"""VisualProbe (Mini-o3; the Vision-OPD paper's fine-detail benchmark): three Hub dataset repos,
`Mini-o3/VisualProbe_{Easy,Medium,Hard}`, each a `val.json` (a list of {images: ["VisualProbe_<Level>/<file>"],
problem, solution}) beside its images. `--data` is a folder holding the three snapshots as
`VisualProbe_Easy/`, `VisualProbe_Medium/`, `VisualProbe_Hard/` (any of them), or one level's folder.
The level is the category (Vision-OPD reports the mean over levels); answers are free text. No boxes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vopd_bench.errors import UserError
from vopd_bench.items import Item
from vopd_bench.loaders._tabular import check_unique, read_table, require_fields

LEVELS = ("Easy", "Medium", "Hard")
LAYOUT = "VisualProbe (VisualProbe_<Easy|Medium|Hard>/val.json: images, problem, solution; images beside it)"


def load(spec: Any, data: Path | None) -> list[Item]:
    if data is None:
        raise UserError(f"task {spec.name}: download Mini-o3/VisualProbe_Easy, _Medium and _Hard (Hub datasets) into "
                        "one folder as VisualProbe_<Level>/ and pass it with --data")
    if not data.exists():
        raise UserError(f"task {spec.name}: --data {data} does not exist")
    dirs = [(lv, data / f"VisualProbe_{lv}") for lv in LEVELS if (data / f"VisualProbe_{lv}" / "val.json").is_file()]
    if not dirs and (data / "val.json").is_file():
        level = next((lv for lv in LEVELS if data.name.lower().endswith(lv.lower())), "unknown")
        dirs = [(level, data)]
    if not dirs:
        raise UserError(f"{data}: no VisualProbe_<Level>/val.json or val.json found (expected the {LAYOUT} layout)")
    items: list[Item] = []
    for level, root in dirs:
        items.extend(_items(spec.name, level, root))
    check_unique((it.id for it in items), data)
    return items


def _items(task: str, level: str, root: Path) -> list[Item]:
    table = read_table(root / "val.json")
    out = []
    for n, row in enumerate(table.rows, 1):
        where = f"{table.path}: record {n}"
        require_fields(row, ("images", "problem", "solution"), where, LAYOUT)
        images = row["images"] if isinstance(row["images"], list) else [row["images"]]
        if not images or not isinstance(images[0], str):
            raise UserError(f"{where}: 'images' must list the image path")
        rel, prefix = images[0], f"VisualProbe_{level}/"
        path = root / (rel[len(prefix):] if rel.startswith(prefix) else rel)  # as Vision-OPD's prepare_data.py
        question = str(row["problem"]).replace("<image>\n", "").replace("<image>", "").strip()
        out.append(Item(id=f"{level}-{row.get('id', n - 1)}", task=task, image=str(path), question=question,
                        answer=str(row["solution"]).strip(), category=level))
    return out
