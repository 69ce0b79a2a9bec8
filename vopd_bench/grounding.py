"""Boxes from model responses (the first stage of "look, then zoom"), in the formats model families answer in.

`parse_box(text, width, height, fmt)` returns [x1, y1, x2, y2] in pixels of the image the model saw, clipped
to it, or None when no usable box is stated. Formats:

- `json` (generic): `[x1, y1, x2, y2]`, `{"bbox_2d": [...]}`, `{"bbox": [...]}` — pixels; four numbers in
  [0, 1] are read as fractions of the image.
- `qwen2.5-vl`: absolute pixel coordinates of the image as the processor resized it (Qwen2.5-VL's grounding
  output, usually `{"bbox_2d": [...]}` in a ```json block); pass the resized size as width/height, or
  `scale` to map back to the original.
- `qwen-1000` (Qwen-VL, Qwen2-VL, Qwen3-VL): coordinates normalised to 0–1000, also as
  `<|box_start|>(x1,y1),(x2,y2)<|box_end|>`.
Corners given in the wrong order are swapped; a box of zero area after clipping is None.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

FORMATS = ("json", "qwen2.5-vl", "qwen-1000")
_NUM = r"-?\d+(?:\.\d+)?"
_TUPLE_PAIR = re.compile(rf"\(\s*({_NUM})\s*,\s*({_NUM})\s*\)\s*,?\s*\(\s*({_NUM})\s*,\s*({_NUM})\s*\)")
_LIST4 = re.compile(rf"\[\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*\]")


def _numbers(text: str) -> list[float] | None:
    """The first box-like group of four numbers in `text` (a JSON object's bbox key first)."""
    for m in re.finditer(r"\{[^{}]*\}", text):
        try:
            obj = json.loads(m.group(0))
        except json.JSONDecodeError:
            continue
        for key in ("bbox_2d", "bbox", "box"):
            v = obj.get(key) if isinstance(obj, dict) else None
            if isinstance(v, list) and len(v) == 4 and all(isinstance(x, (int, float)) for x in v):
                return [float(x) for x in v]
    for pat in (_LIST4, _TUPLE_PAIR):
        m = pat.search(text)
        if m:
            return [float(g) for g in m.groups()]
    return None


def parse_box(text: str, width: int, height: int, fmt: str = "json",
              scale: tuple[float, float] | None = None) -> list[int] | None:
    """The box a response states, in pixels of a `width` x `height` image, clipped; None if none is usable.
    `scale`: (sx, sy) multiplied into the coordinates first (e.g. original / resized size for Qwen2.5-VL)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown box format {fmt!r}; choose from {', '.join(FORMATS)}")
    v = _numbers(text or "")
    if v is None:
        return None
    x1, y1, x2, y2 = v
    if fmt == "qwen-1000":
        x1, x2, y1, y2 = x1 * width / 1000, x2 * width / 1000, y1 * height / 1000, y2 * height / 1000
    elif fmt == "json" and all(0 <= c <= 1 for c in v) and any(0 < c < 1 for c in v):
        x1, x2, y1, y2 = x1 * width, x2 * width, y1 * height, y2 * height
    if scale is not None:
        x1, x2, y1, y2 = x1 * scale[0], x2 * scale[0], y1 * scale[1], y2 * scale[1]
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
    box = [max(0, round(x1)), max(0, round(y1)), min(width, round(x2)), min(height, round(y2))]
    return box if box[2] > box[0] and box[3] > box[1] else None


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two [x1, y1, x2, y2] boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
