"""Train/eval overlap: training images that are perceptual-hash near-duplicates of an evaluation image
(`imagehash`; the paper's and ZwZ's training images come from SA-1B, as do TreeBench's). Both sides are
image sources: a folder of images, a JSONL (the trainer's prompt file, or Vision-OPD-6K's train.jsonl),
or a task (`NAME` or `NAME=DATA`, read by its loader). `drop` writes the training rows that are not
near-duplicates, each marked as checked (`meta.provenance.overlap`), which the trainer records."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vopd_bench.errors import UserError
from vopd_bench.items import ImageError, _decode
from vopd_bench.runtime import atomic_write_jsonl, iter_jsonl
from vopd_bench.trainsets.provenance import KEY
from vopd_bench.trainsets.sources import list_images

log = logging.getLogger(__name__)
HASHES = ("phash", "dhash", "average_hash", "whash")
PATH_KEYS = ("image",)  # row fields holding one image path (relative to the file)
PATH_LIST_KEYS = ("images", "teacher_images")  # row fields holding lists of image paths (Vision-OPD-6K)


@dataclass
class Source:
    """One side of the check: `entries` are (id, image source) pairs; `rows`/`path` are set for a JSONL."""

    name: str
    entries: list[tuple[str, Any]]
    rows: list[dict[str, Any]] | None = None
    path: Path | None = None


@dataclass
class Match:
    train_id: str
    train_image: str
    eval_source: str
    eval_id: str
    distance: int


@dataclass
class OverlapResult:
    """Near-duplicate pairs (the nearest eval image of each flagged training image) and what was hashed."""

    method: str
    threshold: int
    n_train: int
    n_eval: int
    matches: list[Match] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    unreadable_train: set[str] = field(default_factory=set)
    nearest: dict[str, int] = field(default_factory=dict)  # train id -> distance to its nearest eval image

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "threshold": self.threshold, "n_train": self.n_train, "n_eval": self.n_eval,
                "n_matches": len(self.matches), "matches": [m.__dict__ for m in self.matches],
                "unreadable": self.unreadable}


def open_source(arg: str) -> Source:
    """An image folder, a JSONL file (rows with `image` or `images`), a folder with Vision-OPD-6K's
    train.jsonl, or a task: `NAME` / `NAME=DATA` (a shipped task name or a task YAML)."""
    p = Path(arg)
    if p.is_file() and p.suffix == ".jsonl":
        return _jsonl_source(p)
    if p.is_dir():
        if (p / "train.jsonl").is_file():
            return _jsonl_source(p / "train.jsonl")
        files = list_images(p)
        if not files:
            raise UserError(f"{arg}: no images in this folder")
        return Source(str(p), [(f, p / f) for f in files])
    name, _, data = arg.partition("=")
    from vopd_bench.tasks import get_task

    spec = get_task(name)  # an unknown name is a UserError listing the tasks
    items = spec.load_items(data or None)
    return Source(spec.name, [(it.id, it.image) for it in items])


def _jsonl_source(path: Path) -> Source:
    rows, entries = [], []
    for ln, row in iter_jsonl(path):
        if not isinstance(row, dict):
            raise UserError(f"{path}:{ln}: each line must be a JSON object")
        img = row.get("image")
        if img is None and isinstance(row.get("images"), list) and row["images"]:
            img = row["images"][0]
        if isinstance(img, dict):
            img = img.get("path")
        if not isinstance(img, str):
            raise UserError(f"{path}:{ln}: no image path (want 'image' or 'images': [path])")
        rows.append(row)
        entries.append((str(row.get("id", len(rows) - 1)), _resolve(path.parent, img)))
    return Source(str(path), entries, rows, path)


def _resolve(root: Path, p: str) -> Path:
    q = Path(p)
    return q if q.is_absolute() else root / q


def image_hash(src: Any, method: str = "phash", hash_size: int = 8) -> int:
    """The perceptual hash of an image source (a path, bytes, PIL image, ... as `Item.image`) as an int."""
    try:
        import imagehash
    except ImportError:
        raise UserError("the overlap check needs imagehash: pip install 'vopd-bench[prompts]'") from None
    im = _decode(src, str(src)[:200] if isinstance(src, (str, Path)) else "image")
    h = getattr(imagehash, method)(im, hash_size=hash_size)
    return int("".join("1" if b else "0" for b in h.hash.flatten()), 2)


def _hashes(src: Source, method: str, cache: dict[Any, int], unreadable: list[str]) -> tuple[np.ndarray, list[int]]:
    """Hashes of a source's readable entries (as uint64) and their indices into `src.entries`."""
    vals, idx = [], []
    for i, (key, image) in enumerate(src.entries):
        ck = str(image) if isinstance(image, (str, Path)) else None
        try:
            h = cache[ck] if ck in cache else image_hash(image, method)
        except ImageError as e:
            unreadable.append(f"{src.name}: {key}: {e}")
            continue
        if ck is not None:
            cache[ck] = h
        vals.append(h)
        idx.append(i)
    return np.array(vals, dtype=np.uint64), idx


def check(train: Source, evals: list[Source], threshold: int = 10, method: str = "phash") -> OverlapResult:
    """Every training image within Hamming distance `threshold` (of 64 bits) of an evaluation image."""
    if method not in HASHES:
        raise UserError(f"--hash must be one of {', '.join(HASHES)}, got {method!r}")
    if not 0 <= threshold < 64:
        raise UserError(f"--threshold must be in [0, 63] bits, got {threshold}")
    res = OverlapResult(method, threshold, len(train.entries), sum(len(e.entries) for e in evals))
    cache: dict[Any, int] = {}
    th, ti = _hashes(train, method, cache, res.unreadable)
    read = set(ti)
    res.unreadable_train = {k for i, (k, _) in enumerate(train.entries) if i not in read}
    best = np.full(len(th), 65, dtype=np.int64)
    best_at: list[tuple[str, str] | None] = [None] * len(th)
    for ev in evals:
        eh, ei = _hashes(ev, method, {}, res.unreadable)
        if not len(eh) or not len(th):
            continue
        for start in range(0, len(th), 1024):  # 1024 x n_eval distances at a time
            d = np.bitwise_count(th[start : start + 1024, None] ^ eh[None, :]).astype(np.int64)
            j = d.argmin(axis=1)
            dmin = d[np.arange(len(j)), j]
            for k, (dist, jj) in enumerate(zip(dmin, j)):
                if dist < best[start + k]:
                    best[start + k] = dist
                    best_at[start + k] = (ev.name, ev.entries[ei[jj]][0])
    for k, i in enumerate(ti):
        key, image = train.entries[i]
        res.nearest[key] = int(best[k])
        if best[k] <= threshold and best_at[k] is not None:
            res.matches.append(Match(key, str(image), best_at[k][0], best_at[k][1], int(best[k])))
    return res


def drop(train: Source, result: OverlapResult, evals: list[str], out: Path) -> int:
    """Write the training rows that are not near-duplicates to `out` (same layout, image paths rewritten
    relative to `out`'s folder), each marked `meta.provenance.overlap` = checked; returns how many were dropped."""
    if train.rows is None or train.path is None:
        raise UserError("--drop needs TRAIN to be a JSONL file (the prompt file, or Vision-OPD-6K's train.jsonl)")
    if out.resolve() == train.path.resolve():
        raise UserError(f"--drop {out}: write to another file than TRAIN")
    flagged = {m.train_id for m in result.matches}
    mark = {"checked": True, "eval": evals, "hash": result.method, "threshold": result.threshold,
            "n_dropped": len(flagged)}
    kept = []
    for (key, _), row in zip(train.entries, train.rows):
        if key in flagged:
            continue
        row = _rebase(dict(row), train.path.parent, out.parent)
        meta = dict(row.get("meta") or {})
        prov = dict(meta.get(KEY) or {})
        prov["overlap"] = {**mark, "nearest_distance": result.nearest.get(key), "unreadable": key in result.unreadable_train}
        meta[KEY] = prov
        row["meta"] = meta
        kept.append(row)
    atomic_write_jsonl(out, kept)
    return len(flagged)


def _rebase(row: dict[str, Any], src: Path, dst: Path) -> dict[str, Any]:
    def re(p: Any) -> Any:
        if not isinstance(p, str) or Path(p).is_absolute():
            return p
        return os.path.relpath((src / p).resolve(), dst.resolve())

    for k in PATH_KEYS:
        if k in row:
            row[k] = re(row[k])
    for k in PATH_LIST_KEYS:
        if isinstance(row.get(k), list):
            row[k] = [re(p) for p in row[k]]
    return row
