"""Views of an item: `full`, `crop` (the decisive region, zoomed), and the controls `masked`
(region painted over) and `random_crop` (a same-sized region elsewhere). Names are a contract."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

from PIL import Image, ImageDraw

from vopd_bench.items import Box, Item

VIEWS = ("full", "crop", "masked", "random_crop")
REGION_VIEWS = ("crop", "masked", "random_crop")


class NoBoxError(Exception):
    """The item has no box, so a region view cannot be made (the item is skipped for that view)."""


@dataclass(frozen=True)
class CropParams:
    """How the decisive region becomes the `crop` view (all recorded in config.json).

    margin: context added on each side, as a fraction of the union box's width/height (then clipped).
    min_side: the region is then widened (centred, kept inside the image) to at least this many pixels.
    upscale: resize factor applied to the region (the paper zooms ~2x).
    resize_to: if set, the region's longer side is resized to this many pixels instead of `upscale`.
    """

    margin: float = 0.5
    min_side: int = 32
    upscale: float = 2.0
    resize_to: int | None = None

    def __post_init__(self) -> None:
        if self.margin < 0:
            raise ValueError(f"crop margin must be >= 0, got {self.margin}")
        if self.min_side < 1:
            raise ValueError(f"crop min_side must be >= 1, got {self.min_side}")
        if self.upscale <= 0:
            raise ValueError(f"crop upscale must be > 0, got {self.upscale}")
        if self.resize_to is not None and self.resize_to < 8:
            raise ValueError(f"crop resize_to must be >= 8, got {self.resize_to}")

    def to_dict(self) -> dict:
        return asdict(self)


def union_box(boxes: list[Box]) -> Box:
    if not boxes:
        raise NoBoxError("item has no boxes")
    return [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]


def _min_span(lo: float, hi: float, want: float, limit: int) -> tuple[float, float]:
    """Widen [lo, hi] (already inside [0, limit]) symmetrically to `want`, shifted to stay inside."""
    if hi - lo >= want:
        return lo, hi
    c = (lo + hi) / 2
    lo, hi = c - want / 2, c + want / 2
    if lo < 0:
        lo, hi = 0.0, want
    if hi > limit:
        lo, hi = limit - want, float(limit)
    return max(lo, 0.0), min(hi, float(limit))


def region_box(boxes: list[Box], width: int, height: int, p: CropParams) -> list[int]:
    """The integer pixel region [x1, y1, x2, y2] the crop view takes from the original image:
    union box, widened by `margin` on each side and clipped to the image, then widened (centred,
    shifted inside) to at least `min_side` per side."""
    x1, y1, x2, y2 = union_box(boxes)
    w, h = x2 - x1, y2 - y1
    x1, x2 = max(0.0, x1 - p.margin * w), min(float(width), x2 + p.margin * w)
    y1, y2 = max(0.0, y1 - p.margin * h), min(float(height), y2 + p.margin * h)
    x1, x2 = _min_span(x1, x2, min(p.min_side, width), width)
    y1, y2 = _min_span(y1, y2, min(p.min_side, height), height)
    r = [int(round(x1)), int(round(y1)), int(round(x2)), int(round(y2))]
    r[2], r[3] = max(r[2], r[0] + 1), max(r[3], r[1] + 1)
    return r


def _zoom(im: Image.Image, p: CropParams) -> Image.Image:
    w, h = im.size
    f = p.resize_to / max(w, h) if p.resize_to else p.upscale
    size = (max(1, int(round(w * f))), max(1, int(round(h * f))))
    return im if size == im.size else im.resize(size, Image.BICUBIC)


def render_view(
    item: Item, view: str, p: CropParams, seed: int = 0, image: Image.Image | None = None
) -> tuple[Image.Image, list[int] | None]:
    """Return (image, region) for `view`; region is the [x1,y1,x2,y2] original-pixel box used, or None.
    `image` is the item's already-decoded full image, if the caller has it.

    Raises NoBoxError for a region view of an item without boxes (unless it ships a crop image),
    and items.ImageError when the image cannot be decoded.
    """
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; choose from {', '.join(VIEWS)}")
    if view == "crop" and not item.boxes:
        shipped = item.load_crop_image()
        if shipped is not None:
            return shipped, None
    if view != "full" and not item.boxes:
        raise NoBoxError(f"item {item.id} has no boxes")
    im = image if image is not None else item.load_image()
    if view == "full":
        return im, None
    W, H = im.size
    reg = region_box(item.boxes, W, H, p)
    if view == "crop":
        return _zoom(im.crop(tuple(reg)), p), reg
    if view == "masked":
        out = im.copy()
        d = ImageDraw.Draw(out)
        fill = _mean_colour(im)
        for b in item.boxes:  # paint each box (plus the margin) with the image's mean colour
            rb = region_box([b], W, H, CropParams(margin=p.margin * 0.5, min_side=1))
            d.rectangle([rb[0], rb[1], rb[2] - 1, rb[3] - 1], fill=fill)
        return out, reg
    # random_crop: same-sized region elsewhere, overlapping the true region as little as possible
    rw, rh = reg[2] - reg[0], reg[3] - reg[1]
    rng = random.Random(f"{seed}:{item.id}")
    best, best_ov = reg, float("inf")
    for _ in range(32):
        x = rng.randint(0, max(0, W - rw))
        y = rng.randint(0, max(0, H - rh))
        cand = [x, y, x + rw, y + rh]
        ov = _overlap(cand, reg)
        if ov < best_ov:
            best, best_ov = cand, ov
        if ov == 0:
            break
    return _zoom(im.crop(tuple(best)), p), best


def _overlap(a: list[int], b: list[int]) -> float:
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    return float(w * h)


def _mean_colour(im: Image.Image) -> tuple[int, int, int]:
    small = im.resize((1, 1), Image.BOX)
    r, g, b = small.getpixel((0, 0))[:3]
    return (int(r), int(g), int(b))
