"""The per-item protocol shared by every runner (our eval, the lmms-eval bridge, the trainer's
re-scoring): task settings, rendering a view exactly once, and the per-sample record."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from PIL import Image

from vopd_bench.backends.base import GenerationKwargs
from vopd_bench.errors import UserError
from vopd_bench.items import ImageError, Item, clean_boxes
from vopd_bench.schema import SampleRecord
from vopd_bench.scoring import score
from vopd_bench.tasks import TaskSpec, get_task
from vopd_bench.views import render_view


def load_spec(task: str, crop: dict[str, Any] | None = None) -> TaskSpec:
    """The task spec with crop overrides applied (`--crop-margin`, `--crop-upscale`)."""
    spec = get_task(task)
    if crop:
        try:
            spec.crop = replace(spec.crop, **crop)
        except (TypeError, ValueError) as e:
            raise UserError(f"crop parameters: {e}") from None
    return spec


def has_region(item: Item, view: str) -> bool:
    """Whether `view` can be rendered for `item` (region views of boxless items are skipped)."""
    if view == "full" or item.boxes:
        return True
    return view == "crop" and item.crop_image is not None


def gen_kwargs(spec: TaskSpec, seed: int = 0, max_new_tokens: int | None = None) -> GenerationKwargs:
    """The task's decoding settings (greedy unless the spec says otherwise)."""
    g = dict(spec.generation)
    if max_new_tokens:
        g["max_new_tokens"] = max_new_tokens
    g.setdefault("seed", seed)
    try:
        return GenerationKwargs(**g)
    except (TypeError, ValueError) as e:
        raise UserError(f"task {spec.name}: generation settings: {e}") from None


def task_record(spec: TaskSpec, data: str | None, gen: GenerationKwargs, boxes_file: str | None = None) -> dict[str, Any]:
    """What config.json records for a task: everything of it that can change a number."""
    return {
        "loader": spec.loader,
        "source": spec.hub_id or spec.source,
        "spec_file": str(spec.path) if spec.path else None,
        "data": data,
        "options": spec.options,
        "prompt": asdict(spec.prompt),
        "prompt_hash": spec.prompt.hash(),
        "scorer": spec.scorer,
        "crop": spec.crop.to_dict(),
        "generation": gen.to_dict(),
        "boxes_file": boxes_file,
    }


@dataclass
class Rendered:
    """One item in one view: the image sent (None on error), the region taken, the error if any."""

    image: Image.Image | None
    region: list[int] | None
    error: str | None = None


def render(spec: TaskSpec, item: Item, view: str, seed: int = 0) -> Rendered:
    """Render `view` (boxes cleaned against the decoded image first: clipped, or dropped with a warning).

    Raises views.NoBoxError for a region view of an item without a usable region."""
    try:
        it = item
        if item.boxes and view != "full":
            full = item.load_image()
            boxes = clean_boxes(item.boxes, full.width, full.height, f"{spec.name} item {item.id}")
            it = replace(item, boxes=boxes, image=full)
        img, region = render_view(it, view, spec.crop, seed=seed)
    except ImageError as e:
        return Rendered(None, None, str(e))
    return Rendered(img, region)


def make_record(
    spec: TaskSpec,
    item: Item,
    view: str,
    rendered: Rendered,
    response: str | None,
    error: str | None = None,
    retryable: bool = False,
    latency: float | None = None,
    n_tokens: int | None = None,
    visual_tokens: int | None = None,
) -> SampleRecord:
    """A per-sample record: the response scored with the task's scorer, or the error that prevented it
    (a rendering error is never retryable: the same image fails again)."""
    rec = SampleRecord(
        id=item.id, task=spec.name, view=view, answer=item.answer, response=response,
        n_options=len(item.options) if item.options else None,  # chance level of a multiple-choice item
        category=item.category, group=item.group, prompt_hash=spec.prompt.hash(), crop_box=rendered.region,
        n_tokens=n_tokens, visual_tokens=visual_tokens,
    )
    error = rendered.error or error
    if error is not None:
        rec.error, rec.retryable, rec.latency = error, retryable and rendered.error is None, latency or 0.0
        return rec
    rec.parsed, rec.correct = score(spec.scorer, response or "", item.answer, item.options)
    rec.latency = None if latency is None else round(latency, 5)
    return rec
