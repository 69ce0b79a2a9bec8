"""The reference model's examples: scenes, prompts and views of a synthetic task, as the eval renders them."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image

from vopd_bench import grounding, synth
from vopd_bench.items import Item
from vopd_bench.reference.build import chat_corpus
from vopd_bench.tasks import TaskSpec
from vopd_bench.views import render_view, union_box

TASK = "synth"
HOLDOUT_TASK = "synth_holdout"
# The reference model is a Qwen2.5-VL: it answers the grounding prompt with absolute pixel boxes of the
# image as its processor saw it (224 px scenes are multiples of 28, so the processor does not resize them).
BOX_FORMAT = grounding.format_for(model="vopd-tiny")
GROUND_CATEGORY = "ground"


@dataclass
class Example:
    """One training or evaluation example: the image the model sees, the prompt, the target text."""

    image: Image.Image
    prompt: str
    response: str
    answer: str
    category: str
    box: list[float] | None = None  # grounding examples: the gold box, in pixels of `image`


class TaskData:
    """Scenes, prompts and views of a synthetic task spec, as the eval would render them."""

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec
        opts = {k: v for k, v in spec.options.items() if k not in ("n", "seed")}
        self.cfg = synth.SynthConfig(**opts)

    def item(self, rng: np.random.Generator, item_id: str = "train", **overrides: Any) -> Item:
        """A fresh in-memory Item (image as PIL) from the task's config with `overrides`."""
        cfg = replace(self.cfg, **overrides) if overrides else self.cfg
        im, row = synth.sample(rng, cfg)
        return item_from_row(row, im, item_id, self.spec.name)

    def items(self, n: int, seed: int, **overrides: Any) -> list[Item]:
        """The first `n` items of the dataset (config + overrides, seed), identical to `synth.generate`'s."""
        cfg = replace(self.cfg, **overrides) if overrides else self.cfg
        out = []
        for i in range(n):
            im, row = synth.sample(synth.item_rng(seed, i), cfg)
            out.append(item_from_row(row, im, f"{cfg.kind}-{seed}-{i:06d}", self.spec.name))
        return out

    def example(self, item: Item, view: str) -> Example:
        """The model input for `item` in `view` (rendered with the task's crop parameters)."""
        image, _ = render_view(item, view, self.spec.crop)
        return Example(
            image=image,
            prompt=self.spec.prompt.render(item),
            response=item.meta["response"],
            answer=item.answer,
            category=item.category or "",
        )

    def ground_example(self, item: Item) -> Example:
        """The grounding request for `item` (the full image, `grounding.grounding_prompt` of its question),
        answered with the union of its boxes as `grounding.box_text` writes it, e.g. `{"bbox_2d": [...]}`."""
        image = item.load_image()
        box = union_box(item.boxes)
        w, h = image.size
        return Example(
            image=image,
            prompt=grounding.grounding_prompt(item.question, BOX_FORMAT),
            response=grounding.box_text(box, w, h, BOX_FORMAT),
            answer=item.answer,
            category=GROUND_CATEGORY,
            box=[float(v) for v in box],
        )


def item_from_row(row: dict[str, Any], image: Image.Image | None, item_id: str, task: str) -> Item:
    """An `Item` from one row of `synth.sample` and its image."""
    return Item(
        id=item_id,
        task=task,
        image=image,
        question=row["question"],
        answer=row["answer"],
        options=row["options"],
        boxes=row["boxes"],
        category=row["category"],
        meta=row["meta"],
    )


def tokenizer_corpus(data: TaskData, n: int = 600, seed: int = 123) -> list[str]:
    """Prompts and answers of the task (all categories and options), for training the BPE."""
    rng = np.random.default_rng(seed)
    prompts, answers = [], []
    for _ in range(n):
        _, row = synth.sample(rng, replace(data.cfg, clutter=0.0))
        item = item_from_row(row, None, "corpus", data.spec.name)
        prompts.append(data.spec.prompt.render(item))
        answers.append(row["meta"]["response"])
    return chat_corpus(prompts, answers)
