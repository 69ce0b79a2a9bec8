"""Training prompts: (full image, crop image, prompt text) from any task's items. Answers are read only
by the label-supervised diagnostic (`objective: supervised`), never by Vision-OPD.

Items come from a task loader (`train_task` + `train_data`) or, with `train_task: null`, from a user
JSONL (`id, image, question, boxes`, optionally `options`; `vopd-bench prompts` writes one). Every item
must have a region (boxes, or a shipped crop image): the teacher sees the crop view, which is the item's
`crop_image` as given when the loader supplies one (e.g. Vision-OPD-6K's teacher images), else the
crop of its boxes. Items without either stop the run before training. `system_prompt` replaces the
task's system prompt. `prompts_provenance` summarises the prompts' provenance (sources, consistency
filter, train/eval overlap check) for the run record.
The prompt order is a seeded permutation per epoch; step s takes the next `prompts_per_step` prompts
of that stream, rank r its slice -- stateless, so a resumed run sees exactly the prompts it would have.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from vopd_bench.backends.base import Request
from vopd_bench.errors import UserError
from vopd_bench.items import ImageError, Item
from vopd_bench.prompts import DEFAULT_OPEN_TEMPLATE
from vopd_bench.protocol import render
from vopd_bench.tasks import TaskSpec, get_task
from vopd_bench.train.config import OPDConfig
from vopd_bench.views import NoBoxError

log = logging.getLogger(__name__)


@dataclass
class Prompt:
    """One training prompt: the student's image, the teacher's image and the question text."""

    id: str
    full: Image.Image
    crop: Image.Image
    text: str
    system: str | None
    options: list[str] | None
    target: str = ""  # the gold response; used only by `objective: supervised`

    def request(self, image: Image.Image) -> Request:
        """What the eval would send for this prompt shown as `image` (the full image or the crop)."""
        return Request(key=self.id, images=[image], prompt=self.text, system=self.system)


USER_JSONL = "train_jsonl"  # the spec name of a user's prompt JSONL (train_task: null)


def train_spec_for_file(source: str) -> TaskSpec:
    """The generic spec of a user's prompt JSONL (multiple choice where a row has options, else open)."""
    return TaskSpec(name=USER_JSONL, loader="jsonl", source=source)


def train_spec(cfg: OPDConfig) -> TaskSpec:
    """The task spec of the training prompts (a generic JSONL spec for a user file), with overrides."""
    if cfg.train_task is None:
        spec = train_spec_for_file(str(cfg.train_data))
    else:
        spec = get_task(cfg.train_task)
    if cfg.system_prompt is not None:
        spec.prompt = replace(spec.prompt, system=cfg.system_prompt)
    if cfg.train_options:
        spec.options = {**spec.options, **cfg.train_options}
    if cfg.crop:
        try:
            spec.crop = replace(spec.crop, **cfg.crop)
        except (TypeError, ValueError) as e:
            raise UserError(f"config key 'crop': {e}") from None
    return spec


def load_prompts(cfg: OPDConfig) -> tuple[TaskSpec, list[Item]]:
    """The training items; raises UserError (before any model is loaded) if any lacks a region."""
    if cfg.train_task is None and cfg.train_data is None:
        raise UserError("no training prompts: set train_data=PATH (a JSONL of id, image, question, boxes) or train_task")
    spec = train_spec(cfg)
    try:
        items = spec.load_items(Path(cfg.train_data) if cfg.train_data else None)
    except (TypeError, ValueError) as e:  # e.g. a train_options key the loader does not know
        raise UserError(f"training data ({spec.name}, options {spec.options}): {e}") from None
    if cfg.train_limit:
        items = items[: cfg.train_limit]
    missing = [it.id for it in items if not it.boxes and it.crop_image is None]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise UserError(
            f"training data ({spec.name}): {len(missing)} of {len(items)} item(s) have no boxes, so the teacher "
            f"has no crop view: {shown}. Add 'boxes' ([[x1, y1, x2, y2]] pixels) to every training item."
        )
    log.info("training prompts: %d items of %s", len(items), spec.name)
    return spec, items


def render_prompt(item: Item, spec: TaskSpec) -> Prompt:
    """The full view of `item` as the eval renders it (`protocol.render`), the teacher's view (the item's own
    `crop_image` as given when it has one, else the crop view of its boxes) and its prompt text."""
    try:
        full = render(spec, item, "full")
        if full.error:
            raise UserError(f"training item {item.id}: {full.error}")
        if item.crop_image is not None:
            crop_image = item.load_crop_image()
        else:
            # the crop from the image just decoded (the full view is that image itself): one decode per prompt
            crop = render(spec, replace(item, image=full.image) if full.image is not None else item, "crop")
            if crop.error:
                raise UserError(f"training item {item.id}: {crop.error}")
            crop_image = crop.image
    except (NoBoxError, ValueError, ImageError) as e:
        raise UserError(f"training item {item.id}: {e}") from None
    return Prompt(item.id, full.image, crop_image, prompt_text(item, spec), spec.prompt.system, item.options,
                  gold_response(item))


def prompt_text(item: Item, spec: TaskSpec) -> str:
    """The item's prompt under the spec's template; a user JSONL's open question (no options) gets the open
    answer instruction instead of the multiple-choice one."""
    if spec.name == USER_JSONL and spec.loader == "jsonl" and not item.options and "{options}" in spec.prompt.template:
        return replace(spec.prompt, template=DEFAULT_OPEN_TEMPLATE).render(item)
    return spec.prompt.render(item)


def prompts_provenance(items: list[Item]) -> dict:
    """The training prompts' provenance for the run record (`trainsets.provenance.summarize`): sources, box
    sources, how many passed a consistency filter, and whether all were checked for train/eval overlap."""
    from vopd_bench.trainsets.provenance import summarize

    return summarize(it.meta for it in items)


def gold_response(item: Item) -> str:
    """The response a label-supervised run trains on: the item's own answer sentence where the loader
    gives one (`meta.response`, e.g. the synthetic task's "It is red. Answer: B"), else "Answer: <gold>"."""
    return str(item.meta.get("response") or f"Answer: {item.answer}")


def step_indices(n_items: int, step: int, per_step: int, seed: int, rank: int, world: int) -> list[int]:
    """Indices of the prompts rank `rank` trains on at `step` (a seeded permutation per epoch)."""
    per_rank = per_step // world
    start = step * per_step + rank * per_rank
    out = []
    for i in range(start, start + per_rank):
        epoch, pos = divmod(i, n_items)
        out.append(int(_epoch_order(n_items, seed, epoch)[pos]))
    return out


_ORDER_CACHE: dict[tuple[int, int, int], np.ndarray] = {}


def _epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    key = (n, seed, epoch)
    if key not in _ORDER_CACHE:
        if len(_ORDER_CACHE) > 4:
            _ORDER_CACHE.clear()
        _ORDER_CACHE[key] = np.random.default_rng([seed, epoch]).permutation(n)
    return _ORDER_CACHE[key]

