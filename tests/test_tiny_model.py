"""The tiny Qwen2.5-VL builder, the training-batch encoding, and the shipped reference checkpoint."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from vopd_bench import reference as R
from vopd_bench.reference import build as tiny
from vopd_bench.tasks import get_task

SMALL = tiny.TinyConfig(
    vocab_size=400,
    text_hidden=64,
    text_heads=2,
    text_kv_heads=1,
    text_layers=1,
    text_mlp=128,
    vision_depth=2,
    vision_hidden=32,
    vision_mlp=64,
    vision_heads=2,
)
RESPONSE_RE = re.compile(r"It is [^.]+\. Answer: [ABCD]")


@pytest.fixture(scope="module")
def data() -> R.TaskData:
    return R.TaskData(get_task("synth"))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, data: R.TaskData) -> Path:
    model, processor = tiny.build(SMALL, R.tokenizer_corpus(data, n=60))
    return tiny.save(model, processor, tmp_path_factory.mktemp("tiny"))


def test_config_validation_and_mrope():
    for hd in (16, 32, 64, 128):
        assert sum(tiny.mrope_section(hd)) == hd // 2
    with pytest.raises(ValueError):
        tiny.TinyConfig(text_hidden=250, text_heads=4)
    with pytest.raises(ValueError):
        tiny.TinyConfig(text_heads=4, text_kv_heads=3)
    with pytest.raises(ValueError):
        tiny.TinyConfig(vision_depth=0)


def test_saved_folder_loads_like_a_hub_checkpoint(built: Path, data: R.TaskData):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(built)
    proc = AutoProcessor.from_pretrained(built)
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert type(proc).__name__ == "Qwen2_5_VLProcessor"
    assert (built / "model.safetensors").is_file()
    tc = model.config.text_config
    assert sum(tc.rope_parameters["mrope_section"]) == tc.head_dim // 2
    tok = proc.tokenizer
    eos, pad = tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")
    assert model.generation_config.eos_token_id == eos and model.generation_config.pad_token_id == pad
    assert model.config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>") == proc.image_token_id
    # the prompt is the Qwen chat format, with the task prompt verbatim
    item = data.items(1, 0)[0]
    prompt = data.spec.prompt.render(item)
    text = R.chat_prompt(proc, prompt)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        f"<|vision_start|><|image_pad|><|vision_end|>{prompt}<|im_end|>\n<|im_start|>assistant\n"
    )
    # the BPE learned the task's words: a prompt is short, and decodes back exactly
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    assert len(ids) < len(prompt) / 2 and tok.decode(ids) == prompt


def test_generate_a_few_tokens(built: Path, data: R.TaskData):
    model, proc = tiny.load(built)
    examples = [data.example(it, "full") for it in data.items(2, 0)]
    enc = R.encode_prompts(proc, [e.image for e in examples], [e.prompt for e in examples])
    assert enc["image_grid_thw"].tolist() == [[1, 16, 16]] * 2  # 224 px: 256 patches, 64 LLM tokens
    assert int((enc["input_ids"][0] == proc.image_token_id).sum()) == 64
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=3, do_sample=False)
    assert out.shape == (2, enc["input_ids"].shape[1] + 3) or out.shape[1] < enc["input_ids"].shape[1] + 3
    assert len(R.generate(model, proc, examples, max_new_tokens=3)) == 2


def test_training_batch_is_the_processor_encoding_plus_the_answer(built: Path, data: R.TaskData):
    """The training path sends the model exactly what the eval sends, plus the answer and <|im_end|>."""
    _, proc = tiny.load(built)
    rng = np.random.default_rng(0)
    items = data.items(3, 7)
    examples = [data.example(items[0], "crop"), data.example(items[1], "full")]
    examples.append(
        data.example(data.item(rng, kind="plain", image_size=112, target_size=(8, 48), clutter=0.0), "full")
    )
    assert len({e.image.size for e in examples}) == 3  # crops are not square; sizes differ
    batch = R.encode_training(proc, examples)
    ref = proc(
        text=[R.chat_prompt(proc, e.prompt) for e in examples],
        images=[e.image for e in examples],
        padding=True,
        return_tensors="pt",
    )
    assert torch.equal(batch["pixel_values"], ref["pixel_values"])
    assert torch.equal(batch["image_grid_thw"], ref["image_grid_thw"])
    tok, eos = proc.tokenizer, proc.tokenizer.convert_tokens_to_ids("<|im_end|>")
    for i, e in enumerate(examples):
        ids = batch["input_ids"][i][batch["attention_mask"][i].bool()]
        prompt_ids = ref["input_ids"][i][ref["attention_mask"][i].bool()]
        answer = tok(e.response, add_special_tokens=False)["input_ids"] + [eos]
        assert ids.tolist() == prompt_ids.tolist() + answer
        labelled = batch["labels"][i][batch["labels"][i] != -100]
        assert tok.decode(labelled) == e.response + "<|im_end|>"
        mm = batch["mm_token_type_ids"][i][batch["attention_mask"][i].bool()].tolist()
        ref_mm = ref["mm_token_type_ids"][i][ref["attention_mask"][i].bool()].tolist()
        assert mm == ref_mm + [0] * len(answer)


def test_training_steps_reduce_the_answer_loss(built: Path, data: R.TaskData):
    model, proc = tiny.load(built)
    torch.manual_seed(0)
    batch = R.encode_training(proc, [data.example(it, "crop") for it in data.items(4, 1)])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        loss = R.response_loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5


def test_parse_letter():
    assert R.parse_letter("It is red. Answer: B") == "B"
    assert R.parse_letter("Answer: A. no, Answer: C") == "C"
    assert R.parse_letter("It is red.") is None


def test_shipped_reference_checkpoint(data: R.TaskData):
    path = R.reference_model_path()
    files = [p for p in path.rglob("*") if p.is_file()]
    assert (path / "model.safetensors").is_file() and (path / "README.md").is_file()
    assert sum(p.stat().st_size for p in files) <= 30 * 1024 * 1024
    model, proc = tiny.load(path)
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    examples = [data.example(it, "crop") for it in data.items(12, 31)]
    texts = R.generate(model, proc, examples, max_new_tokens=16)
    assert all(RESPONSE_RE.fullmatch(t) for t in texts), texts
    correct = sum(R.parse_letter(t) == e.answer for t, e in zip(texts, examples))
    assert correct >= 8, texts  # crops are the easy view (>= 85% on 500 items)
