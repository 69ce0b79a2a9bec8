"""A randomly initialised checkpoint of a real model's shape, built from its config (no download), with the
reference model's tokenizer, processor and chat template: what the GPU benchmarks time (speed and memory
depend on the shape, not on the weights).

    python benchmarks/make_sized_model.py --shape qwen2_5_vl_3b --out /tmp/sized [--dtype bfloat16] [--device cuda]

Shapes: `tiny` (the reference model's own config: the CPU check of this script), `qwen2_5_vl_3b`,
`qwen2_5_vl_7b` (the published Qwen2.5-VL-3B/7B-Instruct text and vision sizes). The special token ids stay
the reference tokenizer's; the vocabulary keeps the real size (the embedding and LM head cost what they cost).
Prints the folder and the parameter count as its last lines.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

from vopd_bench.models import REFERENCE_DIR

# Qwen2.5-VL-{3B,7B}-Instruct config.json values (text and vision towers).
SHAPES: dict[str, dict[str, Any]] = {
    "tiny": {},
    "qwen2_5_vl_3b": {
        "text": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                     num_key_value_heads=2, head_dim=128, vocab_size=151936, max_position_embeddings=128000,
                     rope_theta=1000000.0, mrope_section=[16, 24, 24]),
        "vision": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                       fullatt_block_indexes=[7, 15, 23, 31]),
        "tie": True,
    },
    "qwen2_5_vl_7b": {
        "text": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                     num_key_value_heads=4, head_dim=128, vocab_size=152064, max_position_embeddings=128000,
                     rope_theta=1000000.0, mrope_section=[16, 24, 24]),
        "vision": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                       fullatt_block_indexes=[7, 15, 23, 31]),
        "tie": False,
    },
}
COPY = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "processor_config.json",
        "generation_config.json")


def sized_config(shape: str) -> dict[str, Any]:
    """The reference config.json with the shape's sizes."""
    cfg = json.loads((REFERENCE_DIR / "config.json").read_text())
    s = SHAPES[shape]
    if not s:
        return cfg
    text = dict(s["text"])
    rope = {"rope_theta": text.pop("rope_theta"), "mrope_section": text.pop("mrope_section"), "rope_type": "default"}
    cfg["text_config"].update(text, rope_parameters=rope, layer_types=["full_attention"] * text["num_hidden_layers"],
                              max_window_layers=text["num_hidden_layers"])
    cfg["vision_config"].update(s["vision"])
    cfg["tie_word_embeddings"] = s["tie"]
    return cfg


def build(shape: str, out: Path, dtype: str = "bfloat16", device: str = "cpu") -> tuple[Path, int]:
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(sized_config(shape), indent=2))
    for name in COPY:
        if (REFERENCE_DIR / name).is_file():
            shutil.copy(REFERENCE_DIR / name, out / name)
    config = AutoConfig.from_pretrained(out)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=getattr(torch, dtype))
    n = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out)
    del model
    return out, n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    p.add_argument("--device", default="cpu", help="where the random weights are made (cuda: much faster for big shapes)")
    a = p.parse_args()
    t0 = time.perf_counter()
    out, n = build(a.shape, Path(a.out), a.dtype, a.device)
    print(f"shape {a.shape}: {n / 1e9:.2f} B parameters, {a.dtype}, built and saved in {time.perf_counter() - t0:.0f} s")
    print(f"model folder: {out}")


if __name__ == "__main__":
    main()
