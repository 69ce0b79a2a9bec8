"""Crop geometry (hand-computed) and every view."""

import json

import numpy as np
import pytest
from PIL import Image

from vopd_bench.items import Item, clean_boxes
from vopd_bench.views import CropParams, NoBoxError, region_box, render_view


def test_region_box_hand_computed():
    p = CropParams(margin=0.5, min_side=10, upscale=2.0)
    # box 100..140 x 50..70 (40x20): +20 / +10 each side
    assert region_box([[100, 50, 140, 70]], 400, 300, p) == [80, 40, 160, 80]
    # union of two boxes: 10..30 x 10..20 and 50..60 x 40..50 -> 10..60 x 10..50 (50x40) + 25/20
    assert region_box([[10, 10, 30, 20], [50, 40, 60, 50]], 400, 300, p) == [0, 0, 85, 70]


def test_region_box_min_side_and_edges():
    p = CropParams(margin=0.0, min_side=64, upscale=1.0)
    # 10x10 box at the centre widened to 64x64 around its centre (105, 105)
    assert region_box([[100, 100, 110, 110]], 400, 300, p) == [73, 73, 137, 137]
    # near the top-left corner: shifted inside, size kept
    assert region_box([[0, 0, 10, 10]], 400, 300, p) == [0, 0, 64, 64]
    # near the bottom-right corner
    assert region_box([[390, 290, 400, 300]], 400, 300, p) == [336, 236, 400, 300]
    # min_side larger than the image: the whole image
    assert region_box([[5, 5, 10, 10]], 50, 40, p) == [0, 0, 50, 40]


def test_crop_params_validation():
    with pytest.raises(ValueError, match="margin"):
        CropParams(margin=-1)
    with pytest.raises(ValueError, match="upscale"):
        CropParams(upscale=0)


def test_clean_boxes_clips_and_drops():
    out = clean_boxes([[-10, 5, 50, 60], [10, 10, 10, 30], [500, 500, 600, 600], [30, 40, 20, 10]], 100, 80, "t")
    assert out == [[0.0, 5.0, 50.0, 60.0], [20.0, 10.0, 30.0, 40.0]]


def _item(boxes):
    im = Image.new("RGB", (200, 100), (255, 255, 255))
    arr = np.asarray(im).copy()
    arr[40:60, 120:140] = (255, 0, 0)  # the red target
    return Item(id="x1", task="t", image=Image.fromarray(arr), question="q", answer="A", boxes=boxes)


def test_views_pixels():
    it = _item([[120, 40, 140, 60]])
    p = CropParams(margin=0.5, min_side=8, upscale=2.0)
    full, reg = render_view(it, "full", p)
    assert full.size == (200, 100) and reg is None
    crop, reg = render_view(it, "crop", p)
    assert reg == [110, 30, 150, 70]
    assert crop.size == (80, 80)  # 40x40 region, upscaled 2x
    c = np.asarray(crop)
    assert tuple(c[40, 40]) == (255, 0, 0)  # the target is at the centre of the crop
    masked, _ = render_view(it, "masked", p)
    m = np.asarray(masked)
    assert not ((m[..., 0] == 255) & (m[..., 1] == 0)).any()  # target painted over
    rnd, rreg = render_view(it, "random_crop", p)
    assert rnd.size == crop.size
    assert rreg[2] <= 110 or rreg[0] >= 150 or rreg[3] <= 30 or rreg[1] >= 70  # disjoint from the region
    assert render_view(it, "random_crop", p) == (rnd, rreg) or np.array_equal(np.asarray(render_view(it, "random_crop", p)[0]), np.asarray(rnd))
    p2 = CropParams(margin=0.5, min_side=8, resize_to=224)
    assert render_view(it, "crop", p2)[0].size == (224, 224)


def test_region_views_need_boxes():
    it = _item([])
    with pytest.raises(NoBoxError):
        render_view(it, "crop", CropParams())
    it.crop_image = Image.new("RGB", (32, 32), (0, 0, 255))
    img, reg = render_view(it, "crop", CropParams())  # a shipped crop image serves the crop view
    assert img.size == (32, 32) and reg is None
    with pytest.raises(NoBoxError):
        render_view(it, "masked", CropParams())
    with pytest.raises(ValueError, match="unknown view"):
        render_view(it, "zoom", CropParams())


def test_a_view_is_one_registered_function(tmp_path):
    """The interface a new view implements: registered by name, skipped for boxless items, seeded per item."""
    from helpers import make_dataset

    from vopd_bench.items import Item
    from vopd_bench.views import CropParams, NoBoxError, register_view, render_view, view_names

    @register_view("test_grey")
    def grey(im, boxes, p, rng):
        return im.convert("L").convert("RGB"), [int(v) for v in boxes[0]]

    try:
        assert "test_grey" in view_names()
        data, _ = make_dataset(tmp_path, n=2)
        row = json.loads((data / "items.jsonl").read_text().splitlines()[0])
        it = Item(id=row["id"], task="t", image=str(data / row["image"]), question="q", answer="A",
                  boxes=row["boxes"])
        img, region = render_view(it, "test_grey", CropParams())
        assert region == [int(v) for v in row["boxes"][0]]
        px = img.getpixel((0, 0))
        assert px[0] == px[1] == px[2]
        it.boxes = []
        with pytest.raises(NoBoxError):
            render_view(it, "test_grey", CropParams())
    finally:
        from vopd_bench import views

        views._VIEWS.pop("test_grey", None)


def _noise_item(tmp_path, w=200, h=160, box=(60, 40, 100, 80)):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    path = tmp_path / "noise.png"
    Image.fromarray(arr).save(path)
    return Item(id="n1", task="t", image=str(path), question="q", options=None, answer="a", boxes=[list(box)]), arr


def test_decomposition_views_change_only_what_they_claim(tmp_path):
    """crop_native = crop's pixels without the zoom; blur_surround keeps the region's pixels exactly and blurs
    the rest; red_box changes only the outline ring and keeps the size."""
    from vopd_bench.views import DECOMPOSITION, outline_width

    item, arr = _noise_item(tmp_path)
    p = CropParams(margin=0.5, min_side=16, upscale=2.0)
    crop, reg = render_view(item, "crop", p)
    native, reg_n = render_view(item, "crop_native", p)
    assert reg_n == reg == [40, 20, 120, 100]
    assert native.size == (80, 80) and crop.size == (160, 160)
    assert np.array_equal(np.asarray(native), arr[20:100, 40:120])

    blurred, reg_b = render_view(item, "blur_surround", p)
    b = np.asarray(blurred).astype(int)
    assert reg_b == reg and blurred.size == (200, 160)
    assert np.array_equal(b[20:100, 40:120], arr[20:100, 40:120])  # region untouched
    outside = np.ones(arr.shape[:2], bool)
    outside[20:100, 40:120] = False
    assert b[outside].std() < 0.5 * arr[outside].astype(int).std()  # noise outside smoothed away

    boxed, reg_r = render_view(item, "red_box", p)
    r = np.asarray(boxed).astype(int)
    w = outline_width(200, 160)
    assert reg_r == [60, 40, 100, 80] and boxed.size == (200, 160)
    changed = np.any(r != arr, axis=-1)
    ring = np.zeros_like(changed)
    ring[40 - w : 80 + w, 60 - w : 100 + w] = True
    ring[40:80, 60:100] = False
    assert changed.any() and not changed[~ring].any()  # only the outline ring differs
    assert (r[ring] == [255, 0, 0]).all()
    assert DECOMPOSITION == ("full", "red_box", "blur_surround", "crop_native", "crop")


def test_decomposition_views_need_a_box(tmp_path):
    item, _ = _noise_item(tmp_path)
    item.boxes = []
    for view in ("crop_native", "red_box", "blur_surround"):
        with pytest.raises(NoBoxError):
            render_view(item, view, CropParams())
