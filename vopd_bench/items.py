"""The data model: one benchmark question as an `Item`, with pixel boxes on the original image."""

from __future__ import annotations

import base64
import io
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image

log = logging.getLogger(__name__)

Box = list[float]  # [x1, y1, x2, y2] in pixels of the original image
LETTERS = "ABCDEFGHIJ"


class ImageError(Exception):
    """An item's image could not be read or decoded (recorded per item; the run goes on)."""


@dataclass
class Item:
    """One question of one task.

    `image` is lazy: a path, raw bytes, a base64 string, a PIL image or a zero-argument callable.
    `boxes` are [x1, y1, x2, y2] pixel boxes of the decisive region (possibly empty).
    `options` is the list of option texts for multiple choice (letters A, B, ... in order), or None.
    `answer` is the gold letter for multiple choice, else the gold free-text answer.
    `group` clusters items that repeat one question (e.g. HR-Bench option cycles) for statistics.
    """

    id: str
    task: str
    image: Any
    question: str
    answer: str
    options: list[str] | None = None
    boxes: list[Box] = field(default_factory=list)
    category: str | None = None
    crop_image: Any = None
    group: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def load_image(self) -> Image.Image:
        """Decode the full image as RGB; raises ImageError with the reason."""
        return _decode(self.image, f"item {self.id}")

    def load_crop_image(self) -> Image.Image | None:
        """The benchmark's own crop image (e.g. ZoomBench), if it ships one."""
        if self.crop_image is None:
            return None
        return _decode(self.crop_image, f"item {self.id} crop_image")


def _decode(src: Any, what: str) -> Image.Image:
    try:
        if isinstance(src, Image.Image):
            im = src
        elif callable(src):
            return _decode(src(), what)
        elif isinstance(src, (bytes, bytearray)):
            im = Image.open(io.BytesIO(src))
        elif isinstance(src, dict) and "bytes" in src:  # HF datasets / parquet image struct
            if src.get("bytes") is not None:
                im = Image.open(io.BytesIO(src["bytes"]))
            else:
                im = Image.open(src["path"])
        elif isinstance(src, Path):
            im = Image.open(src)
        elif isinstance(src, str):
            im = Image.open(src) if _looks_like_path(src) else Image.open(io.BytesIO(base64.b64decode(src, validate=True)))
        else:
            raise ImageError(f"{what}: unsupported image source {type(src).__name__}")
        im.load()
        return im.convert("RGB")
    except ImageError:
        raise
    except Exception as e:  # PIL raises many types for corrupt data
        raise ImageError(f"{what}: cannot decode image ({type(e).__name__}: {e})") from None


class ImageCache:
    """A bounded, thread-safe LRU of decoded item images, so the views of an item decode it once.

    Keyed by the image source when it is a path, bytes or base64 text (items sharing an image share the
    entry), else by the item itself. At most `max_bytes` of pixels are kept (PIL holds RGB in 4 bytes a
    pixel; a larger image is never kept). Failures are not cached: each miss decodes through
    `Item.load_image`, so an undecodable image raises the same ImageError every time.
    """

    def __init__(self, max_bytes: int = 256 << 20) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.hits = self.misses = 0
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, tuple[Item | None, Image.Image, int]] = OrderedDict()

    @property
    def n_images(self) -> int:
        return len(self._entries)

    def load(self, item: Item) -> Image.Image:
        """The item's decoded RGB image, shared with the cache: callers must not modify it."""
        key, owner = _cache_key(item)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] is owner:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry[1]
            self.misses += 1
        im = item.load_image()  # outside the lock: decoding is the slow part
        self._put(key, owner, im)
        return im

    def through(self, item: Item) -> Item:
        """A copy of `item` whose image loads via this cache (`load_image` still returns a private copy)."""
        return replace(item, image=lambda: self.load(item))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.nbytes = 0

    def _put(self, key: Hashable, owner: Item | None, im: Image.Image) -> None:
        size = 4 * im.width * im.height
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.nbytes -= old[2]
            self._entries[key] = (owner, im, size)
            self.nbytes += size
            while self.nbytes > self.max_bytes:
                _, (_, _, n) = self._entries.popitem(last=False)
                self.nbytes -= n


def _cache_key(item: Item) -> tuple[Hashable, Item | None]:
    """(key, owner): the source itself where hashable and stable, else the item (kept as the entry's owner,
    so a recycled id() never hits)."""
    src = item.image
    if isinstance(src, (str, bytes, Path)):
        return (type(src).__name__, src), None
    return ("item", id(item)), item


def _looks_like_path(s: str) -> bool:
    """Base64 has no '.', so a string with one (a file suffix) or naming an existing file is a path."""
    return "." in s[:4096] or (len(s) < 4096 and Path(s).exists())


def clean_boxes(boxes: list[Box], width: int, height: int, what: str) -> list[Box]:
    """Clip boxes to the image; drop (with a warning) boxes of zero area or fully outside."""
    out: list[Box] = []
    for b in boxes:
        x1, y1, x2, y2 = (float(v) for v in b)
        if x2 < x1:
            x1, x2 = x2, x1
        if y2 < y1:
            y1, y2 = y2, y1
        cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
        cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
        if cx2 - cx1 <= 0 or cy2 - cy1 <= 0:
            log.warning("%s: box %s has zero area inside the %dx%d image; dropped", what, b, width, height)
            continue
        if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
            log.warning("%s: box %s extends outside the %dx%d image; clipped", what, b, width, height)
        out.append([cx1, cy1, cx2, cy2])
    return out


ItemSource = Callable[[], "list[Item]"]
