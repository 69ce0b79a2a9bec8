"""The one path from requests to model inputs: chat template, image preprocessing, padding, and (for
training) a completion appended after the prompt. Eval (`backends/hf.py`), rollouts and teacher scoring
(`train/rollout.py`) and the reference model all encode here, so the teacher sees exactly what eval sends.

What differs between model families lives in `FAMILIES`: whether the processor wants images nested per
sample, how `pixel_values` splits per image (`image_chunks`, `select_images`: needed to repeat or select
prompts for training), which tokens mark an image (never sampled), and what an image budget means
(`set_image_budget`). Per-token type ids (`mm_token_type_ids`, Gemma 3's `token_type_ids`) are sliced
with `input_ids` and zero over an appended completion. Families: Qwen-VL (2, 2.5, 3, 3.5), GLM-4.1V,
Gemma 3, SmolVLM, Idefics3, LLaVA-OneVision, InternVL, Pixtral (Mistral 3).
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
    """How one model family's processor takes images and lays out their tensors.

    `image_rows(enc, processor)`: rows of `pixel_values` (dim 0) per image, in order; with `per_sample_pixels`
    `pixel_values` is (samples, tiles, ...) with padding tiles instead, and a chunk is one sample's real
    tiles. `trim`: the part of a padded chunk that is the image (Pixtral pads every image to the batch's
    largest). `budget`: applies --min-pixels/--max-pixels (see `set_image_budget`)."""

    name: str
    processors: tuple[str, ...]  # processor class names (a subclass matches too)
    nested_images: bool = False  # images grouped per sample: [[im], [im]] instead of [im, im]
    image_rows: Callable[[Encoding, Any], list[int]] | None = None
    image_keys: tuple[str, ...] = ()  # tensors with one row per image, selected with the image
    sample_keys: tuple[str, ...] = ()  # other per-sample tensors (besides ids, mask and token types)
    row_keys: tuple[str, ...] = ()  # tensors with the rows of `pixel_values` (split with it)
    per_sample_pixels: bool = False
    trim: Callable[[Encoding, int, torch.Tensor, Any], torch.Tensor] | None = None
    # tokenizer/processor attributes naming the image's begin/end/placeholder/break tokens (never sampled)
    marker_tokens: tuple[str, ...] = ("image_token", "video_token")
    shares_features: bool = False  # image features precomputed once per image (`mm_encoder_outputs`)
    # the attribute naming the token an image feature replaces (one per visual token): the processor's
    # `image_token`, except where that is a text placeholder expanded later (Gemma 3: `<start_of_image>`)
    feature_token: tuple[str, str] = ("processor", "image_token")
    budget: Callable[[Any, int | None, int | None], dict[str, Any]] | None = None


def _grid_rows(enc: Encoding, processor: Any = None) -> list[int]:
    return enc["image_grid_thw"].prod(-1).tolist()


def _token_count_rows(attr: str, per: Callable[[Any], int]) -> Callable[[Encoding, Any], list[int]]:
    """Rows per image counted from the prompt: occurrences of the processor's `attr` token in each row
    (one image per row), divided by `per(processor)` tokens per pixel row."""

    def rows(enc: Encoding, processor: Any) -> list[int]:
        tid = _token_id(processor, attr)
        if tid is None:
            raise UserError(f"{type(processor).__name__} has no {attr}: cannot split pixel_values per image")
        counts = (enc["input_ids"] == tid).sum(-1).tolist()
        k = per(processor)
        if any(c % k for c in counts):
            raise UserError(f"{type(processor).__name__}: {attr} counts {counts} are not multiples of {k}")
        return [c // k for c in counts if c]

    return rows


def _llava_trim(enc: Encoding, i: int, chunk: torch.Tensor, processor: Any) -> torch.Tensor:
    """LLaVA-OneVision: image i's row of `pixel_values` (1, patches, 3, H, W) without its padding patches."""
    return chunk[:, : _llava_patches(enc, processor)[i]]


def _llava_patches(enc: Encoding, processor: Any) -> list[int]:
    """LLaVA-OneVision: the patches of each image (base + its any-res grid), from `image_sizes` and the
    processor's grid pinpoints (the rest of each image's row in `pixel_values` is padding)."""
    from transformers.models.llava_onevision.modeling_llava_onevision import image_size_to_num_patches

    ip = processor.image_processor
    tile = ip.size["height"] if "height" in ip.size else ip.size["shortest_edge"]
    return [int(image_size_to_num_patches(tuple(s), ip.image_grid_pinpoints, tile))
            for s in enc["image_sizes"].tolist()]


def _real_tiles(enc: Encoding, i: int) -> int:
    """Idefics3 / SmolVLM: the tiles of sample i that are not padding."""
    if "pixel_attention_mask" in enc:
        return int(enc["pixel_attention_mask"][i].flatten(1).any(1).sum())
    return int(enc["pixel_values"][i].flatten(1).ne(0).any(1).sum())


def _lfm2_rows(enc: Encoding, processor: Any) -> list[int]:
    """LFM2-VL: tiles (rows) per image. Each tile of `spatial_shapes` (h, w patches) becomes
    ceil(h/f)·ceil(w/f) image tokens (f: the downsample factor); tiles are assigned in order to the prompts
    until each prompt's image-token count is reached (one image per prompt)."""
    f = int(processor.image_processor.downsample_factor)
    per_tile = [-(-h // f) * -(-w // f) for h, w in enc["spatial_shapes"].tolist()]
    tid = _token_id(processor, "image_token")
    rows, t = [], 0
    for want in (enc["input_ids"] == tid).sum(-1).tolist():
        n, got = 0, 0
        while got < want and t < len(per_tile):
            got, n, t = got + per_tile[t], n + 1, t + 1
        if got != want:
            raise UserError(f"{type(processor).__name__}: the tiles' image tokens do not add up to a prompt's {want}")
        if want:
            rows.append(n)
    return rows


def _one_row_per_image(enc: Encoding, processor: Any) -> list[int]:
    return [1] * len(enc["image_sizes"])


def _pixtral_trim(enc: Encoding, i: int, chunk: torch.Tensor, processor: Any) -> torch.Tensor:
    h, w = enc["image_sizes"][i].tolist()
    return chunk[..., :h, :w]


def _qwen_budget(processor: Any, min_pixels: int | None, max_pixels: int | None) -> dict[str, Any]:
    """Qwen-VL / GLM-4.1V: a pixel budget per image (the image is resized to fit between the two)."""
    ip = processor.image_processor
    size = dict(getattr(ip, "size", None) or {})
    if max_pixels is not None:
        size["longest_edge"] = max_pixels
        if hasattr(ip, "max_pixels"):
            ip.max_pixels = max_pixels
    if min_pixels is not None:
        size["shortest_edge"] = min_pixels
        if hasattr(ip, "min_pixels"):
            ip.min_pixels = min_pixels
    if size.get("shortest_edge") and size.get("longest_edge") and size["shortest_edge"] > size["longest_edge"]:
        raise UserError(f"--min-pixels {size['shortest_edge']} exceeds --max-pixels {size['longest_edge']}")
    ip.size = size
    return {"min_pixels": size.get("shortest_edge"), "max_pixels": size.get("longest_edge")}


def _no_min(processor: Any, min_pixels: int | None, has: str) -> None:
    if min_pixels is not None:
        raise UserError(f"--min-pixels: {type(processor).__name__} has no minimum image size ({has}); "
                        "drop --min-pixels")


def _llava_budget(processor: Any, min_pixels: int | None, max_pixels: int | None) -> dict[str, Any]:
    """LLaVA-OneVision: keep the any-res grid pinpoints whose area fits in max_pixels (the model must use
    the same pinpoints: `apply_image_budget`)."""
    ip = processor.image_processor
    _no_min(processor, min_pixels, "any-res grid pinpoints, capped by --max-pixels")
    if max_pixels is not None:
        keep = [p for p in ip.image_grid_pinpoints if p[0] * p[1] <= max_pixels]
        if not keep:
            smallest = min(p[0] * p[1] for p in ip.image_grid_pinpoints)
            raise UserError(f"--max-pixels {max_pixels}: {type(processor).__name__}'s smallest any-res grid "
                            f"has {smallest} pixels; use --max-pixels >= {smallest}")
        ip.image_grid_pinpoints = keep
    return {"max_pixels": max_pixels, "image_grid_pinpoints": [list(p) for p in ip.image_grid_pinpoints]}


def _internvl_budget(processor: Any, min_pixels: int | None, max_pixels: int | None) -> dict[str, Any]:
    """InternVL: tiles of the tile size; max tiles = max_pixels // tile area, min tiles likewise (ceil)."""
    ip = processor.image_processor
    area = ip.size["height"] * ip.size["width"]
    if max_pixels is not None:
        if max_pixels < area:
            raise UserError(f"--max-pixels {max_pixels}: {type(processor).__name__} tiles images into "
                            f"{ip.size['height']}x{ip.size['width']} tiles; use --max-pixels >= {area}")
        ip.max_patches = max_pixels // area
    if min_pixels is not None:
        ip.min_patches = min(max(1, -(-min_pixels // area)), ip.max_patches)
    return {"min_pixels": min_pixels, "max_pixels": max_pixels, "min_patches": ip.min_patches,
            "max_patches": ip.max_patches}


def _edge_budget(key: str) -> Callable[[Any, int | None, int | None], dict[str, Any]]:
    """Idefics3 / SmolVLM / Pixtral: a longest edge; max_pixels → the edge of a square of that area,
    rounded down to the processor's unit (tile edge or patch size)."""

    def budget(processor: Any, min_pixels: int | None, max_pixels: int | None) -> dict[str, Any]:
        ip = processor.image_processor
        _no_min(processor, min_pixels, "it takes a longest edge, from --max-pixels")
        if max_pixels is not None:
            unit = (ip.max_image_size["longest_edge"] if key == "tile"
                    else getattr(processor, "patch_size", 14) * getattr(processor, "spatial_merge_size", 1))
            edge = int(max_pixels**0.5) // unit * unit
            if edge < unit:
                raise UserError(f"--max-pixels {max_pixels}: {type(processor).__name__} needs at least a "
                                f"{unit}x{unit} image; use --max-pixels >= {unit * unit}")
            ip.size = {**dict(ip.size), "longest_edge": edge}
        return {"max_pixels": max_pixels, "longest_edge": ip.size["longest_edge"]}

    return budget


def _fixed_budget(processor: Any, min_pixels: int | None, max_pixels: int | None) -> dict[str, Any]:
    """Gemma 3: every image is resized to one fixed size (a fixed number of visual tokens): no budget."""
    ip = processor.image_processor
    if min_pixels is not None or max_pixels is not None:
        raise UserError(f"--min-pixels/--max-pixels: {type(processor).__name__} resizes every image to "
                        f"{ip.size['height']}x{ip.size['width']} (a fixed number of visual tokens; pan-and-scan "
                        "crops are its only knob); drop the image budget")
    return {"image_size": [ip.size["height"], ip.size["width"]]}


def _token_budget(processor: Any, min_pixels: int | None, max_pixels: int | None) -> dict[str, Any]:
    """LFM2-VL: sizes images by image-token and tile counts, not pixels: no pixel budget."""
    ip = processor.image_processor
    if min_pixels is not None or max_pixels is not None:
        raise UserError(f"--min-pixels/--max-pixels: {type(processor).__name__} sizes images by image tokens "
                        f"(min_image_tokens {ip.min_image_tokens}, max_image_tokens {ip.max_image_tokens}, "
                        f"max_tiles {ip.max_tiles}), not pixels; drop the image budget")
    return {"min_image_tokens": ip.min_image_tokens, "max_image_tokens": ip.max_image_tokens, "max_tiles": ip.max_tiles}


def _boi_rows(enc: Encoding, processor: Any) -> list[int]:
    """Gemma 3: one row per image (plus one per pan-and-scan crop), counted from the begin-of-image tokens."""
    return _token_count_rows("boi_token", lambda p: 1)(enc, processor)


QWEN_MARKERS = ("image_token", "video_token", "vision_start_token", "vision_end_token")

FAMILIES: tuple[Family, ...] = (
    Family("qwen_vl", ("Qwen2VLProcessor", "Qwen2_5_VLProcessor", "Qwen3VLProcessor"),
           image_rows=_grid_rows, image_keys=("image_grid_thw",), marker_tokens=QWEN_MARKERS,
           shares_features=True, budget=_qwen_budget),
    Family("glm4v", ("Glm4vProcessor",), image_rows=_grid_rows, image_keys=("image_grid_thw",),
           marker_tokens=("image_token", "video_token"), shares_features=True, budget=_qwen_budget),
    Family("gemma3", ("Gemma3Processor",), nested_images=True, image_rows=_boi_rows,
           marker_tokens=("image_token", "boi_token", "eoi_token"), feature_token=("tokenizer", "image_token"),
           budget=_fixed_budget),
    Family("smolvlm", ("SmolVLMProcessor",), nested_images=True, per_sample_pixels=True,
           marker_tokens=("image_token", "fake_image_token", "global_image_token", "video_token"),
           budget=_edge_budget("tile")),
    Family("idefics3", ("Idefics3Processor",), nested_images=True, per_sample_pixels=True,
           marker_tokens=("image_token", "fake_image_token", "global_image_token"), budget=_edge_budget("tile")),
    Family("llava_onevision", ("LlavaOnevisionProcessor",), image_rows=_one_row_per_image,
           image_keys=("image_sizes",), sample_keys=("batch_num_images",), trim=_llava_trim, budget=_llava_budget),
    Family("internvl", ("InternVLProcessor",),
           image_rows=_token_count_rows("image_token", lambda p: int(p.image_seq_length)),
           marker_tokens=("image_token", "start_image_token", "end_image_token", "video_token"),
           budget=_internvl_budget),
    Family("lfm2_vl", ("Lfm2VlProcessor",), nested_images=True, image_rows=_lfm2_rows,
           row_keys=("pixel_attention_mask", "spatial_shapes"),
           marker_tokens=("image_token", "image_start_token", "image_end_token", "image_thumbnail_token"),
           budget=_token_budget),
    Family("pixtral", ("PixtralProcessor",), image_rows=_one_row_per_image,
           image_keys=("image_sizes",), trim=_pixtral_trim,
           marker_tokens=("image_token", "image_break_token", "image_end_token"), budget=_edge_budget("patch")),
)
OTHER = Family("other", ())


def family(processor: Any) -> Family:
    """The rule set for `processor` (by its class or a base class); `OTHER` when none matches."""
    names = {c.__name__ for c in type(processor).__mro__}
    return next((f for f in FAMILIES if names.intersection(f.processors)), OTHER)


def family_of(enc: Encoding, processor: Any = None) -> Family:
    """The family of `processor` (or, without one, of an encoding laid out by `image_grid_thw`), which must
    know how `pixel_values` splits per image."""
    fam = family(processor) if processor is not None else next(
        (f for f in FAMILIES if f.image_keys == ("image_grid_thw",) and "image_grid_thw" in enc), OTHER)
    if fam.image_rows is not None or fam.per_sample_pixels:
        return fam
    known = ", ".join(f.name for f in FAMILIES if f.image_rows is not None or f.per_sample_pixels)
    what = type(processor).__name__ if processor is not None else "an encoding without its processor"
    raise UserError(
        f"cannot split pixel_values per image for inputs with keys {', '.join(sorted(enc))} ({what}): training "
        f"supports the {known} families"
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
    owner, attr = family(processor).feature_token
    if owner == "tokenizer":
        return _token_id(processor.tokenizer, attr) if hasattr(processor, "tokenizer") else None
    return _token_id(processor, attr)


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


def image_chunks(enc: Encoding, processor: Any = None) -> list[torch.Tensor]:
    """`pixel_values` split into each image's part, padding removed (the rule of `family_of`): each chunk is
    what encoding that image alone gives."""
    fam = family_of(enc, processor)
    pv = enc["pixel_values"]
    if fam.per_sample_pixels:
        return [pv[i, : _real_tiles(enc, i)] for i in range(pv.shape[0])]
    rows = fam.image_rows(enc, processor)  # type: ignore[misc]
    if sum(rows) != pv.shape[0]:
        raise UserError(f"{fam.name}: the images' rows {rows} do not add up to pixel_values' {pv.shape[0]}")
    chunks = list(pv.split(rows))
    if fam.trim is not None:  # padding removed (LLaVA-OneVision: patches; Pixtral: pixels)
        chunks = [fam.trim(enc, i, c, processor) for i, c in enumerate(chunks)]
    return chunks


def per_image_keys(enc: Encoding, processor: Any = None) -> tuple[str, ...]:
    """The tensors of `enc` with one row per image (selected together with the image's pixel rows)."""
    return family_of(enc, processor).image_keys


def _stack_padded(chunks: list[torch.Tensor]) -> torch.Tensor:
    """Chunks (1 or more leading rows each) zero-padded to a common shape and stacked on a new dim 0."""
    shape = [max(c.shape[d] for c in chunks) for d in range(chunks[0].dim())]
    out = chunks[0].new_zeros((len(chunks), *shape))
    for i, c in enumerate(chunks):
        out[(i, *(slice(0, n) for n in c.shape))] = c
    return out


def select_images(enc: Encoding, idx: Sequence[int], processor: Any = None) -> Encoding:
    """The image tensors of prompts `idx` of `enc` (one image per prompt; a prompt may repeat), laid out as
    the family's processor would for those prompts: `pixel_values`, the per-image tensors (`image_grid_thw`,
    `image_sizes`, ...) and the family's other per-sample tensors (`pixel_attention_mask`,
    `batch_num_images`)."""
    fam = family_of(enc, processor)
    chunks = image_chunks(enc, processor)
    idx = list(idx)
    pick = [chunks[i] for i in idx]
    out: Encoding = {}
    if fam.per_sample_pixels:
        out["pixel_values"] = _stack_padded(pick)
        if "pixel_attention_mask" in enc:
            masks = [enc["pixel_attention_mask"][i, : len(chunks[i])] for i in idx]
            out["pixel_attention_mask"] = _stack_padded(masks)
    elif fam.trim is not None:
        out["pixel_values"] = _stack_padded([c[0] for c in pick])
    else:
        out["pixel_values"] = torch.cat(pick)
    if fam.row_keys:
        rows = [len(c) for c in chunks]
        for k in fam.row_keys:
            if k in enc:
                parts = enc[k].split(rows)
                out[k] = torch.cat([parts[i] for i in idx])
    index = torch.tensor(idx, device=enc["input_ids"].device)
    for k in (*fam.image_keys, *fam.sample_keys):
        if k in enc:
            out[k] = enc[k][index.to(enc[k].device)]
    return out


def _token_id(processor: Any, attr: str) -> int | None:
    """The id of the token the processor (or its tokenizer) names `attr` (e.g. "image_token"), or None.
    `processor` may be a tokenizer itself."""
    tok = getattr(processor, "tokenizer", processor)
    for owner in (processor, tok):
        tid = getattr(owner, f"{attr}_id", None)
        if isinstance(tid, int):
            return tid
    for owner in (processor, tok):
        text = getattr(owner, attr, None)
        if isinstance(text, str):
            tid = tok.convert_tokens_to_ids(text)
            if isinstance(tid, int) and tid != tok.unk_token_id:
                return tid
    return None


CONFIG_MARKER_KEYS = ("image_token_id", "image_token_index", "video_token_id", "video_token_index",
                      "vision_start_token_id", "vision_end_token_id", "boi_token_index", "eoi_token_index",
                      "image_start_token_id", "image_end_token_id", "video_start_token_id", "video_end_token_id")


def image_marker_ids(processor: Any, config: Any = None) -> list[int]:
    """Ids of the tokens that stand for or delimit an image/video (placeholders, begin/end, breaks): the
    family's named tokens, plus the model config's `*_token_id`/`*_token_index` of that kind."""
    ids = {_token_id(processor, a) for a in family(processor).marker_tokens}
    if config is not None:
        ids |= {getattr(config, k, None) for k in CONFIG_MARKER_KEYS}
    return sorted(int(i) for i in ids if isinstance(i, int))


def set_image_budget(processor: Any, min_pixels: int | None, max_pixels: int | None) -> dict[str, Any]:
    """Apply `--min-pixels/--max-pixels` as the processor understands an image budget, and return the budget
    in force (JSON values, for config.json): Qwen-VL/GLM pixel budgets; LLaVA-OneVision the any-res grids
    that fit; InternVL tile counts; Idefics3/SmolVLM/Pixtral a longest edge. A processor with no such knob
    (Gemma 3's fixed size, an unknown family) refuses a budget with a one-line `UserError`."""
    fam = family(processor)
    if fam.budget is not None:
        return fam.budget(processor, min_pixels, max_pixels)
    ip = getattr(processor, "image_processor", None)
    if ip is not None and {"min_pixels", "max_pixels"} <= set(vars(ip)):  # Qwen-style image processor
        return _qwen_budget(processor, min_pixels, max_pixels)
    if min_pixels is not None or max_pixels is not None:
        raise UserError(f"--min-pixels/--max-pixels: no image budget is known for {type(processor).__name__} "
                        f"({type(ip).__name__}); drop the image budget")
    return {}


def apply_image_budget(model: Any, budget: Mapping[str, Any]) -> None:
    """Settings of the budget the model itself must share with its processor (LLaVA-OneVision's any-res
    grid pinpoints, from which it recomputes each image's patch count)."""
    if "image_grid_pinpoints" in budget and hasattr(model.config, "image_grid_pinpoints"):
        model.config.image_grid_pinpoints = [list(p) for p in budget["image_grid_pinpoints"]]
