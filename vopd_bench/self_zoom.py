"""The `self_zoom` view: "look, then zoom" with one model, in two stages, as an inference-time baseline.

Stage 1 (locate): the full image and the family's grounding request (`grounding.grounding_prompt` of the item's
question; greedy, `locate_max_new_tokens`); the answer is parsed into a box (`grounding.parse_box`) in the
coordinates the format means — for Qwen2.5-VL the image as its processor resized it (`seen_size`) — and mapped
back to the original image. Stage 2 (answer): the task's question on the `crop` view drawn around that box
(`views.zoom_to`: the task's crop protocol); an unusable box falls back to the full image and is counted.

First-stage answers are kept in the run's stages/<task>/self_zoom.jsonl, so a killed run resumes without redoing
them; the second stage's record (samples/<task>/self_zoom.jsonl) carries both stages in `extra["self_zoom"]`:
the predicted box, its IoU with the gold box (where the item has one), the first answer, its tokens and seconds.
The record's `latency` is both stages' seconds (the item's cost); `n_tokens` the second stage's.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from vopd_bench import grounding
from vopd_bench.backends import GenerationKwargs, Request
from vopd_bench.items import Item
from vopd_bench.protocol import Rendered, make_record, render
from vopd_bench.schema import SampleRecord
from vopd_bench.views import box_fraction, union_box, zoom_to

if TYPE_CHECKING:
    from vopd_bench.evaluate import Evaluator

log = logging.getLogger(__name__)
VIEW = "self_zoom"
LOCATE_MAX_NEW_TOKENS = 64


@dataclass(frozen=True)
class ZoomSettings:
    """What the first stage depends on (recorded in config.json and in the run's identity)."""

    format: str  # box format: json, qwen2.5-vl or qwen-1000 (`grounding.FORMATS`)
    max_new_tokens: int = LOCATE_MAX_NEW_TOKENS
    chosen_by: str = "auto"  # "auto" (from the processor / model name) or "named" (--grounding-format)

    def record(self) -> dict[str, Any]:
        prompt = grounding.PROMPTS[self.format]
        return {"format": self.format, "max_new_tokens": self.max_new_tokens, "chosen_by": self.chosen_by,
                "prompt": prompt, "prompt_hash": hashlib.sha256(prompt.encode()).hexdigest()[:12]}


def settings(backend: Any, model: str | None, fmt: str = "auto", max_new_tokens: int = LOCATE_MAX_NEW_TOKENS) -> ZoomSettings:
    """The first stage's settings for this backend: the named format, or the model family's own."""
    if fmt != "auto":
        return ZoomSettings(fmt, max_new_tokens, "named")
    return ZoomSettings(grounding.format_for(getattr(backend, "processor", None), model), max_new_tokens)


def seen_size(backend: Any, image: Any, fmt: str) -> tuple[int, int]:
    """The size of the image as the model saw it, where the format's coordinates refer to it (Qwen2.5-VL's
    absolute pixels of the resized image): from the backend's processor (its image budget applied), or for a
    server without one Qwen2.5-VL's default resize. Other formats are relative or the original's pixels."""
    if fmt != "qwen2.5-vl":
        return image.size
    ip = getattr(getattr(backend, "processor", None), "image_processor", None)
    if ip is not None:
        try:
            grid = ip(images=[image.convert("RGB")], return_tensors="pt")["image_grid_thw"][0]
            patch = int(getattr(ip, "patch_size", 14))
            return int(grid[2]) * patch, int(grid[1]) * patch
        except (KeyError, TypeError, ValueError, AttributeError):
            pass
    return grounding.qwen_resize(*image.size)


def locate_row(item: Item, resp: Any, image: Any, seen: tuple[int, int], fmt: str) -> dict[str, Any]:
    """One first-stage answer as stored: the response, the box in original-image pixels (None: unusable)."""
    row: dict[str, Any] = {"id": item.id, "response": resp.text, "format": fmt, "seen_size": list(seen),
                           "image_size": list(image.size),
                           "n_tokens": resp.n_tokens, "latency": round(resp.latency, 5),
                           "visual_tokens": resp.visual_tokens, "error": resp.error, "retryable": resp.retryable}
    if resp.error is None:
        box = grounding.parse_box(resp.text, seen[0], seen[1], fmt)
        if box is not None and tuple(seen) != tuple(image.size):  # back to the original image's pixels
            sx, sy = image.width / seen[0], image.height / seen[1]
            box = [round(box[0] * sx), round(box[1] * sy), round(box[2] * sx), round(box[3] * sy)]
            box = [max(0, box[0]), max(0, box[1]), min(image.width, box[2]), min(image.height, box[3])]
            box = box if box[2] > box[0] and box[3] > box[1] else None
        row["box"] = box
    return row


def run(ev: Evaluator, name: str) -> None:
    """Both stages for this rank's pending items of task `name` (the `self_zoom` view)."""
    spec, cfg = ev.specs[name], ev.cfg
    zs: ZoomSettings = ev.zoom
    shard = ev.rank if ev.world > 1 else None
    done = ev.run.samples(name, VIEW, repair=True)
    pending = [it for it in ev.items[name][ev.rank :: ev.world]
               if it.id not in done or (done[it.id].error and done[it.id].retryable)]
    if not pending:
        return
    located = ev.run.stage_records(name, VIEW, repair=True)
    todo = [it for it in pending if it.id not in located or (located[it.id].get("error") and located[it.id].get("retryable"))]
    bs = cfg.backend.batch_size
    loc_gen = GenerationKwargs(max_new_tokens=zs.max_new_tokens, seed=cfg.seed)
    images = ev.images
    bar = tqdm(total=len(todo) + len(pending), desc=f"{name}/{VIEW}", disable=not cfg.progress or ev.rank != 0, leave=False)
    with bar:
        for start in range(0, len(todo), bs):  # stage 1: where is the evidence?
            batch = todo[start : start + bs]
            rows, reqs, ok = [], [], []
            for it in batch:
                rend = render(spec, images.through(it) if images is not None else it, "full", seed=cfg.seed)
                if rend.error:
                    rows.append({"id": it.id, "response": None, "error": rend.error, "retryable": False})
                    continue
                ok.append((it, rend.image))
                reqs.append(Request(it.id, [rend.image], grounding.grounding_prompt(it.question or "", zs.format)))
            resps = ev.backend.generate(reqs, loc_gen) if reqs else []
            rows += [locate_row(it, r, im, seen_size(ev.backend, im, zs.format), zs.format)
                     for (it, im), r in zip(ok, resps)]
            ev.run.append_stage(name, VIEW, rows, shard)
            located.update({r["id"]: r for r in rows})
            bar.update(len(batch))
        gen = ev.gen_kwargs(spec)
        for start in range(0, len(pending), bs):  # stage 2: the question on the crop there
            batch = pending[start : start + bs]
            recs: list[SampleRecord] = []
            asked: list[tuple[Item, Rendered, dict[str, Any]]] = []
            for it in batch:
                loc = located[it.id]
                src = images.through(it) if images is not None else it
                if loc.get("error"):  # the first stage failed: so does the item (retried on resume if it may be)
                    rec = make_record(spec, it, VIEW, Rendered(None, None), None, error=loc["error"],
                                      retryable=bool(loc.get("retryable")), protocol=ev.protocol)
                    rec.extra = {VIEW: stage_facts(loc, it, None)}
                    recs.append(rec)
                    continue
                rend = draw(spec, src, loc.get("box"), cfg.seed)
                if rend.error:
                    recs.append(make_record(spec, it, VIEW, rend, None, protocol=ev.protocol))
                    continue
                asked.append((it, rend, loc))
            reqs = [Request(it.id, [rend.image], spec.prompt.render(it), spec.prompt.system) for it, rend, _ in asked]
            resps = ev.backend.generate(reqs, gen) if reqs else []
            for (it, rend, loc), resp in zip(asked, resps):
                rec = make_record(spec, it, VIEW, rend, resp.text, resp.error, resp.retryable,
                                  resp.latency + float(loc.get("latency") or 0.0), resp.n_tokens, resp.visual_tokens,
                                  protocol=ev.protocol, judge=ev.judge, finish_reason=getattr(resp, "finish_reason", None),
                                  max_new_tokens=gen.max_new_tokens)
                rec.extra = {**rec.extra, VIEW: stage_facts(loc, it, rend)}
                recs.append(rec)
            ev.run.append_samples(name, VIEW, recs, shard)
            bar.update(len(batch))


def draw(spec: Any, item: Item, box: list[int] | None, seed: int) -> Rendered:
    """The second stage's image: the task's crop around `box`, or the full image when there is no box."""
    full = render(spec, item, "full", seed=seed)
    if full.error or box is None:
        return full
    image, region = zoom_to(full.image, box, spec.crop)
    return Rendered(image, region, box_frac=full.box_frac)


def stage_facts(loc: dict[str, Any], item: Item, rend: Rendered | None) -> dict[str, Any]:
    """What the record keeps of the first stage: box, IoU with the gold box, fallback, its answer and cost."""
    box = loc.get("box")
    gold = None
    if box is not None and item.boxes:
        gold = round(grounding.iou(box, union_box(item.boxes)), 4)
    return {"box": box, "iou": gold, "fallback": box is None and not loc.get("error"),
            "response": loc.get("response"), "n_tokens": loc.get("n_tokens"), "latency": loc.get("latency"),
            "format": loc.get("format"), "pred_frac": None if box is None or not loc.get("image_size")
            else round(box_fraction([box], *loc["image_size"]), 6)}
