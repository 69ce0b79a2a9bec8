"""The reference model's encoding, through the shared `vopd_bench.inputs.encode`: prompts are exactly what
the eval sends (one user turn, image first, then the task's rendered prompt, through the processor's chat
template); a training sequence is that encoding plus the answer text and `<|im_end|>`, with `labels`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from vopd_bench.backends.base import Request
from vopd_bench.inputs import build_messages, encode
from vopd_bench.reference.build import EOS_TOKEN
from vopd_bench.reference.data import Example


def _requests(images: Sequence[Image.Image], prompts: Sequence[str]) -> list[Request]:
    return [Request(key=str(i), images=[im], prompt=p) for i, (im, p) in enumerate(zip(images, prompts))]


def chat_prompt(processor: Any, prompt: str) -> str:
    """The exact text the eval sends: one user turn, image first, then the prompt."""
    msgs = build_messages(Request(key="", images=[None], prompt=prompt))  # type: ignore[list-item]
    return processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)


def encode_prompts(processor: Any, images: Sequence[Image.Image], prompts: Sequence[str]) -> dict[str, torch.Tensor]:
    """Left-padded model inputs for generation."""
    return encode(processor, _requests(images, prompts))


def encode_training(processor: Any, examples: Sequence[Example]) -> dict[str, torch.Tensor]:
    """Prompt + response + <|im_end|>, left-padded, with `labels` (-100 outside the response tokens)."""
    eos = processor.tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    reqs = _requests([e.image for e in examples], [e.prompt for e in examples])
    return encode(processor, reqs, completions=[e.response for e in examples], eos_token_id=eos)
