"""`vopd-bench prompts`: a folder of images -> training prompts. For each image: its regions (from the box
source), the region filter, questions per kept region, optionally the self-consistency filter; the
kept prompts are appended to `OUT.partial` image by image (one durable write each), and the file is
renamed to OUT when every image is done. Images that cannot be read, have no usable region, and
prompts the consistency filter rejects are recorded in `OUT-stem.skipped.jsonl`. Re-running the same
command resumes after the last finished image; `summary.json` beside OUT records the settings and counts."""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from vopd_bench import __version__
from vopd_bench.errors import UserError
from vopd_bench.items import Item
from vopd_bench.runtime import append_jsonl, atomic_write_json, read_json, read_jsonl
from vopd_bench.trainsets import provenance
from vopd_bench.trainsets.consistency import ConsistencyConfig, ConsistencyFilter
from vopd_bench.trainsets.questions import DEFAULT_TEMPLATES, Question, check_templates, questions_for
from vopd_bench.trainsets.regions import Region, RegionFilter
from vopd_bench.trainsets.sources import BoxSource

log = logging.getLogger(__name__)


@dataclass
class PromptsConfig:
    """One run of the pipeline (everything but `out` and `overwrite` is in the settings hash)."""

    images_dir: Path
    out: Path
    source: BoxSource
    region_filter: RegionFilter = field(default_factory=RegionFilter)
    templates: list[str] = field(default_factory=lambda: list(DEFAULT_TEMPLATES))
    questions: list[str] = field(default_factory=list)
    consistency: ConsistencyConfig | None = None
    limit: int | None = None
    overwrite: bool = False

    def __post_init__(self) -> None:
        self.images_dir, self.out = Path(self.images_dir), Path(self.out)
        check_templates(self.templates)
        if not self.images_dir.is_dir():
            raise UserError(f"IMAGES_DIR {self.images_dir}: not a folder")
        if self.out.suffix != ".jsonl":
            raise UserError(f"--out {self.out}: want a .jsonl file (the trainer's prompt format)")
        if not self.templates and not self.questions:
            raise UserError("no questions: give --templates and/or --question")

    def settings(self) -> dict[str, Any]:
        return {
            "images_dir": str(self.images_dir.resolve()),
            "box_source": self.source.describe(),
            "region_filter": self.region_filter.to_dict(),
            "templates": self.templates,
            "questions": self.questions,
            "consistency": self.consistency.to_dict() if self.consistency else None,
            "limit": self.limit,
        }


@dataclass
class Outputs:
    """The files of one run: the prompts (OUT), the partial file while running, the skips, the summary."""

    out: Path

    @property
    def partial(self) -> Path:
        return self.out.with_name(self.out.name + ".partial")

    @property
    def skipped(self) -> Path:
        return self.out.with_name(self.out.stem + ".skipped.jsonl")

    @property
    def summary(self) -> Path:
        return self.out.with_name(self.out.stem + ".summary.json")

    def remove(self) -> None:
        for p in (self.out, self.partial, self.skipped, self.summary):
            p.unlink(missing_ok=True)


def run(cfg: PromptsConfig) -> dict[str, Any]:
    """Run (or resume) the pipeline; returns the summary written beside OUT."""
    files = Outputs(cfg.out)
    settings = cfg.settings()
    h = provenance.settings_hash(settings)
    if cfg.overwrite:
        files.remove()
    elif cfg.out.exists():
        prev = read_json(files.summary, missing_ok=True) or {}
        if prev.get("settings_hash") == h:
            log.info("%s is complete (same settings); nothing to do", cfg.out)
            return prev
        raise UserError(f"--out {cfg.out} exists (made with other settings or by another tool); pass --overwrite "
                        "or another --out")
    rows_done = read_jsonl(files.partial, repair=True)
    skips_done = read_jsonl(files.skipped, repair=True)
    stale = [r.get("id") for r in rows_done if provenance.of(r.get("meta")).get("settings") != h]
    if stale:
        raise UserError(f"{files.partial} holds prompts made with other settings (e.g. {stale[0]}); pass --overwrite "
                        "to start again")
    done = {provenance.of(r.get("meta")).get("image") for r in rows_done} | {s.get("image") for s in skips_done}
    names = cfg.source.images(cfg.images_dir)
    if cfg.limit:
        names = names[: cfg.limit]
    todo = [n for n in names if n not in done]
    if done:
        log.info("resuming: %d of %d images already done", len(names) - len(todo), len(names))
    scorer = ConsistencyFilter(cfg.consistency) if cfg.consistency and todo else None
    counts: Counter[str] = Counter()
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    files.partial.touch()
    files.skipped.touch()
    for name in todo:
        rows, skips = _one_image(cfg, name, h, scorer, counts)
        append_jsonl(files.partial, rows)  # the image's prompts first: an image with rows counts as done
        append_jsonl(files.skipped, skips)
    os.replace(files.partial, cfg.out)
    all_rows = read_jsonl(cfg.out)
    all_skips = read_jsonl(files.skipped)
    summary = {
        "vopd_bench": __version__,
        "settings_hash": h,
        "settings": settings,
        "n_images": len(names),
        "n_prompts": len(all_rows),
        "prompts_by_kind": dict(Counter(r.get("category") for r in all_rows)),
        "skipped": dict(Counter(s.get("reason_kind", s.get("reason")) for s in all_skips)),
        "regions_dropped": dict(counts),
        "out": str(cfg.out),
        "skipped_file": str(files.skipped),
    }
    atomic_write_json(files.summary, summary)
    if not all_rows:
        log.warning("no prompts were made: see %s", files.skipped)
    return summary


def _one_image(cfg: PromptsConfig, name: str, h: str, scorer: ConsistencyFilter | None,
               counts: Counter[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(prompt rows, skip records) of one image; a bad image or a failing detector is a skip, never a crash."""
    path = cfg.images_dir / name
    if not path.is_file():
        return [], [_skip(name, "image", "file not found", str(path))]
    try:
        with Image.open(path) as im:
            im.load()
            image = im.convert("RGB")
    except Exception as e:  # PIL raises many types for corrupt files
        return [], [_skip(name, "image", "cannot decode", f"{type(e).__name__}: {e}")]
    try:
        regions = cfg.source.regions(name, image)
    except UserError:
        raise
    except Exception as e:  # a detector failing on one image must not lose the others
        log.warning("%s: box source failed (%s: %s)", name, type(e).__name__, e)
        return [], [_skip(name, "image", "box source failed", f"{type(e).__name__}: {e}")]
    kept, dropped = cfg.region_filter.apply(regions, image.width, image.height)
    counts.update(dropped)
    questions = [(r, q) for r in kept for q in questions_for(r, kept, regions, cfg.templates, cfg.questions)]
    if not questions:
        why = "no region passed the filter" if not kept else "no question fits the kept regions (no labels?)"
        return [], [_skip(name, "image", why, dict(dropped), n_regions=len(regions))]
    rows = [_row(cfg, name, image, j, r, q, h) for j, (r, q) in enumerate(questions)]
    if scorer is None:
        return rows, []
    items = [Item(id=row["id"], task="prompts", image=image, question=row["question"], answer=row["answer"],
                  options=row.get("options"), boxes=row["boxes"]) for row in rows]
    try:
        agreements = scorer.score(items)
    except UserError as e:  # e.g. a region the crop view cannot render: this image only
        return [], [_skip(name, "image", "consistency filter failed", str(e))]
    kept_rows, skips = [], []
    for row, agr in zip(rows, agreements):
        score = {"share": agr.share, "majority": agr.majority, "answers": agr.answers,
                 "n": scorer.cfg.n, "threshold": scorer.cfg.threshold, "model": scorer.cfg.model}
        prov = row["meta"][provenance.KEY]
        prov["filters"]["consistency"] = score
        if agr.share >= scorer.cfg.threshold:
            if not row["answer"] and agr.majority:
                row["answer"], prov["question"]["answer_source"] = agr.majority, "self-consistency majority"
            kept_rows.append(row)
        else:
            skips.append(_skip(name, "prompt", f"consistency {agr.share} < {scorer.cfg.threshold}", None,
                               id=row["id"], question=row["question"], consistency=score))
    if not kept_rows:
        skips.append(_skip(name, "image", "no prompt passed the consistency filter", None))
    return kept_rows, skips


def _row(cfg: PromptsConfig, name: str, image: Image.Image, j: int, region: Region, q: Question,
         h: str) -> dict[str, Any]:
    """One prompt in the trainer's JSONL format (image path relative to OUT's folder)."""
    row: dict[str, Any] = {
        "id": f"{name}#{j}",
        "image": os.path.relpath((cfg.images_dir / name).resolve(), cfg.out.parent.resolve()),
        "question": q.text,
        "answer": q.answer,
        "boxes": q.boxes,
        "category": q.kind,
    }
    if q.options:
        row["options"] = q.options
    row["meta"] = {provenance.KEY: {
        "source": {"name": "images", "images_dir": str(cfg.images_dir), "image": name},
        "image": name,
        "size": [image.width, image.height],
        "box_source": cfg.source.describe(),
        "region": {"box": region.box, "label": region.label, "score": region.score,
                   "area_ratio": round(region.area_ratio(image.width, image.height), 5), **region.extra},
        "question": {"kind": q.kind, "answer_source": q.answer_source, "labels": q.labels},
        "filters": {"region": cfg.region_filter.to_dict(), "consistency": None},
        "settings": h,
    }}
    return row


def _skip(name: str, kind: str, reason: str, detail: Any, **extra: Any) -> dict[str, Any]:
    return {"image": name, "kind": kind, "reason": reason, "reason_kind": reason.split(" ")[0] if kind == "prompt"
            else reason, "detail": detail, **extra}
