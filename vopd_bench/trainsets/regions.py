"""A region of an image (a pixel box with a label) and the region filter the paper's pipeline applies:
keep small regions (area ratio within a range), of a minimum side, at most N per image."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from vopd_bench.errors import UserError

Box = list[float]  # [x1, y1, x2, y2] pixels


@dataclass
class Region:
    """One object box on one image: `label` names the object ("" when the source has none), `score` is a
    detector's confidence (None for annotations), `source` says where the box came from."""

    box: Box
    label: str = ""
    score: float | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def clipped(self, width: int, height: int) -> Region | None:
        """The region clipped to the image (corners put in order), or None if nothing is left inside it."""
        x1, y1, x2, y2 = (float(v) for v in self.box)
        x1, x2 = sorted((x1, x2))
        y1, y2 = sorted((y1, y2))
        x1, x2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
        y1, y2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
        if x2 - x1 <= 0 or y2 - y1 <= 0:
            return None
        return Region([round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2)], self.label, self.score, self.source,
                      dict(self.extra))

    def area_ratio(self, width: int, height: int) -> float:
        x1, y1, x2, y2 = self.box
        return (x2 - x1) * (y2 - y1) / float(width * height)

    def min_side(self) -> float:
        x1, y1, x2, y2 = self.box
        return min(x2 - x1, y2 - y1)

    def center(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box
        return (x1 + x2) / 2, (y1 + y2) / 2


@dataclass
class RegionFilter:
    """Which regions become prompts. The paper keeps regions of area ratio below ~0.1 (small details)."""

    min_area_ratio: float = field(default=0.0, metadata={"help": "smallest box area / image area kept"})
    max_area_ratio: float = field(default=0.1, metadata={"help": "largest box area / image area kept (paper: ~0.1)"})
    min_side: float = field(default=8.0, metadata={"help": "shortest box side kept, in pixels"})
    max_regions: int = field(default=3, metadata={"help": "at most this many regions per image (highest detector "
                                                           "score first, else file order; 0 = no limit)"})
    min_score: float | None = field(default=None, metadata={"help": "detector boxes: lowest confidence kept"})

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_area_ratio <= self.max_area_ratio <= 1.0:
            raise UserError(f"region filter: want 0 <= min_area_ratio <= max_area_ratio <= 1, got "
                            f"{self.min_area_ratio} and {self.max_area_ratio}")
        if self.min_side < 0 or self.max_regions < 0:
            raise UserError("region filter: min_side and max_regions must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def apply(self, regions: list[Region], width: int, height: int) -> tuple[list[Region], dict[str, int]]:
        """(kept regions, counts of dropped ones by reason). Regions are clipped to the image first; the kept
        ones are ordered by score (highest first; annotations keep their order) and cut to `max_regions`."""
        dropped: dict[str, int] = {}

        def drop(reason: str) -> None:
            dropped[reason] = dropped.get(reason, 0) + 1

        kept: list[Region] = []
        for r in regions:
            c = r.clipped(width, height)
            if c is None:
                drop("outside the image")
            elif self.min_score is not None and (c.score is None or c.score < self.min_score):
                drop("score below min_score")
            elif c.area_ratio(width, height) > self.max_area_ratio:
                drop("area ratio above max")
            elif c.area_ratio(width, height) < self.min_area_ratio:
                drop("area ratio below min")
            elif c.min_side() < self.min_side:
                drop("side below min_side")
            else:
                kept.append(c)
        kept.sort(key=lambda r: -(r.score if r.score is not None else 0.0))  # stable: annotation order kept
        if self.max_regions and len(kept) > self.max_regions:
            dropped["over max_regions"] = len(kept) - self.max_regions
            kept = kept[: self.max_regions]
        return kept, dropped
