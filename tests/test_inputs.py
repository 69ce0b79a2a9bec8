"""One model-input path (`vopd_bench.inputs`): the teacher and the student see exactly what eval sends, a
completion is appended after the prompt's real tokens, and each model family's rules live in one table."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from vopd_bench import inputs
from vopd_bench.backends.base import BackendConfig, Request
from vopd_bench.errors import UserError


def _eval_requests(spec, items, view: str) -> list[Request]:
    """The requests `evaluate.py` sends for `items` in `view`."""
    from vopd_bench.protocol import render

    return [Request(it.id, [render(spec, it, view).image], spec.prompt.render(it), spec.prompt.system) for it in items]


def test_teacher_and_student_inputs_equal_the_eval_inputs(tiny_model: str, synth_small: Path) -> None:
    """Bit-identical tensors: the eval backend's encoding of a request vs the trainer's encoding of the same
    item (rollouts on the full image, teacher scoring on the crop), each with its own processor."""
    from vopd_bench.backends.hf import HFBackend
    from vopd_bench.tasks import get_task
    from vopd_bench.train import load_config
    from vopd_bench.train.data import render_prompt
    from vopd_bench.train.policy import load_processor
    from vopd_bench.train.rollout import encode

    cfg = load_config("demo", [f"model={tiny_model}", "device=cpu"])
    spec = get_task("synth")
    items = spec.load_items(synth_small)[:5]
    backend = HFBackend(BackendConfig(model=tiny_model, max_pixels=cfg.max_pixels, device="cpu"))
    policy = SimpleNamespace(processor=load_processor(cfg), device="cpu")  # what rollout.encode reads of a Policy
    prompts = [render_prompt(it, spec) for it in items]
    for view, images in (("full", [p.full for p in prompts]), ("crop", [p.crop for p in prompts])):
        sent = backend._encode(_eval_requests(spec, items, view))
        trained = encode(policy, images, prompts)
        assert sent.keys() == trained.keys(), view
        for k in sent:
            assert sent[k].dtype == trained[k].dtype and torch.equal(sent[k], trained[k]), (view, k)


def test_completions_follow_the_prompt_tokens(tiny_model: str, synth_small: Path) -> None:
    from transformers import AutoProcessor

    from vopd_bench.tasks import get_task

    proc = AutoProcessor.from_pretrained(tiny_model)
    spec = get_task("synth")
    reqs = _eval_requests(spec, spec.load_items(synth_small)[:3], "crop")
    answers = ["It is red. Answer: A", "B", "It is a long answer. Answer: C"]
    eos = proc.tokenizer.convert_tokens_to_ids("<|im_end|>")
    prompt = inputs.encode(proc, reqs)
    full = inputs.encode(proc, reqs, completions=answers, eos_token_id=eos)
    assert set(full) == set(prompt) | {"labels"}
    assert torch.equal(full["pixel_values"], prompt["pixel_values"])
    for i, answer in enumerate(answers):
        resp = inputs.completion_ids(proc.tokenizer, answer, eos)
        real = full["attention_mask"][i].bool()
        p_real = prompt["attention_mask"][i].bool()
        assert full["input_ids"][i][real].tolist() == prompt["input_ids"][i][p_real].tolist() + resp
        assert real[-len(resp) - int(p_real.sum()):].all()  # left padding only
        labels = full["labels"][i]
        assert labels[-len(resp):].tolist() == resp and (labels[: -len(resp)] == -100).all()
        types = full["mm_token_type_ids"][i]
        assert types[real][: int(p_real.sum())].tolist() == prompt["mm_token_type_ids"][i][p_real].tolist()
        assert not types[-len(resp):].any() and not types[~real].any()


def test_append_completion_zero_extends_token_types() -> None:
    prompt = {"input_ids": torch.tensor([[0, 5, 6]]), "attention_mask": torch.tensor([[0, 1, 1]]),
              "token_type_ids": torch.tensor([[0, 1, 0]]), "pixel_values": torch.ones(2, 3)}
    out = inputs.append_completion(prompt, torch.tensor([[7, 8]]), torch.tensor([[1, 0]]))
    assert out["input_ids"].tolist() == [[0, 5, 6, 7, 8]]
    assert out["attention_mask"].tolist() == [[0, 1, 1, 1, 0]]
    assert out["token_type_ids"].tolist() == [[0, 1, 0, 0, 0]]
    assert out["pixel_values"] is prompt["pixel_values"]


def test_family_rules(tiny_model: str) -> None:
    from transformers import AutoProcessor

    from vopd_bench.backends import hf

    assert hf.PROCESSOR_LOCK is inputs.PROCESSOR_LOCK  # eval and training serialise on the same lock
    assert inputs.family(AutoProcessor.from_pretrained(tiny_model)).name == "qwen_vl"
    grid = {"image_grid_thw": torch.tensor([[1, 2, 2], [1, 4, 2]]), "pixel_values": torch.arange(12.0)[:, None]}
    assert [len(c) for c in inputs.image_chunks(grid)] == [4, 8]
    with pytest.raises(UserError, match="image_sizes.*qwen_vl"):  # e.g. LLaVA-OneVision: not split yet
        inputs.image_chunks({"image_sizes": torch.tensor([[224, 224]]), "pixel_values": torch.zeros(1, 3)})


def test_nested_image_families_get_one_list_per_sample() -> None:
    seen = {}

    class Gemma3Processor:  # stands in for transformers' class of that name
        tokenizer = SimpleNamespace(padding_side="right")
        image_processor = object()

        def apply_chat_template(self, messages, **kw):
            return str(len(messages[-1]["content"]))

        def __call__(self, text, images, **kw):
            seen["images"] = images
            return {"input_ids": torch.zeros(len(text), 1)}

    ims = [Image.new("RGB", (4, 4)) for _ in range(3)]
    proc = Gemma3Processor()
    inputs.encode(proc, [Request("a", ims[:1], "q"), Request("b", ims[1:], "q")])
    assert seen["images"] == [ims[:1], ims[1:]] and proc.tokenizer.padding_side == "left"
    inputs.encode(proc, [Request("a", [], "q")])
    assert seen["images"] is None
