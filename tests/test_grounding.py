"""Box parsing on real-format strings of several families, clipping, and IoU."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vopd_bench.grounding import iou, parse_box


@pytest.mark.parametrize(("text", "fmt", "want"), [
    # Qwen2.5-VL: absolute pixels of the resized image, in a ```json block
    ('```json\n[\n\t{"bbox_2d": [135, 48, 210, 119], "label": "red cup"}\n]\n```', "qwen2.5-vl", [135, 48, 210, 119]),
    # Qwen2-VL / Qwen-VL: 0-1000 with box tokens
    ("<|object_ref_start|>cup<|object_ref_end|><|box_start|>(250,100),(500,400)<|box_end|>", "qwen-1000",
     [100, 40, 200, 160]),
    # Qwen3-VL: 0-1000 in JSON
    ('[{"bbox_2d": [250, 100, 500, 400], "label": "cup"}]', "qwen-1000", [100, 40, 200, 160]),
    # generic JSON list, pixels; and fractions
    ("The object is at [10, 20, 110, 220].", "json", [10, 20, 110, 220]),
    ("[0.25, 0.1, 0.5, 0.4]", "json", [100, 40, 200, 160]),
    ('{"bbox": [300, 300, 500, 500]}', "json", [300, 300, 400, 400]),  # clipped to the 400 x 400 image
    ("[110, 220, 10, 20]", "json", [10, 20, 110, 220]),  # corners swapped
    ("I cannot find it.", "json", None),
    ("[500, 500, 600, 600]", "json", None),  # entirely outside: zero area after clipping
    ("", "qwen-1000", None),
])
def test_formats(text: str, fmt: str, want: list[int] | None) -> None:
    assert parse_box(text, 400, 400, fmt) == want


def test_scale_maps_a_resized_box_back() -> None:
    assert parse_box('{"bbox_2d": [10, 10, 20, 20]}', 800, 600, "qwen2.5-vl", scale=(2.0, 2.0)) == [20, 20, 40, 40]
    with pytest.raises(ValueError, match="unknown box format"):
        parse_box("[1, 2, 3, 4]", 10, 10, "yolo")


def test_iou() -> None:
    assert iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert iou([0, 0, 10, 10], [20, 20, 30, 30]) == 0.0


@given(st.text(), st.integers(1, 4000), st.integers(1, 4000), st.sampled_from(["json", "qwen2.5-vl", "qwen-1000"]))
def test_never_raises_and_stays_inside(text: str, w: int, h: int, fmt: str) -> None:
    box = parse_box(text, w, h, fmt)
    assert box is None or (0 <= box[0] < box[2] <= w and 0 <= box[1] < box[3] <= h)
