"""The decoded-image cache: same pixels as decoding, bounded, failures not cached, one decode per item."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_dataset
from PIL import Image

from vopd_bench.evaluate import EvalConfig, Evaluator
from vopd_bench.items import ImageCache, ImageError, Item
from vopd_bench.protocol import load_spec, render


def _item(i: int, src, boxes=None) -> Item:
    return Item(id=f"it-{i}", task="t", image=src, question="q", answer="A", boxes=boxes or [])


def _png(path, size=(40, 30), colour=(10, 200, 30)):
    Image.new("RGB", size, colour).save(path)
    return str(path)


class Counting:
    """An image source (a zero-argument callable) counting how often it is decoded."""

    def __init__(self, im: Image.Image) -> None:
        self.im, self.calls = im, 0

    def __call__(self) -> Image.Image:
        self.calls += 1
        return self.im


def test_cached_image_has_the_decoded_pixels_and_is_a_private_copy(tmp_path):
    it = _item(0, _png(tmp_path / "a.png"))
    cache = ImageCache()
    via = cache.through(it)
    a, b = via.load_image(), via.load_image()
    ref = it.load_image()
    assert np.array_equal(np.asarray(a), np.asarray(ref)) and a.mode == ref.mode == "RGB"
    assert (cache.misses, cache.hits) == (1, 1)
    a.paste((0, 0, 0), (0, 0, 10, 10))  # a caller scribbling on its image leaves the cache alone
    assert np.array_equal(np.asarray(cache.load(it)), np.asarray(ref)) and a is not b


def test_items_sharing_an_image_file_decode_it_once(tmp_path, monkeypatch):
    path = _png(tmp_path / "a.png")
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    cache = ImageCache()
    for i in range(3):
        cache.load(_item(i, path))
    assert len(opened) == 1 and cache.hits == 2


def test_cache_is_bounded_by_bytes_in_lru_order():
    srcs = [Counting(Image.new("RGB", (10, 10), (i, i, i))) for i in range(4)]
    items = [_item(i, s) for i, s in enumerate(srcs)]
    cache = ImageCache(max_bytes=2 * 4 * 10 * 10)  # two 10x10 RGB images
    cache.load(items[0]), cache.load(items[1]), cache.load(items[0])  # 0 is now the most recent
    cache.load(items[2])  # evicts 1, the least recently used
    assert cache.n_images == 2 and cache.nbytes <= cache.max_bytes
    cache.load(items[0])
    cache.load(items[1])
    assert [s.calls for s in srcs[:3]] == [1, 2, 1]
    big = _item(9, Counting(Image.new("RGB", (20, 20))))  # larger than the whole budget: never kept
    cache.load(big), cache.load(big)
    assert big.image.calls == 2 and cache.nbytes <= cache.max_bytes
    cache.clear()
    assert cache.n_images == 0 and cache.nbytes == 0


def test_undecodable_image_raises_as_before_and_is_not_cached(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    it = _item(0, str(bad), boxes=[[1, 1, 5, 5]])
    with pytest.raises(ImageError) as direct:
        it.load_image()
    cache = ImageCache()
    for _ in range(2):
        with pytest.raises(ImageError) as cached:
            cache.through(it).load_image()
        assert str(cached.value) == str(direct.value)
    assert cache.misses == 2 and cache.n_images == 0
    spec = load_spec("synth")
    for view in ("full", "crop"):  # the rendered error (what the record stores) is unchanged
        assert render(spec, cache.through(it), view).error == render(spec, it, view).error is not None


@pytest.mark.parametrize("view", ["full", "crop", "masked", "random_crop"])
def test_views_rendered_through_the_cache_are_pixel_identical(tmp_path, view):
    data, spec_file = make_dataset(tmp_path / "fx", n=3)
    spec = load_spec(str(spec_file))
    cache = ImageCache()
    for it in spec.load_items(data):
        want, got = render(spec, it, view, seed=1), render(spec, cache.through(it), view, seed=1)
        assert got.region == want.region
        assert np.array_equal(np.asarray(got.image), np.asarray(want.image))


class FakeBackend:
    name = "fake"

    def generate(self, requests, gen):
        from vopd_bench.backends import Response

        return [Response(text="A") for _ in requests]

    def describe(self):
        return {"model": "fake", "backend": "fake", "fingerprint": "fake"}


@pytest.mark.parametrize("cache_mb", [256, 0])
def test_eval_decodes_each_image_once_across_views(tmp_path, monkeypatch, cache_mb):
    data, spec_file = make_dataset(tmp_path / "fx", n=6)
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    cfg = EvalConfig(tasks=[str(spec_file)], data={str(spec_file): str(data)}, out=str(tmp_path / "run"),
                     progress=False, image_cache_mb=cache_mb)
    ev = Evaluator(cfg, FakeBackend())
    ev.run_all()
    assert ev.views["fx"] == ["full", "crop"]
    assert len(opened) == (6 if cache_mb else 12)
    if cache_mb:
        assert ev.images.n_images == 0  # freed once the task is done
