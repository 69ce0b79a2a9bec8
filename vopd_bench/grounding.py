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

The first stage's question (`grounding_prompt`) is each family's own grounding request where it has one
(Qwen's "output its bbox coordinates in JSON format"), the generic JSON request otherwise; `format_for`
picks the format from the processor class (HF/vLLM) or the model name (OpenAI-compatible servers), and
`box_text` writes a box as a model of that format answers it (the reference model was trained on it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

FORMATS = ("json", "qwen2.5-vl", "qwen-1000")
PROMPTS = {
    "json": "Where in the image is the evidence needed to answer this question?\n{question}\n"
            "Answer only with its bounding box as JSON [x1, y1, x2, y2] in pixels.",
    # Qwen-VL's documented grounding request (its cookbooks): the coordinates' meaning comes from the family
    "qwen2.5-vl": 'Locate the region needed to answer the question "{question}", '
                  "output its bbox coordinates in JSON format.",
    "qwen-1000": 'Locate the region needed to answer the question "{question}", '
                 "output its bbox coordinates in JSON format.",
}
# processor class (HF/vLLM) or model-name fragment (servers) -> box format; first match wins
_BY_PROCESSOR = (
    ("Qwen2_5_VLProcessor", "qwen2.5-vl"),
    ("Qwen2VLProcessor", "qwen-1000"),
    ("Qwen3VLProcessor", "qwen-1000"),
    ("Glm4vProcessor", "qwen-1000"),  # GLM-4.1V: <|begin_of_box|>[x1,y1,x2,y2]<|end_of_box|>, 0-1000
    ("InternVLProcessor", "qwen-1000"),  # InternVL: <box>[[x1, y1, x2, y2]]</box>, 0-1000
)
_BY_NAME = (
    ("qwen2.5-vl", "qwen2.5-vl"), ("qwen2_5_vl", "qwen2.5-vl"), ("vopd-tiny", "qwen2.5-vl"),
    ("qwen2-vl", "qwen-1000"), ("qwen3-vl", "qwen-1000"), ("qwen3.5", "qwen-1000"), ("qwen3_5", "qwen-1000"),
    ("glm-4", "qwen-1000"), ("internvl", "qwen-1000"),
)


def format_for(processor: object | None = None, model: str | None = None) -> str:
    """The box format of a model: by its processor's class (or a base class), else by fragments of its
    name, else the generic `json`."""
    if processor is not None:
        names = {c.__name__ for c in type(processor).__mro__}
        for cls, fmt in _BY_PROCESSOR:
            if cls in names:
                return fmt
    name = (model or "").lower()
    return next((fmt for frag, fmt in _BY_NAME if frag in name), "json")


def qwen_resize(width: int, height: int, factor: int = 28, min_pixels: int = 56 * 56,
                max_pixels: int = 28 * 28 * 16384) -> tuple[int, int]:
    """(width, height) of an image after Qwen2.5-VL's default resize (sides multiples of `factor`, area within
    [min_pixels, max_pixels]): what its absolute coordinates refer to when no processor is at hand (a server)."""
    import math

    h, w = round(height / factor) * factor, round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return w, h


def grounding_prompt(question: str, fmt: str = "json") -> str:
    """The first stage's request: where is the evidence for `question` (in the format's own words)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown box format {fmt!r}; choose from {', '.join(FORMATS)}")
    return PROMPTS[fmt].format(question=question.strip())


def box_text(box: Sequence[float], width: int, height: int, fmt: str = "json") -> str:
    """`box` (pixels of a `width` x `height` image) written as a model of format `fmt` answers:
    `{"bbox_2d": [...]}` (absolute for qwen2.5-vl, 0-1000 for qwen-1000), `[x1, y1, x2, y2]` for json."""
    if fmt == "qwen-1000":
        v = [box[0] * 1000 / width, box[1] * 1000 / height, box[2] * 1000 / width, box[3] * 1000 / height]
    else:
        v = list(box)
    nums = ", ".join(str(int(round(c))) for c in v)
    return f"[{nums}]" if fmt == "json" else f'{{"bbox_2d": [{nums}]}}'

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
