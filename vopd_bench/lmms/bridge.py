"""The runtime behind an exported lmms-eval task: lmms-eval docs (rows holding our item id) → our
items, views, prompts and scorer, and per-sample records in the same shape as `vopd-bench eval`'s.

An exported `utils.py` builds one `ExportedTask` and forwards lmms-eval's hooks (doc_to_visual,
doc_to_text, doc_to_messages, doc_to_target, process_results) to it. process_results returns the
whole vopd-bench record as the value of the metric `vopd_accuracy`, so lmms-eval's sample logs carry
it and `vopd-bench gap --from-lmms-eval` rebuilds the run directory from them alone.
"""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path
from typing import Any

from PIL import Image

from vopd_bench.errors import UserError
from vopd_bench.items import Item
from vopd_bench.protocol import Rendered, has_region, load_spec, make_record, render
from vopd_bench.tasks import TaskSpec

log = logging.getLogger(__name__)

METRIC = "vopd_accuracy"  # the lmms-eval metric whose per-sample value is our record
# How the `vopd_hf` model tells our process_results that a request failed (lmms-eval's generate_until can
# only return text): the record then carries the error, never a wrong answer, and `vopd-bench gap` exits 3.
ERROR_PREFIX = "[vopd-bench error] "


def aggregate_accuracy(values: list[Any]) -> float:
    """lmms-eval aggregation of `vopd_accuracy`: the mean correctness over records without error."""
    ok = [v for v in values if isinstance(v, dict) and not v.get("error")]
    return sum(bool(v["correct"]) for v in ok) / len(ok) if ok else float("nan")


class ExportedTask:
    """One vopd-bench task as seen from lmms-eval: docs are `{"id": item id}` rows."""

    def __init__(self, task: str, data: str | None = None, seed: int = 0, crop: dict[str, Any] | None = None) -> None:
        self.task_ref = task
        self.data = data
        self.seed = seed
        self.crop = crop or {}
        self._meta: dict[tuple[str, str], Rendered] = {}

    @cached_property
    def spec(self) -> TaskSpec:
        return load_spec(self.task_ref, self.crop)

    @cached_property
    def items(self) -> list[Item]:
        return self.spec.load_items(Path(self.data) if self.data else None)

    @cached_property
    def by_id(self) -> dict[str, Item]:
        return {it.id: it for it in self.items}

    def item(self, doc: dict[str, Any]) -> Item:
        iid = str(doc["id"])
        if iid not in self.by_id:
            raise UserError(f"task {self.spec.name}: item {iid!r} of the lmms-eval dataset is not in the data "
                            f"({self.data or 'default source'}); re-export the task")
        return self.by_id[iid]

    def render(self, doc: dict[str, Any], view: str) -> Rendered:
        """Render the doc's view; its region and error (not the pixels) are kept for process_results."""
        key = (view, str(doc["id"]))
        r = render(self.spec, self.item(doc), view, self.seed)
        if r.error and key not in self._meta:
            log.warning("%s/%s: %s", self.spec.name, view, r.error)
        self._meta[key] = Rendered(None, r.region, r.error)
        return r

    def text(self, doc: dict[str, Any]) -> str:
        return self.spec.prompt.render(self.item(doc))

    def target(self, doc: dict[str, Any]) -> str:
        return self.item(doc).answer

    def visual(self, doc: dict[str, Any], view: str) -> list[Image.Image]:
        r = self.render(doc, view)
        return [] if r.image is None else [r.image]

    def messages(self, doc: dict[str, Any], view: str) -> list[dict[str, Any]]:
        """lmms-eval chat messages: optional system turn, then the view's image and the prompt."""
        content: list[dict[str, Any]] = [{"type": "image", "url": im} for im in self.visual(doc, view)]
        content.append({"type": "text", "text": self.text(doc)})
        msgs: list[dict[str, Any]] = []
        if self.spec.prompt.system:
            msgs.append({"role": "system", "content": [{"type": "text", "text": self.spec.prompt.system}]})
        msgs.append({"role": "user", "content": content})
        return msgs

    def process_results(self, doc: dict[str, Any], results: list[Any], view: str) -> dict[str, dict[str, Any]]:
        """Score the response with our scorer; the record as a plain dict (lmms-eval logs it), plus lmms-eval's 0/1
        `score`, is the metric value."""
        rendered = self._meta.get((view, str(doc["id"]))) or self.render(doc, view)
        response = results[0] if results else ""
        text = response if isinstance(response, str) else str(response)
        error = text[len(ERROR_PREFIX):] if text.startswith(ERROR_PREFIX) else None
        rec = make_record(self.spec, self.item(doc), view, rendered, "" if error else text, error, retryable=error is not None)
        return {METRIC: {**rec.to_dict(), "score": float(bool(rec.correct))}}


def region_items(items: list[Item], view: str) -> list[Item]:
    """The items a view is asked on, in order (what an exported view's dataset holds)."""
    return [it for it in items if has_region(it, view)]

