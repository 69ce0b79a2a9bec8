"""The one path from requests to model inputs: chat template, image preprocessing, padding, and (for
training) a completion appended after the prompt. Eval (`backends/hf.py`), rollouts and teacher scoring
(`train/rollout.py`) and the reference model all encode here, so the teacher sees exactly what eval sends.

What differs between model families lives in `FAMILIES`: whether the processor wants images nested per
sample, which per-token type ids it returns, and how `pixel_values` splits into rows per image (needed to
repeat or select prompts for training). Qwen-VL (2, 2.5, 3, 3.5) is filled in; for the others encoding for
eval works, and splitting per image stops with a one-line error naming the family.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from vopd_bench.backends.base import Request
from vopd_bench.errors import UserError

Encoding = dict[str, Any]
# A fast tokenizer must not be used from two threads at once (the eval harness encodes in a prefetch
# thread). One lock for every caller: a processor may be shared (the trainer's), and a backend stays
# deep-copyable (lmms-eval copies the model object).
PROCESSOR_LOCK = threading.Lock()
# Per-token type ids (1 on image tokens): sliced with `input_ids`, zero over an appended completion.
TOKEN_TYPE_KEYS = ("mm_token_type_ids", "token_type_ids")


@dataclass(frozen=True)
class Family:
    """How one model family's processor takes images and lays out their tensors."""

    name: str
    processors: tuple[str, ...]  # processor class names (a subclass matches too)
    nested_images: bool = False  # images grouped per sample: [[im], [im]] instead of [im, im]
    # rows of `pixel_values` per image, from the encoding; None: not known yet (training stops with an error)
    image_rows: Callable[[Encoding], list[int]] | None = None
    image_keys: tuple[str, ...] = ()  # tensors with one row per image, selected with the image


def _grid_rows(enc: Encoding) -> list[int]:
    return enc["image_grid_thw"].prod(-1).tolist()


FAMILIES: tuple[Family, ...] = (
    Family("qwen_vl", ("Qwen2VLProcessor", "Qwen2_5_VLProcessor", "Qwen3VLProcessor"),
           image_rows=_grid_rows, image_keys=("image_grid_thw",)),
    Family("gemma3", ("Gemma3Processor",), nested_images=True),
    Family("smolvlm", ("SmolVLMProcessor",), nested_images=True),
    Family("idefics3", ("Idefics3Processor",)),
    Family("llava_onevision", ("LlavaOnevisionProcessor",)),  # rows by image_sizes + pinpoints
    Family("internvl", ("InternVLProcessor",)),  # rows: tiles counted from the <img> spans
    Family("pixtral", ("PixtralProcessor",)),  # rows by image_sizes
)
OTHER = Family("other", ())


def family(processor: Any) -> Family:
    """The rule set for `processor` (by its class or a base class); `OTHER` when none matches."""
    names = {c.__name__ for c in type(processor).__mro__}
    return next((f for f in FAMILIES if names.intersection(f.processors)), OTHER)


def family_of(enc: Encoding) -> Family:
    """The family whose per-image layout `enc` has (known only for the families with `image_rows`)."""
    for f in FAMILIES:
        if f.image_rows is not None and all(k in enc for k in f.image_keys):
            return f
    known = ", ".join(f.name for f in FAMILIES if f.image_rows is not None)
    raise UserError(
        f"cannot split pixel_values per image for inputs with keys {', '.join(sorted(enc))}: training supports "
        f"the {known} families so far"
    )


def build_messages(req: Request) -> list[dict[str, Any]]:
    """Chat messages in the HF multimodal format: images first, then the text."""
    content: list[dict[str, Any]] = [{"type": "image"} for _ in req.images]
    content.append({"type": "text", "text": req.prompt})
    msgs: list[dict[str, Any]] = []
    if req.system:
        msgs.append({"role": "system", "content": [{"type": "text", "text": req.system}]})
    msgs.append({"role": "user", "content": content})
    return msgs


def _torchvision_backed(processor: Any) -> bool:
    """Whether the image processor works on torch tensors (transformers' torchvision / "fast" processors)."""
    ip = getattr(processor, "image_processor", None)
    return any(c.__name__ in ("TorchvisionBackend", "BaseImageProcessorFast") for c in type(ip).__mro__)


def processor_images(processor: Any, images: list[Image.Image]) -> list[Any]:
    """The images as the processor takes them fastest, with the same pixel values.

    A torchvision-backed image processor converts each PIL image to a uint8 CHW tensor itself, after an
    RGB->RGB copy and a byte-string round trip; handing it the tensor skips both (measured: a third of
    its time on 224-pixel images, bit-identical `pixel_values`). Other processors, and images that are not
    plain RGB, get the PIL image as before."""
    if not _torchvision_backed(processor):
        return list(images)
    return [
        torch.from_numpy(np.array(im)).permute(2, 0, 1) if isinstance(im, Image.Image) and im.mode == "RGB" else im
        for im in images
    ]


def encode(
    processor: Any,
    requests: Sequence[Request],
    *,
    completions: Sequence[str] | None = None,
    eos_token_id: int | None = None,
    device: str | torch.device | None = None,
    chat_template_kwargs: Mapping[str, Any] | None = None,
) -> Encoding:
    """The processor's tensors for `requests`: chat template with the generation prompt, images, left padding.

    `completions`: a response per request, appended (its tokens + `eos_token_id`, default the tokenizer's
    EOS) after the prompt's real tokens; the rows are then left-padded again and `labels` marks the
    completion tokens (-100 elsewhere). `device`: where the tensors go (default: stay on the CPU).
    `chat_template_kwargs`: extra variables of the chat template (e.g. `{"enable_thinking": False}`)."""
    fam = family(processor)
    with PROCESSOR_LOCK:
        processor.tokenizer.padding_side = "left"
        texts = [processor.apply_chat_template(build_messages(r), add_generation_prompt=True, tokenize=False,
                                               **(chat_template_kwargs or {}))
                 for r in requests]
        if fam.nested_images:
            nested = [processor_images(processor, list(r.images)) for r in requests]
            images: Any = nested if any(nested) else None
        else:
            images = processor_images(processor, [im for r in requests for im in r.images]) or None
        enc = dict(processor(text=texts, images=images, padding=True, return_tensors="pt"))
        if completions is not None:
            eos = processor.tokenizer.eos_token_id if eos_token_id is None else eos_token_id
            resp = [completion_ids(processor.tokenizer, c, eos) for c in completions]
    if completions is not None:
        enc = _append_completions(enc, resp, _pad_id(processor.tokenizer))
    if device is not None:
        enc = {k: v.to(device) if hasattr(v, "to") else v for k, v in enc.items()}
    return enc


def image_token_id(processor: Any) -> int | None:
    """The id of the placeholder token an image's features replace (one per visual token), or None."""
    tid = getattr(processor, "image_token_id", None)
    if isinstance(tid, int):
        return tid
    tok = getattr(processor, "image_token", None)
    if isinstance(tok, str):
        tid = processor.tokenizer.convert_tokens_to_ids(tok)
        return tid if isinstance(tid, int) and tid != processor.tokenizer.unk_token_id else None
    return None


def count_visual_tokens(processor: Any, input_ids: torch.Tensor) -> list[int] | None:
    """Per row of `input_ids`, how many image placeholder tokens it holds (None: the family's image token is
    not known)."""
    tid = image_token_id(processor)
    if tid is None:
        return None
    return (input_ids == tid).sum(-1).tolist()


def completion_ids(tokenizer: Any, text: str, eos: int) -> list[int]:
    """The token ids of a response as it is trained on: its text's tokens, then EOS."""
    return tokenizer(text, add_special_tokens=False)["input_ids"] + [eos]


def _pad_id(tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _append_completions(enc: Encoding, resp: list[list[int]], pad: int) -> Encoding:
    """Each row's real prompt tokens + its completion ids, left-padded; `labels` on the completion only."""
    keep = enc["attention_mask"].bool()
    types = [k for k in TOKEN_TYPE_KEYS if k in enc]
    seqs = [row[m].tolist() + r for row, m, r in zip(enc["input_ids"], keep, resp)]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    attn = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    out = {k: torch.zeros_like(ids) for k in types}
    for i, (s, r) in enumerate(zip(seqs, resp)):
        start, k = width - len(s), len(r)
        ids[i, start:] = torch.tensor(s)
        attn[i, start:] = 1
        labels[i, width - k :] = ids[i, width - k :]
        for key in types:
            out[key][i, start : width - k] = enc[key][i][keep[i]]
    rest = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask", *types)}
    return {"input_ids": ids, "attention_mask": attn, **out, **rest, "labels": labels}


def append_completion(inputs: Encoding, tokens: torch.Tensor, mask: torch.Tensor) -> Encoding:
    """Model inputs for left-padded prompt `inputs` followed by response `tokens` (B, C) whose real tokens
    are `mask` (right padding): ids and attention extended, per-token type ids zero over the response."""
    out = dict(inputs)
    out["input_ids"] = torch.cat([inputs["input_ids"], tokens], 1)
    out["attention_mask"] = torch.cat([inputs["attention_mask"], mask.to(inputs["attention_mask"].dtype)], 1)
    for k in TOKEN_TYPE_KEYS:
        if k in inputs:
            out[k] = torch.cat([inputs[k], torch.zeros_like(tokens)], 1)
    return out


def image_chunks(enc: Encoding) -> list[torch.Tensor]:
    """`pixel_values` split into each image's rows (the family rule of `family_of`)."""
    rows = family_of(enc).image_rows(enc)  # type: ignore[misc]
    return list(enc["pixel_values"].split(rows))


def per_image_keys(enc: Encoding) -> tuple[str, ...]:
    """The tensors of `enc` with one row per image (selected together with the image's pixel rows)."""
    return family_of(enc).image_keys


def set_image_budget(processor: Any, min_pixels: int | None, max_pixels: int | None) -> dict[str, int | None]:
    """Apply the image budget to a Qwen-VL style image processor; returns the budget in force."""
    ip = getattr(processor, "image_processor", processor)
    size = dict(getattr(ip, "size", None) or {})
    if max_pixels is not None:
        size["longest_edge"] = max_pixels
        if hasattr(ip, "max_pixels"):
            ip.max_pixels = max_pixels
    if min_pixels is not None:
        size["shortest_edge"] = min_pixels
        if hasattr(ip, "min_pixels"):
            ip.min_pixels = min_pixels
    if size:
        ip.size = size
    return {"min_pixels": size.get("shortest_edge"), "max_pixels": size.get("longest_edge")}
