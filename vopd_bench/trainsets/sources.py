"""Box sources: where each image's regions come from. A COCO/LVIS-style annotation file (read with
pycocotools), a JSONL box file, or a zero-shot detector (`detector.Detector`). Each source lists the
images it covers (paths relative to the images folder) and gives the regions of one image."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from vopd_bench.errors import UserError
from vopd_bench.runtime import iter_jsonl
from vopd_bench.trainsets.regions import Region

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class BoxSource(Protocol):
    """What the pipeline asks of a box source."""

    kind: str  # "annotations", "jsonl" or "detector"

    def describe(self) -> dict[str, Any]: ...

    def images(self, images_dir: Path) -> list[str]: ...

    def regions(self, name: str, image: Image.Image) -> list[Region]: ...


def list_images(images_dir: Path) -> list[str]:
    """Image files under `images_dir` (recursive, sorted), as paths relative to it."""
    return sorted(str(p.relative_to(images_dir)) for p in images_dir.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


@dataclass
class CocoBoxes:
    """Boxes of a COCO- or LVIS-style annotation file: `images` (id, file_name; LVIS: coco_url),
    `annotations` (image_id, category_id, bbox = [x, y, width, height]; `iscrowd` ones are skipped) and
    `categories` (id, name). Read with pycocotools; a malformed file is a one-line UserError."""

    path: Path
    kind: str = "annotations"
    _by_name: dict[str, list[Region]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        data = _read_json(self.path)
        _check_coco(self.path, data)
        try:
            from pycocotools.coco import COCO
        except ImportError:
            raise UserError("reading COCO/LVIS annotation files needs pycocotools: pip install 'vopd-bench[prompts]'") from None

        coco = COCO()
        coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco.createIndex()
        names = {c["id"]: str(c["name"]) for c in data.get("categories", [])}
        for img_id, img in coco.imgs.items():
            name = _image_name(img)
            regions = []
            for ann in coco.imgToAnns.get(img_id, []):
                if ann.get("iscrowd"):
                    continue
                x, y, w, h = (float(v) for v in ann["bbox"])
                regions.append(Region([x, y, x + w, y + h], names.get(ann.get("category_id"), ""), None,
                                      "annotations", {"annotation_id": ann.get("id")}))
            self._by_name[name] = regions

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "file": str(self.path)}

    def images(self, images_dir: Path) -> list[str]:
        return sorted(self._by_name)

    def regions(self, name: str, image: Image.Image) -> list[Region]:
        return list(self._by_name.get(name, []))


@dataclass
class JsonlBoxes:
    """Boxes of a JSONL file, one row per image or per box: `image` (path relative to the images folder),
    and `boxes` ([[x1, y1, x2, y2], ...] pixels) with optional `labels` and `scores`, or one `box` with an
    optional `label`. Rows naming the same image add up."""

    path: Path
    kind: str = "jsonl"
    _by_name: dict[str, list[Region]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if not self.path.is_file():
            raise UserError(f"--boxes {self.path}: file not found")
        for ln, row in iter_jsonl(self.path):
            where = f"{self.path}:{ln}"
            if not isinstance(row, dict) or not isinstance(row.get("image"), str):
                raise UserError(f"{where}: each row needs 'image' (a path relative to the images folder)")
            boxes = row.get("boxes", [row["box"]] if "box" in row else None)
            labels = row.get("labels", [row.get("label", "")] * len(boxes or []))
            scores = row.get("scores", [None] * len(boxes or []))
            if not isinstance(boxes, list) or not all(_is_box(b) for b in boxes):
                raise UserError(f"{where}: field 'boxes' must be a list of [x1, y1, x2, y2] numbers (or 'box': one)")
            if not isinstance(labels, list) or len(labels) != len(boxes):
                raise UserError(f"{where}: field 'labels' must be a list as long as 'boxes'")
            if not isinstance(scores, list) or len(scores) != len(boxes):
                raise UserError(f"{where}: field 'scores' must be a list as long as 'boxes'")
            regs = self._by_name.setdefault(row["image"], [])
            regs.extend(Region([float(v) for v in b], str(lab or ""), None if s is None else float(s), "jsonl")
                        for b, lab, s in zip(boxes, labels, scores))

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "file": str(self.path)}

    def images(self, images_dir: Path) -> list[str]:
        return sorted(self._by_name)

    def regions(self, name: str, image: Image.Image) -> list[Region]:
        return list(self._by_name.get(name, []))


def open_boxes(path: str | Path) -> BoxSource:
    """A box file by its suffix: .json (COCO/LVIS annotations) or .jsonl (JSONL boxes)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--boxes {p}: file not found")
    if p.suffix.lower() == ".jsonl":
        return JsonlBoxes(p)
    if p.suffix.lower() == ".json":
        return CocoBoxes(p)
    raise UserError(f"--boxes {p}: want a COCO/LVIS annotation file (.json) or a JSONL box file (.jsonl)")


# ----------------------------------------------------------------------------- checks
def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise UserError(f"--boxes {path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read ({e})") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None


def _check_coco(path: Path, data: Any) -> None:
    """One-line errors for the COCO fields the pipeline reads (pycocotools itself would raise KeyErrors)."""
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise UserError(f"{path}: not a COCO/LVIS annotation file (want an object with 'images', 'annotations', "
                        "'categories')")
    for key in ("annotations", "categories"):
        if not isinstance(data.get(key, []), list):
            raise UserError(f"{path}: field '{key}' must be a list")
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or "id" not in img or not (img.get("file_name") or img.get("coco_url")):
            raise UserError(f"{path}: images[{i}] needs 'id' and 'file_name' (or LVIS 'coco_url')")
    ids = {img["id"] for img in data["images"]}
    for i, c in enumerate(data.get("categories", [])):
        if not isinstance(c, dict) or "id" not in c or "name" not in c:
            raise UserError(f"{path}: categories[{i}] needs 'id' and 'name'")
    for i, a in enumerate(data.get("annotations", [])):
        if not isinstance(a, dict) or "image_id" not in a:
            raise UserError(f"{path}: annotations[{i}] needs 'image_id'")
        if a["image_id"] not in ids:
            raise UserError(f"{path}: annotations[{i}]: image_id {a['image_id']!r} is not in 'images'")
        b = a.get("bbox")
        if not _is_box(b) or b[2] < 0 or b[3] < 0:
            raise UserError(f"{path}: annotations[{i}]: 'bbox' must be [x, y, width, height] (non-negative size)")


def _image_name(img: dict[str, Any]) -> str:
    """COCO `file_name`; LVIS v1 has only `coco_url`, whose last part is the file name."""
    return str(img.get("file_name") or str(img["coco_url"]).rsplit("/", 1)[-1])


def _is_box(b: Any) -> bool:
    return isinstance(b, (list, tuple)) and len(b) == 4 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in b)
