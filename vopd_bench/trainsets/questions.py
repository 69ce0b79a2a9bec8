"""Questions about a region: the built-in templates (attribute, count, text, relative position) or the
user's own questions (`{label}` is replaced by the region's label). A question knows its answer where
the boxes decide it (count: the boxes of that label; position: the boxes' centres), and otherwise
leaves it empty. Questions naming "the {label}" are asked only where one object has that label (a label-free method such as Vision-OPD never reads it)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from vopd_bench.errors import UserError
from vopd_bench.trainsets.regions import Box, Region

TEMPLATES = {
    "attribute": "What colour is the {label}?",
    "count": "How many {plural} are there in the image?",
    "text": "What does the text on the {label} say?",
    "position": "Is the {label} to the left or to the right of the {other}?",
}
DEFAULT_TEMPLATES = ("attribute", "count", "position")


@dataclass
class Question:
    """One question about one region: its kind (template name or "user"), text, options (multiple choice)
    or None, gold answer ("" when the boxes do not decide it; an option letter for multiple choice), the
    boxes the teacher's crop covers, and where the answer came from."""

    kind: str
    text: str
    boxes: list[Box]
    options: list[str] | None = None
    answer: str = ""
    answer_source: str = "none"
    labels: list[str] = field(default_factory=list)


def check_templates(names: list[str]) -> list[str]:
    bad = [n for n in names if n not in TEMPLATES]
    if bad:
        raise UserError(f"--templates: unknown template(s) {', '.join(bad)}; choose from {', '.join(TEMPLATES)}")
    return names


def questions_for(region: Region, kept: list[Region], all_regions: list[Region], templates: list[str],
                  user: list[str]) -> list[Question]:
    """The questions about `region` (one of the `kept` regions of an image whose source boxes, before the
    filter, are `all_regions`). Templates that need a label are skipped for a region without one; the
    position template needs another kept region with a different label whose centre is clearly apart."""
    out: list[Question] = []
    label = region.label.strip()
    for q in user:
        if "{label}" in q and not label:
            continue
        out.append(Question("user", q.replace("{label}", label), [region.box], labels=[label]))
    if not label:
        return out
    unique = sum(r.label.strip() == label for r in all_regions) == 1  # "the {label}" names one object
    for name in templates:
        if name == "count":
            n_all = sum(r.label.strip() == label for r in all_regions)
            same = [r for r in kept if r.label.strip() == label]
            if len(same) != n_all or same[0] is not region:
                continue  # asked once per label, and only when every box of it is kept (the crop shows them all)
            out.append(Question("count", TEMPLATES["count"].format(plural=_plural(label)), [r.box for r in same],
                                answer=str(n_all), answer_source=f"{region.source} count", labels=[label]))
        elif not unique:
            continue  # several objects share the label: "the {label}" would not say which
        elif name == "position":
            q = _position(region, kept, all_regions)
            if q is not None:
                out.append(q)
        else:
            out.append(Question(name, TEMPLATES[name].format(label=label), [region.box], labels=[label]))
    return out


def _position(region: Region, kept: list[Region], all_regions: list[Region]) -> Question | None:
    """Left/right of the nearest kept region with another label that is unique in the image (centres at
    least half a box width apart)."""
    label = region.label.strip()
    cx = region.center()[0]
    counts = Counter(r.label.strip() for r in all_regions)
    others = [r for r in kept if r.label.strip() and r.label.strip() != label and counts[r.label.strip()] == 1]
    if not others:
        return None
    other = min(others, key=lambda r: abs(r.center()[0] - cx))
    ox = other.center()[0]
    width = max(region.box[2] - region.box[0], other.box[2] - other.box[0])
    if abs(cx - ox) < width / 2:
        return None
    text = TEMPLATES["position"].format(label=label, other=other.label.strip())
    return Question("position", text, [region.box, other.box], options=["left", "right"],
                    answer="A" if cx < ox else "B", answer_source="box geometry", labels=[label, other.label.strip()])


def _plural(label: str) -> str:
    if label.endswith(("s", "x", "ch", "sh")):
        return label + "es"
    if label.endswith("y") and label[-2:-1] not in "aeiou":
        return label[:-1] + "ies"
    return label + "s"
