"""Views of an item: `full`, `crop` (the decisive region, zoomed), and the controls `masked`
(region painted over) and `random_crop` (a same-sized region elsewhere). Names are a contract.

The views that decompose the gap, each removing one difference between `full` and `crop`:
`red_box` (the full image with the region outlined: an attention cue, nothing removed, no zoom),
`blur_surround` (everything outside the region blurred: context present but uninformative, no zoom) and
`crop_native` (the crop without upscaling: context removed, no zoom). Read in the order
full → red_box → blur_surround → crop_native → crop.

A view is one function registered with `@register_view(name)`: it gets the decoded full image, the item's
boxes, the crop parameters and a per-item random generator, and returns (image, region taken or None).
`render_view` does the rest (decoding, items without boxes, a benchmark's shipped crop image).

A *staged* view needs the model before it can be drawn: `self_zoom` ("look, then zoom") first asks the model
where the evidence is, then crops there exactly as `crop` does around the gold box (`zoom_to`); the harness
runs both stages (`vopd_bench.self_zoom`). It is in `view_names()` but `render_view` refuses it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass

from PIL import Image, ImageDraw, ImageFilter

from vopd_bench.items import Box, Item


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


def box_fraction(boxes: list[Box], width: int, height: int) -> float | None:
    """Area of the boxes' union rectangle as a fraction of the image (the region the crop is built around)."""
    if not boxes or width <= 0 or height <= 0:
        return None
    x1, y1 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x2, y2 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    return max(0.0, min(x2, width) - max(x1, 0)) * max(0.0, min(y2, height) - max(y1, 0)) / (width * height)


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


Rendered = tuple[Image.Image, "list[int] | None"]
ViewFn = Callable[[Image.Image, list[Box], CropParams, random.Random], Rendered]
_VIEWS: dict[str, tuple[ViewFn, bool]] = {}


def register_view(name: str, needs_region: bool = True) -> Callable[[ViewFn], ViewFn]:
    """Register `fn(image, boxes, params, rng) -> (image, region)` as view `name`. A view that `needs_region`
    is skipped (NoBoxError) for items without boxes; its `rng` is seeded by (run seed, item id)."""

    def deco(fn: ViewFn) -> ViewFn:
        _VIEWS[name] = (fn, needs_region)
        return fn

    return deco


def render_view(
    item: Item, view: str, p: CropParams, seed: int = 0, image: Image.Image | None = None
) -> tuple[Image.Image, list[int] | None]:
    """Return (image, region) for `view`; region is the [x1,y1,x2,y2] original-pixel box used, or None.
    `image` is the item's already-decoded full image, if the caller has it.

    Raises NoBoxError for a region view of an item without boxes (unless it ships a crop image),
    and items.ImageError when the image cannot be decoded.
    """
    if view in STAGED_VIEWS:
        raise ValueError(f"view {view!r} is drawn in two stages by the harness (vopd_bench.self_zoom), not here")
    if view not in _VIEWS:
        raise ValueError(f"unknown view {view!r}; choose from {', '.join(VIEWS)}")
    fn, needs_region = _VIEWS[view]
    if view == "crop" and not item.boxes:
        shipped = item.load_crop_image()
        if shipped is not None:
            return shipped, None
    if needs_region and not item.boxes:
        raise NoBoxError(f"item {item.id} has no boxes")
    im = image if image is not None else item.load_image()
    return fn(im, item.boxes, p, random.Random(f"{seed}:{item.id}"))


@register_view("full", needs_region=False)
def full(im: Image.Image, boxes: list[Box], p: CropParams, rng: random.Random) -> Rendered:
    """The whole image, as the benchmark ships it."""
    return im, None


@register_view("crop")
def crop(im: Image.Image, boxes: list[Box], p: CropParams, rng: random.Random) -> Rendered:
    """The decisive region (union of the boxes, widened by the margin), zoomed."""
    reg = region_box(boxes, *im.size, p)
    return _zoom(im.crop(tuple(reg)), p), reg


def zoom_to(im: Image.Image, box: Box, p: CropParams) -> Rendered:
    """The `crop` view around any box (e.g. one the model pointed at): widened, clipped, zoomed."""
    reg = region_box([box], *im.size, p)
    return _zoom(im.crop(tuple(reg)), p), reg


@register_view("crop_native")
def crop_native(im: Image.Image, boxes: list[Box], p: CropParams, rng: random.Random) -> Rendered:
    """The same region as `crop`, at the image's own resolution (context removed, no zoom)."""
    reg = region_box(boxes, *im.size, p)
    return im.crop(tuple(reg)), reg


def outline_width(width: int, height: int) -> int:
    """The red box's line width: visible at any image size (about 0.6% of the shorter side, at least 2 px)."""
    return max(2, round(min(width, height) / 160))


@register_view("red_box")
def red_box(im: Image.Image, boxes: list[Box], p: CropParams, rng: random.Random) -> Rendered:
    """The full image with each box outlined in red (the form ZwZ's teacher images take); region = the union box."""
    out = im.convert("RGB") if im.mode != "RGB" else im.copy()
    d = ImageDraw.Draw(out)
    w = outline_width(*im.size)
    for b in boxes:
        x1, y1, x2, y2 = (int(round(v)) for v in b)
        d.rectangle([x1 - w, y1 - w, x2 + w - 1, y2 + w - 1], outline=(255, 0, 0), width=w)
    u = union_box(boxes)
    return out, [int(round(v)) for v in u]


def blur_radius(width: int, height: int) -> float:
    """Gaussian radius that makes fine detail unreadable at any image size (2% of the longer side, >= 4 px)."""
    return max(4.0, max(width, height) / 50)


@register_view("blur_surround")
def blur_surround(im: Image.Image, boxes: list[Box], p: CropParams, rng: random.Random) -> Rendered:
    """The full image with everything outside the crop's region Gaussian-blurred (the region itself untouched)."""
    reg = region_box(boxes, *im.size, p)
    base = im.convert("RGB") if im.mode != "RGB" else im
    out = base.filter(ImageFilter.GaussianBlur(blur_radius(*im.size)))
    out.paste(base.crop(tuple(reg)), (reg[0], reg[1]))
    return out, reg


@register_view("masked")
def masked(im: Image.Image, boxes: list[Box], p: CropParams, rng: random.Random) -> Rendered:
    """The full image with each box (plus half the margin) painted in the image's mean colour."""
    W, H = im.size
    out = im.copy()
    d = ImageDraw.Draw(out)
    fill = _mean_colour(im)
    for b in boxes:
        rb = region_box([b], W, H, CropParams(margin=p.margin * 0.5, min_side=1))
        d.rectangle([rb[0], rb[1], rb[2] - 1, rb[3] - 1], fill=fill)
    return out, region_box(boxes, W, H, p)


@register_view("random_crop")
def random_crop(im: Image.Image, boxes: list[Box], p: CropParams, rng: random.Random) -> Rendered:
    """A same-sized region elsewhere, overlapping the true region as little as possible, zoomed alike."""
    W, H = im.size
    reg = region_box(boxes, W, H, p)
    rw, rh = reg[2] - reg[0], reg[3] - reg[1]
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


# views the harness draws in stages with the model's help (name -> what it is)
STAGED_VIEWS = {"self_zoom": "look, then zoom: the model names a box, the question is asked on its crop"}


def view_names() -> tuple[str, ...]:
    """Every view: the registered ones (built-in first, then any a plugin registered), then the staged ones."""
    return (*_VIEWS, *STAGED_VIEWS)


VIEWS = view_names()  # built-in: full, crop, crop_native, red_box, blur_surround, masked, random_crop, self_zoom
DECOMPOSITION = ("full", "red_box", "blur_surround", "crop_native", "crop")  # the gap, one difference at a time
REGION_VIEWS = tuple(v for v, (_, needs) in _VIEWS.items() if needs)
