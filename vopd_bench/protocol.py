"""The per-item protocol shared by every runner (our eval, the lmms-eval bridge, the trainer's
re-scoring): task settings, rendering a view exactly once, and the per-sample record."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from PIL import Image

from vopd_bench import presets
from vopd_bench.backends.base import GenerationKwargs
from vopd_bench.errors import UserError
from vopd_bench.grading import ItemFacts
from vopd_bench.items import ImageError, Item, clean_boxes
from vopd_bench.presets import JudgeFn, Protocol
from vopd_bench.schema import SampleRecord
from vopd_bench.scoring import is_truncated
from vopd_bench.tasks import TaskSpec, get_task
from vopd_bench.views import box_fraction, render_view


def load_spec(task: str, crop: dict[str, Any] | None = None, protocol: Protocol | str | None = None,
              system_prompt: str | None = None) -> TaskSpec:
    """The task spec with crop overrides applied (`--crop-margin`, `--crop-upscale`), asked as `protocol`
    asks it (prompt, system prompt, decoding; None: the task's own) and with `--system-prompt`."""
    spec = get_task(task)
    if crop:
        try:
            spec.crop = replace(spec.crop, **crop)
        except (TypeError, ValueError) as e:
            raise UserError(f"crop parameters: {e}") from None
    if protocol is not None or system_prompt is not None:
        proto = protocol if isinstance(protocol, Protocol) else presets.load(protocol)
        spec = proto.apply(spec, system_prompt)
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
        "prompt": {k: v for k, v in asdict(spec.prompt).items() if not (k == "option_separator" and v == "\n")},
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
    box_frac: float | None = None  # the target's share of the image (union box area / image area)


def render(spec: TaskSpec, item: Item, view: str, seed: int = 0) -> Rendered:
    """Render `view` (boxes cleaned against the decoded image first: clipped, or dropped with a warning).

    Raises views.NoBoxError for a region view of an item without a usable region."""
    try:
        it, frac = item, None
        if item.boxes and view != "full":
            full = item.load_image()
            boxes = clean_boxes(item.boxes, full.width, full.height, f"{spec.name} item {item.id}")
            it = replace(item, boxes=boxes, image=full)
            frac = box_fraction(boxes, full.width, full.height)
        img, region = render_view(it, view, spec.crop, seed=seed)
        if item.boxes and view == "full":
            frac = box_fraction(item.boxes, img.width, img.height)
    except ImageError as e:
        return Rendered(None, None, str(e))
    return Rendered(img, region, box_frac=None if frac is None else round(frac, 6))


FACETS = {"cycle": "cycle", "l2_category": "l2_category", "type": "type"}  # Item.meta key -> facet


def item_facts(spec: TaskSpec, item: Item, prompt: str | None = None) -> ItemFacts:
    """What the graders read of an item."""
    return ItemFacts(
        id=item.id, answer=item.answer, options=tuple(item.options) if item.options else None,
        question=item.question, prompt=prompt if prompt is not None else spec.prompt.render(item),
        category=item.category, group=item.group, meta=dict(item.meta or {}), scorer=spec.scorer,
    )


def facets(spec: TaskSpec, item: Item) -> dict[str, Any]:
    """The fields protocol aggregations group by (HR-Bench cycle, MMStar l2 category, CV-Bench 2D/3D,
    MMVP pair), from the item ({} for a task without any; None on a record means not recorded)."""
    out = {f: item.meta[k] for k, f in FACETS.items() if (item.meta or {}).get(k) is not None}
    if spec.loader == "mmvp" and item.group:
        out["pair"] = item.group
    return out


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
    protocol: Protocol | None = None,
    judge: JudgeFn | None = None,
    finish_reason: str | None = None,
    max_new_tokens: int | None = None,
) -> SampleRecord:
    """A per-sample record: the response scored under `protocol` (None: vopd-bench) with every other
    protocol's verdict kept beside it, or the error that prevented it (a rendering error is never
    retryable: the same image fails again). With a `judge`, verdicts the protocol leaves to a judge are
    asked (`apply_judge`). `max_new_tokens`: the budget the response had (default: the spec's), to tell a
    response cut off inside its reasoning (`truncated`; the backend's `finish_reason` decides where known)."""
    proto = protocol or presets.load(presets.DEFAULT)
    rec = SampleRecord(
        id=item.id, task=spec.name, view=view, answer=item.answer, response=response,
        n_options=len(item.options) if item.options else None,  # chance level of a multiple-choice item
        category=item.category, group=item.group, prompt_hash=spec.prompt.hash(), crop_box=rendered.region, box_frac=rendered.box_frac,
        n_tokens=n_tokens, visual_tokens=visual_tokens,
        protocol=proto.name, facets=facets(spec, item),
    )
    error = rendered.error or error
    if error is not None:
        rec.error, rec.retryable, rec.latency = error, retryable and rendered.error is None, latency or 0.0
        return rec
    text = response or ""
    facts = item_facts(spec, item)
    verdicts = presets.grade_all(spec.name, text, facts, proto)
    own = verdicts[proto.name]
    rec.parsed, rec.correct = own.parsed, bool(own.correct)
    rec.verdicts = {n: v.correct for n, v in verdicts.items()}
    parsed_by = {n: v.facets.get("prediction", v.parsed) for n, v in verdicts.items()
                 if v.facets.get("prediction", v.parsed) != rec.parsed}
    rec.parsed_by = parsed_by or None
    requests = {n: v.judge_prompt for n, v in verdicts.items() if v.correct is None and v.judge_prompt}
    if presets.needs_judge(proto, own) and proto.name not in requests:
        from vopd_bench.grading.vision_opd import PROMPT_TEMPLATE

        requests[proto.name] = PROMPT_TEMPLATE.format(question=facts.prompt, gt=item.answer, response=text)
    rec.judge_requests = requests or None
    budget = max_new_tokens if max_new_tokens is not None else spec.generation.get("max_new_tokens")
    rec.truncated = is_truncated(text, n_tokens, budget, finish_reason)
    rec.latency = None if latency is None else round(latency, 5)
    if judge is not None:
        apply_judge(rec, spec, item, proto, judge)
    return rec


def apply_judge(rec: SampleRecord, spec: TaskSpec, item: Item, protocol: Protocol, judge: JudgeFn) -> SampleRecord:
    """The judge hook: ask `judge(prompt) -> reply` the prompt `protocol` left pending on this record
    (`rec.judge_requests[protocol.name]`, present where its policy calls a judge) and set the verdict by
    the protocol's decision rule; the reply is kept in `rec.extra["judge"]`. A judge that raises leaves a
    retryable error on the record (asked again on resume), never a wrong answer."""
    prompt = (rec.judge_requests or {}).get(protocol.name)
    if prompt is None or rec.error:
        return rec
    try:
        reply = judge(prompt)
    except Exception as e:  # noqa: BLE001 - any judge failure is recorded on the record, the run goes on
        rec.error, rec.retryable = f"judge: {type(e).__name__}: {e}", True
        return rec
    parsed, correct = presets.judge_decision(protocol, spec.name, str(reply), item_facts(spec, item))
    rec.extra = {**rec.extra, "judge": {"protocol": protocol.name, "prompt": prompt, "reply": reply}}
    rec.correct = bool(correct)
    rec.verdicts = {**(rec.verdicts or {}), protocol.name: bool(correct)}
    if rec.parsed is None:
        rec.parsed = parsed
    return rec
