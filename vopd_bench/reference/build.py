"""Build the tiny Qwen2.5-VL (tokenizer, config, processor, random weights) from a config, entirely offline.

The result is a folder that `AutoModelForImageTextToText.from_pretrained(dir)` and
`AutoProcessor.from_pretrained(dir)` load exactly like a Hub checkpoint: a real Qwen2.5-VL
architecture (vision tower + M-RoPE text decoder), a byte-level BPE tokenizer trained in memory on
the task's own prompt/answer vocabulary and wrapped as `Qwen2Tokenizer` with Qwen's special tokens,
and a real `Qwen2_5_VLProcessor` (image processor, tokenizer, video processor, Qwen chat template).
The weights are random: `vopd_bench.reference.pretrain` trains them.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"
DEFAULT_SYSTEM = "You are a helpful assistant."

# The Qwen2.5-VL-Instruct chat template (as published with the Hub checkpoints).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass
class TinyConfig:
    """Sizes of the tiny Qwen2.5-VL (defaults: ~4.6M parameters, ~18 MB in float32)."""

    vocab_size: int = field(
        default=512, metadata={"help": "BPE vocabulary size to train (specials included)"}
    )
    text_hidden: int = field(default=256, metadata={"help": "text decoder width"})
    text_layers: int = field(default=2, metadata={"help": "text decoder layers"})
    text_heads: int = field(default=4, metadata={"help": "attention heads (head_dim = width / heads)"})
    text_kv_heads: int = field(default=2, metadata={"help": "key/value heads (grouped-query attention)"})
    text_mlp: int = field(default=1024, metadata={"help": "text MLP width"})
    vision_depth: int = field(default=4, metadata={"help": "vision transformer blocks"})
    vision_hidden: int = field(default=192, metadata={"help": "vision width"})
    vision_mlp: int = field(default=384, metadata={"help": "vision MLP width"})
    vision_heads: int = field(default=4, metadata={"help": "vision attention heads"})
    max_pixels: int = field(
        default=448 * 448, metadata={"help": "image processor pixel budget (longest_edge)"}
    )
    seed: int = field(default=0, metadata={"help": "weight initialisation seed"})

    def __post_init__(self) -> None:
        if self.text_hidden % self.text_heads or self.text_heads % self.text_kv_heads:
            raise ValueError("text_hidden must divide by text_heads, and text_heads by text_kv_heads")
        if (self.text_hidden // self.text_heads) % 2:
            raise ValueError("head_dim (text_hidden / text_heads) must be even for rotary embeddings")
        if self.vision_hidden % self.vision_heads:
            raise ValueError("vision_hidden must divide by vision_heads")
        if min(self.text_layers, self.vision_depth) < 1:
            raise ValueError("text_layers and vision_depth must be >= 1")
        if self.vocab_size < 300:
            raise ValueError("vocab_size must be >= 300 (256 bytes + specials + merges)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mrope_section(head_dim: int) -> list[int]:
    """Split head_dim/2 rotary frequencies over (temporal, height, width); the parts sum to head_dim/2."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def train_tokenizer(corpus: Iterable[str], vocab_size: int) -> Any:
    """A byte-level BPE trained on `corpus`, wrapped as a `Qwen2Tokenizer` with Qwen's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(list(corpus), trainer)
    with tempfile.TemporaryDirectory() as d:
        bpe.model.save(d)
        lines = Path(d, "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = [tuple(ln.split(" ")) for ln in lines if ln.strip() and not ln.startswith("#version")]
    tok = Qwen2Tokenizer(
        vocab=bpe.get_vocab(),
        merges=merges,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=None,
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def chat_corpus(prompts: Iterable[str], answers: Iterable[str]) -> list[str]:
    """Tokenizer training text: the task's prompts and answers plus the chat template's own words."""
    return [*prompts, *answers, f"system\n{DEFAULT_SYSTEM}", "user\n", "assistant\n"]


def build_config(cfg: TinyConfig, tokenizer: Any) -> Any:
    """The Qwen2.5-VL config for `cfg`, with token ids taken from `tokenizer`."""
    from transformers import AutoConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    head_dim = cfg.text_hidden // cfg.text_heads
    text = {
        "vocab_size": ((len(tokenizer) + 63) // 64) * 64,
        "hidden_size": cfg.text_hidden,
        "intermediate_size": cfg.text_mlp,
        "num_hidden_layers": cfg.text_layers,
        "num_attention_heads": cfg.text_heads,
        "num_key_value_heads": cfg.text_kv_heads,
        "head_dim": head_dim,
        "max_position_embeddings": 4096,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": mrope_section(head_dim),
        },
        "bos_token_id": None,
        "eos_token_id": ids[EOS_TOKEN],
        "pad_token_id": ids[PAD_TOKEN],
    }
    vision = {
        "depth": cfg.vision_depth,
        "hidden_size": cfg.vision_hidden,
        "intermediate_size": cfg.vision_mlp,
        "num_heads": cfg.vision_heads,
        "out_hidden_size": cfg.text_hidden,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [cfg.vision_depth - 1],
    }
    return AutoConfig.for_model(
        "qwen2_5_vl",
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        eos_token_id=ids[EOS_TOKEN],
        pad_token_id=ids[PAD_TOKEN],
        tie_word_embeddings=True,
    )


def build_processor(tokenizer: Any, max_pixels: int = 448 * 448) -> Any:
    """A real `Qwen2_5_VLProcessor`: Qwen2-VL image processor (patch 14, merge 2), video processor,
    `tokenizer`, and the Qwen chat template."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    size = {"shortest_edge": 56 * 56, "longest_edge": max_pixels}
    image_processor = Qwen2VLImageProcessor(patch_size=14, merge_size=2, temporal_patch_size=2, size=size)
    video_processor = Qwen2VLVideoProcessor()
    return Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


def build(cfg: TinyConfig, corpus: Iterable[str]) -> tuple[Any, Any]:
    """(model, processor): a randomly initialised tiny Qwen2.5-VL and its processor."""
    import torch
    from transformers import AutoModelForImageTextToText

    tokenizer = train_tokenizer(corpus, cfg.vocab_size)
    config = build_config(cfg, tokenizer)
    torch.manual_seed(cfg.seed)
    model = AutoModelForImageTextToText.from_config(config)
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    model.generation_config.bos_token_id = None
    model.generation_config.do_sample = False
    processor = build_processor(tokenizer, cfg.max_pixels)
    n = sum(p.numel() for p in model.parameters())
    log.info("built %s: %.2fM parameters, vocabulary %d", type(model).__name__, n / 1e6, len(tokenizer))
    return model, processor


def save(model: Any, processor: Any, out_dir: str | Path) -> Path:
    """Save model (safetensors) and processor so that the Auto* classes load the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def load(path: str | Path, rope_theta: float | None = None) -> tuple[Any, Any]:
    """(model, processor) from a saved folder, through the Auto* classes (as any user would); `rope_theta`
    replaces the text decoder's rotary base (the saved config then carries the new one)."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    config = AutoConfig.from_pretrained(path)
    if rope_theta is not None:
        config.text_config.rope_parameters["rope_theta"] = float(rope_theta)
    model = AutoModelForImageTextToText.from_pretrained(path, config=config)
    processor = AutoProcessor.from_pretrained(path)
    return model, processor


def num_parameters(model: Any) -> int:
    """Total parameter count of `model`."""
    return sum(p.numel() for p in model.parameters())
