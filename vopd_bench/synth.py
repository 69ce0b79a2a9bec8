"""Seeded synthetic fine-detail data: ONE salient target among stroke-and-speckle clutter.

Every scene holds a single target (a filled shape or a digit glyph) in a small clear halo, on a
background of thin random strokes and speckles. The question asks about that target only (its colour,
its shape, or which digit it is), with four lettered options, so no word-to-object binding is needed:
the difficulty is purely perceptual. Each category has four possible answers, listed in one fixed order
by default (`shuffle_options` shuffles them), so chance is 25%. At full resolution the target is 16-28 px among dense clutter; the
`crop` view (see `vopd_bench.views`) zooms it to fill the image, which is where the gap comes from.

Kinds: ``clutter`` (the gap task), ``holdout`` (large objects, no clutter: general ability) and
``plain`` (objects of many sizes, no clutter: pre-training).

On disk (`generate`): ``images/*.png``, ``items.jsonl`` (the layout `vopd_bench.loaders.jsonl` reads)
and ``meta.json``. In memory (`sample`): one (image, row) pair, for training without touching disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vopd_bench.items import LETTERS

log = logging.getLogger(__name__)

GENERATOR_VERSION = "1"
KINDS = ("clutter", "holdout", "plain")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (35, 70, 230),
    "yellow": (235, 200, 10),
    "purple": (150, 40, 190),
    "cyan": (0, 200, 215),
}
SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
DIGITS = tuple(str(d) for d in range(10))
QUESTIONS = {
    "colour": "What colour is the object?",
    "shape": "What shape is the object?",
    "digit": "What digit is shown?",
}
# The answers a question can have (4 per category); attributes not asked about use the full sets above.
VALUES: dict[str, tuple[str, ...]] = {
    "colour": ("red", "green", "blue", "yellow"),
    "shape": ("circle", "square", "triangle", "star"),
    "digit": ("2", "4", "7", "8"),
}
CATEGORIES = tuple(QUESTIONS)
DIGIT_HEIGHT = 0.7  # glyph height of PIL's default font, as a fraction of the font size

# Per-kind defaults for the fields left as None.
_KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "clutter": {"target_size": (16, 28), "clutter": 480.0},
    "holdout": {"target_size": (40, 100), "clutter": 0.0},
    "plain": {"target_size": (10, 100), "clutter": 0.0},
}


def _help(text: str, default: Any = None) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass
class SynthConfig:
    """What a synthetic scene looks like (everything that changes an image is here, and hashed)."""

    kind: str = _help("clutter (the gap task), holdout (large uncluttered objects) or plain", "clutter")
    image_size: int = _help("side of the square image in pixels (a multiple of 28 keeps it unresized)", 224)
    target_size: tuple[int, int] | None = _help(
        "min and max target size in pixels (shape diameter / digit height); default by kind"
    )
    clutter: float | None = _help("mean number of clutter strokes (Poisson); 0 = none; default by kind")
    speckle_ratio: float = _help("speckles drawn per stroke", 2.0)
    palette_clutter: float = _help("fraction of clutter drawn in the target colours (the rest random)", 0.5)
    halo: float = _help("radius of the clear ring around the target, as a fraction of its size", 0.7)
    categories: tuple[str, ...] = _help("question categories drawn uniformly", CATEGORIES)
    n_options: int = _help("lettered options per question (chance = 1 / n_options)", 4)
    shuffle_options: bool = _help(
        "shuffle the options per question; default: each category's options in one fixed order, so the "
        "letter follows from the answer (a tiny model does not learn to look words up among options quickly)",
        False,
    )

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        for name, value in _KIND_DEFAULTS[self.kind].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        self.target_size = tuple(int(v) for v in self.target_size)  # type: ignore[union-attr]
        self.categories = tuple(self.categories)
        self.clutter = float(self.clutter)  # type: ignore[arg-type]
        if self.image_size < 56:
            raise ValueError(f"image_size must be >= 56, got {self.image_size}")
        lo, hi = self.target_size if len(self.target_size) == 2 else (0, 0)
        if not 4 <= lo <= hi <= self.image_size // 2:
            raise ValueError(
                f"target_size must be [min, max] with 4 <= min <= max <= image_size/2, got {self.target_size}"
            )
        if self.clutter < 0 or self.speckle_ratio < 0:
            raise ValueError("clutter and speckle_ratio must be >= 0")
        if not 0 <= self.palette_clutter <= 1:
            raise ValueError(f"palette_clutter must be in [0, 1], got {self.palette_clutter}")
        if self.halo < 0:
            raise ValueError(f"halo must be >= 0, got {self.halo}")
        bad = [c for c in self.categories if c not in CATEGORIES]
        if bad or not self.categories:
            raise ValueError(
                f"categories must be a non-empty subset of {', '.join(CATEGORIES)}, got {self.categories}"
            )
        if not 2 <= self.n_options <= min(len(VALUES[c]) for c in self.categories):
            raise ValueError(
                f"n_options must be between 2 and the smallest category's size, got {self.n_options}"
            )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["target_size"] = list(self.target_size)  # type: ignore[arg-type]
        d["categories"] = list(self.categories)
        return d

    @classmethod
    def help(cls) -> dict[str, str]:
        """Field name -> help text (for CLIs)."""
        return {f.name: f.metadata.get("help", "") for f in fields(cls)}


# ----------------------------------------------------------------------------- answers
def answer_text(category: str, value: str, letter: str) -> str:
    """The reference model's answer: a short statement, then the letter, e.g. 'It is red. Answer: B'."""
    what = f"a {value}" if category == "shape" else value
    return f"It is {what}. Answer: {letter}"


# ----------------------------------------------------------------------------- drawing
def _shape_polygons(shape: str, cx: float, cy: float, s: float) -> list[list[tuple[float, float]]]:
    """Polygons (filled) for `shape` of size `s` centred at (cx, cy); a circle is a 32-gon."""
    r = s / 2
    if shape == "circle":
        return [
            [
                (cx + r * math.cos(2 * math.pi * k / 32), cy + r * math.sin(2 * math.pi * k / 32))
                for k in range(32)
            ]
        ]
    if shape == "square":
        q = r * 0.85
        return [[(cx - q, cy - q), (cx + q, cy - q), (cx + q, cy + q), (cx - q, cy + q)]]
    if shape == "triangle":
        return [[(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)]]
    if shape == "diamond":
        return [[(cx, cy - r), (cx + r * 0.75, cy), (cx, cy + r), (cx - r * 0.75, cy)]]
    if shape == "star":
        pts = []
        for k in range(10):
            a = -math.pi / 2 + k * math.pi / 5
            rr = r if k % 2 == 0 else r * 0.45
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        return [pts]
    if shape == "cross":
        w = r * 0.38
        return [
            [(cx - r, cy - w), (cx + r, cy - w), (cx + r, cy + w), (cx - r, cy + w)],
            [(cx - w, cy - r), (cx + w, cy - r), (cx + w, cy + r), (cx - w, cy + r)],
        ]
    raise ValueError(f"unknown shape {shape!r}")


@lru_cache(maxsize=256)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _draw_target(draws: list[ImageDraw.ImageDraw], fills: list[Any], target: dict[str, Any]) -> None:
    """Draw the target on each (draw, fill) pair: the scene in colour and the box mask in white."""
    cx, cy, s = target["cx"], target["cy"], target["size"]
    if target["digit"] is not None:
        font = _font(max(4, round(s / DIGIT_HEIGHT)))
        stroke = max(1, round(s / 12))
        for d, fill in zip(draws, fills):
            d.text(
                (cx, cy),
                target["digit"],
                font=font,
                fill=fill,
                anchor="mm",
                stroke_width=stroke,
                stroke_fill=fill,
            )
        return
    for poly in _shape_polygons(target["shape"], cx, cy, s):
        for d, fill in zip(draws, fills):
            d.polygon(poly, fill=fill)


def _colours(rng: np.random.Generator, n: int, palette_frac: float) -> list[tuple[int, int, int]]:
    """`n` clutter colours: a `palette_frac` share from the target palette, the rest uniform RGB."""
    palette = np.array(list(COLOURS.values()))
    use_palette = rng.random(n) < palette_frac
    cols = np.where(
        use_palette[:, None], palette[rng.integers(len(palette), size=n)], rng.integers(0, 256, (n, 3))
    )
    return [tuple(c) for c in cols.tolist()]


def _draw_clutter(d: ImageDraw.ImageDraw, rng: np.random.Generator, cfg: SynthConfig) -> int:
    """Thin random poly-line strokes (2-4 points, steps of up to 30 px) plus speckles; returns the stroke count.

    Random numbers are drawn in bulk (a Python call per number made this the cost of a training step).
    """
    size = cfg.image_size
    n = int(rng.poisson(cfg.clutter)) if cfg.clutter > 0 else 0
    n_points = rng.integers(2, 5, size=n)
    starts = rng.uniform(0, size, (n, 1, 2))
    steps = rng.uniform(-30, 30, (n, 3, 2))
    paths = np.concatenate([starts, starts + np.cumsum(steps, axis=1)], axis=1).tolist()
    widths = rng.integers(1, 3, size=n).tolist()
    for path, k, w, col in zip(paths, n_points.tolist(), widths, _colours(rng, n, cfg.palette_clutter)):
        d.line([tuple(p) for p in path[:k]], fill=col, width=w)
    m = int(round(cfg.speckle_ratio * n))
    centres = rng.uniform(0, size, (m, 2)).tolist()
    radii = rng.uniform(0.5, 2.5, m).tolist()
    for (x, y), r, col in zip(centres, radii, _colours(rng, m, cfg.palette_clutter)):
        d.ellipse([x - r, y - r, x + r, y + r], fill=col)
    return n


# ----------------------------------------------------------------------------- one scene
def _options(rng: np.random.Generator, category: str, value: str, cfg: SynthConfig) -> list[str]:
    """`cfg.n_options` option texts including `value`: in the category's fixed order, or shuffled."""
    values = VALUES[category]
    others = [v for v in values if v != value]
    picks = sorted(int(i) for i in rng.choice(len(others), cfg.n_options - 1, replace=False))
    chosen = {value, *(others[i] for i in picks)}
    options = [v for v in values if v in chosen]
    if cfg.shuffle_options:
        options = [options[int(i)] for i in rng.permutation(len(options))]
    return options


def sample(rng: np.random.Generator, cfg: SynthConfig) -> tuple[Image.Image, dict[str, Any]]:
    """One scene and its row (every items.jsonl field except `id` and `image`), from `rng`."""
    size = cfg.image_size
    category = cfg.categories[int(rng.integers(len(cfg.categories)))]
    s = int(rng.integers(cfg.target_size[0], cfg.target_size[1] + 1))  # type: ignore[index]
    value = VALUES[category][int(rng.integers(len(VALUES[category])))]
    colour = value if category == "colour" else list(COLOURS)[int(rng.integers(len(COLOURS)))]
    shape = value if category == "shape" else SHAPES[int(rng.integers(len(SHAPES)))]
    target: dict[str, Any] = {
        "colour": colour,
        "shape": shape if category != "digit" else None,
        "digit": value if category == "digit" else None,
        "size": s,
    }
    margin = s / 2 + 2
    target["cx"], target["cy"] = (float(v) for v in rng.uniform(margin, size - margin, 2))
    bg = tuple(int(v) for v in rng.integers(225, 250, 3))
    im = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(im)
    n_strokes = _draw_clutter(d, rng, cfg)
    if n_strokes and cfg.halo > 0:
        r = cfg.halo * s
        d.ellipse([target["cx"] - r, target["cy"] - r, target["cx"] + r, target["cy"] + r], fill=bg)
    mask = Image.new("L", (size, size), 0)
    _draw_target([d, ImageDraw.Draw(mask)], [COLOURS[colour], 255], target)
    box = mask.getbbox()
    if box is None:  # cannot happen for sizes >= 4, but never write an item without its region
        raise RuntimeError(f"target {target} left no pixels")

    options = _options(rng, category, value, cfg)
    letter = LETTERS[options.index(value)]
    row = {
        "question": QUESTIONS[category],
        "options": options,
        "answer": letter,
        "boxes": [[float(v) for v in box]],
        "category": category,
        "meta": {
            "value": value,
            **{k: target[k] for k in ("colour", "shape", "digit", "size")},
            "center": [round(target["cx"], 2), round(target["cy"], 2)],
            "strokes": n_strokes,
            "response": answer_text(category, value, letter),
        },
    }
    return im, row


def item_rng(seed: int, index: int) -> np.random.Generator:
    """The generator for item `index` of a dataset with `seed` (item i does not depend on n)."""
    return np.random.default_rng([seed, index])


# ----------------------------------------------------------------------------- datasets on disk
def _publish(tmp: Path, out_dir: Path, replace: bool) -> None:
    """Move the finished `tmp` folder to `out_dir`.

    With `replace`, an earlier dataset (or an empty folder) there is replaced; without it, an existing
    dataset there is kept (another process finished first) and `tmp` is discarded.
    """
    if replace and out_dir.exists():
        if out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
        elif (out_dir / "items.jsonl").is_file():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            out_dir.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        else:
            raise FileExistsError(f"{out_dir} exists and is not a vopd-bench dataset; choose another folder")
    try:
        tmp.rename(out_dir)
    except OSError:
        if replace or not (out_dir / "items.jsonl").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def generate(out_dir: str | Path, cfg: SynthConfig, n: int, seed: int, replace: bool = True) -> Path:
    """Write `n` items to `out_dir` (images/*.png, items.jsonl, meta.json) atomically; returns `out_dir`.

    Everything is written to a temporary folder beside `out_dir` and renamed at the end, so an
    interrupted run never leaves a half-written dataset. An earlier dataset in `out_dir` is replaced
    (unless `replace` is False: then it is kept); any other non-empty folder is refused.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    out_dir = Path(out_dir).expanduser().resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        (tmp / "images").mkdir()
        counts: dict[str, int] = {}
        with (tmp / "items.jsonl").open("w", encoding="utf-8") as f:
            for i in range(n):
                im, row = sample(item_rng(seed, i), cfg)
                name = f"images/{i:06d}.png"
                im.save(tmp / name)
                rec = {"id": f"{cfg.kind}-{seed}-{i:06d}", "image": name, **row}
                f.write(json.dumps(rec) + "\n")
                counts[row["category"]] = counts.get(row["category"], 0) + 1
        meta = {
            "generator": "vopd_bench.synth",
            "version": GENERATOR_VERSION,
            "config": cfg.to_dict(),
            "seed": seed,
            "n": n,
            "categories": counts,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        _publish(tmp, out_dir, replace)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote %d synthetic %s items to %s", n, cfg.kind, out_dir)
    return out_dir


# The task that asks each kind of scene: its spec's `options` are the one source of the generator's defaults.
TASK_OF_KIND = {"clutter": "synth", "holdout": "synth_holdout", "plain": "synth"}
_KIND_FIELDS = ("kind", "target_size", "clutter")  # the scene settings that differ by kind


def task_options(kind: str = "clutter") -> dict[str, Any]:
    """Generator settings (SynthConfig fields plus `n` and `seed`) of the task that asks `kind` scenes.

    These are the defaults of `vopd-bench synth --kind KIND`, so that its output is what the task evaluates
    (`synth` asks colour only: the reference model was never taught shape or digit). `plain` scenes have no
    task of their own: they take `synth`'s categories and options, with the plain kind's size and clutter.
    """
    from vopd_bench.tasks import get_task

    if kind not in TASK_OF_KIND:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    opts = dict(get_task(TASK_OF_KIND[kind]).options)
    if opts.get("kind", "clutter") != kind:  # another kind's scene settings do not apply
        opts = {k: v for k, v in opts.items() if k not in _KIND_FIELDS}
    return {**opts, "kind": kind}


def cache_dir() -> Path:
    """`$VOPD_BENCH_CACHE` or ~/.cache/vopd-bench."""
    return Path(os.environ.get("VOPD_BENCH_CACHE") or Path.home() / ".cache" / "vopd-bench").expanduser()


def dataset_key(cfg: SynthConfig, n: int, seed: int) -> str:
    """A short hash of everything that determines a dataset's content."""
    raw = json.dumps(
        {"config": cfg.to_dict(), "n": n, "seed": seed, "version": GENERATOR_VERSION}, sort_keys=True
    )
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def ensure_dataset(kind: str = "clutter", n: int = 500, seed: int = 1234, **overrides: Any) -> Path:
    """The cached dataset for (config, n, seed), generated on first use; returns its folder."""
    cfg = SynthConfig(kind=kind, **overrides)
    path = cache_dir() / "synth" / dataset_key(cfg, n, seed)
    if (path / "items.jsonl").is_file():
        return path
    log.info("generating synthetic dataset (%s, n=%d, seed=%d) in %s", kind, n, seed, path)
    return generate(path, cfg, n, seed, replace=False)
