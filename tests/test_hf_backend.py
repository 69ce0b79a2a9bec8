"""The HF backend (through `inputs.encode`) hands a torchvision-backed image processor tensors instead of PIL images: same inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor

from vopd_bench.backends.base import Request
from vopd_bench.inputs import _torchvision_backed, build_messages, processor_images, set_image_budget


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    sizes = [(224, 224), (224, 224), (103, 112), (300, 170), (57, 61)]  # no resize, resized up and down
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


@pytest.mark.parametrize("max_pixels", [None, 112 * 112])
def test_tensor_images_give_the_processor_identical_inputs(tiny_model, max_pixels):
    proc = AutoProcessor.from_pretrained(tiny_model)
    set_image_budget(proc, None, max_pixels)
    assert _torchvision_backed(proc)  # else this test would compare PIL with PIL
    ims = _images() + [_images()[0].convert("L"), _images()[1].convert("RGBA")]  # passed through as PIL
    texts = [
        proc.apply_chat_template(build_messages(Request(str(i), [im], "Which?")), add_generation_prompt=True, tokenize=False)
        for i, im in enumerate(ims)
    ]
    given = processor_images(proc, ims)
    assert [isinstance(x, torch.Tensor) for x in given] == [True] * 5 + [False, False]
    a = proc(text=texts, images=ims, padding=True, return_tensors="pt")
    b = proc(text=texts, images=given, padding=True, return_tensors="pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert ims[0].mode == "RGB" and ims[0].size == (224, 224)  # the caller's images are untouched


def test_other_processors_get_the_pil_images(tiny_model):
    class SlowProcessor:  # not torchvision-backed: nothing is converted
        image_processor = object()

    ims = _images()
    assert processor_images(SlowProcessor(), ims) == ims
