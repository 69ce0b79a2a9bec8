"""The synthetic fine-detail generator: config validation, determinism, on-disk format, atomic writes,
the cache, and that boxes, options and answers describe the image."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from vopd_bench import synth
from vopd_bench.items import LETTERS
from vopd_bench.loaders.jsonl import read_items
from vopd_bench.synth import SynthConfig


def test_config_defaults_by_kind_and_validation():
    assert SynthConfig().target_size == (16, 28) and SynthConfig().clutter == 480.0
    assert SynthConfig(kind="holdout").clutter == 0.0 and SynthConfig(kind="holdout").target_size[0] >= 40
    assert SynthConfig(target_size=[12, 14]).target_size == (12, 14)  # YAML lists become tuples
    assert "clutter" in SynthConfig.help() and SynthConfig.help()["kind"]
    for bad in (
        {"kind": "nope"},
        {"target_size": (20, 10)},
        {"target_size": (2, 10)},
        {"clutter": -1},
        {"categories": ("colour", "size")},
        {"categories": ()},
        {"n_options": 5},  # more than the 4 answers of a category
        {"n_options": 1},
        {"palette_clutter": 1.5},
    ):
        with pytest.raises(ValueError):
            SynthConfig(**bad)


def test_sample_is_deterministic_and_consistent():
    cfg = SynthConfig()
    im1, row1 = synth.sample(np.random.default_rng(5), cfg)
    im2, row2 = synth.sample(np.random.default_rng(5), cfg)
    assert row1 == row2 and np.array_equal(np.asarray(im1), np.asarray(im2))
    _, row3 = synth.sample(np.random.default_rng(6), cfg)
    assert row3 != row1
    for seed in range(30):
        im, row = synth.sample(np.random.default_rng(seed), cfg)
        assert im.size == (224, 224)
        opts, letter, meta = row["options"], row["answer"], row["meta"]
        assert len(opts) == 4 and len(set(opts)) == 4 and letter in LETTERS[:4]
        assert opts[LETTERS.index(letter)] == meta["value"]
        assert row["question"] == synth.QUESTIONS[row["category"]]
        assert all(o in synth.VALUES[row["category"]] for o in opts)
        assert re.fullmatch(r"It is .+\. Answer: [ABCD]", meta["response"])
        assert meta["response"].endswith(f"Answer: {letter}") and meta["value"] in meta["response"]
        ((x1, y1, x2, y2),) = row["boxes"]
        assert 0 <= x1 < x2 <= 224 and 0 <= y1 < y2 <= 224
        assert 12 <= max(x2 - x1, y2 - y1) <= 40  # a 16-28 px target (digits include their stroke)


def test_options_fixed_order_by_default_or_shuffled():
    for seed in range(20):
        _, row = synth.sample(np.random.default_rng(seed), SynthConfig(clutter=0))
        # one fixed order per category: the letter follows from the answer
        assert row["options"] == list(synth.VALUES[row["category"]])
    orders = set()
    for seed in range(20):
        _, row = synth.sample(np.random.default_rng(seed), SynthConfig(clutter=0, shuffle_options=True))
        assert sorted(row["options"]) == sorted(synth.VALUES[row["category"]])
        assert row["options"][LETTERS.index(row["answer"])] == row["meta"]["value"]
        orders.add(tuple(row["options"]))
    assert len(orders) > 5
    _, row = synth.sample(np.random.default_rng(0), SynthConfig(clutter=0, n_options=3))
    assert len(row["options"]) == 3 and row["meta"]["value"] in row["options"]


def test_box_is_tight_around_the_target_on_plain_scenes():
    cfg = SynthConfig(kind="plain")
    for seed in range(20):
        im, row = synth.sample(np.random.default_rng(seed), cfg)
        a = np.asarray(im).astype(int)
        bg = a[0, 0]
        ys, xs = np.nonzero(np.abs(a - bg).sum(-1) > 30)
        assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == pytest.approx(row["boxes"][0], abs=1)
        # the target is drawn in its named colour
        colour = np.array(synth.COLOURS[row["meta"]["colour"]])
        assert (np.abs(a[ys, xs] - colour).sum(-1) < 10).mean() > 0.5


def test_clutter_density_and_categories():
    busy = synth.sample(np.random.default_rng(0), SynthConfig(clutter=160))[0]
    calm = synth.sample(np.random.default_rng(0), SynthConfig(clutter=20))[0]
    edges = [np.abs(np.diff(np.asarray(x).astype(int), axis=1)).sum() for x in (busy, calm)]
    assert edges[0] > 2 * edges[1]
    calm_cfg = SynthConfig(clutter=0)
    cats = [synth.sample(np.random.default_rng(s), calm_cfg)[1]["category"] for s in range(90)]
    assert set(cats) == {"colour", "shape", "digit"}
    digits = SynthConfig(clutter=0, categories=("digit",))
    only = {synth.sample(np.random.default_rng(s), digits)[1]["category"] for s in range(10)}
    assert only == {"digit"}
    letters = [synth.sample(np.random.default_rng(s), calm_cfg)[1]["answer"] for s in range(400)]
    assert all(60 < letters.count(L) < 140 for L in "ABCD")  # answers balanced over letters


def test_generate_writes_the_jsonl_layout(tmp_path: Path):
    out = synth.generate(tmp_path / "ds", SynthConfig(), n=6, seed=3)
    rows = [json.loads(x) for x in (out / "items.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and len({r["id"] for r in rows}) == 6
    for r in rows:
        assert set(r) >= {"id", "image", "question", "options", "answer", "boxes", "category", "meta"}
        assert (out / r["image"]).is_file() and not Path(r["image"]).is_absolute()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["seed"] == 3 and meta["n"] == 6 and meta["config"]["kind"] == "clutter"
    assert meta["version"] == synth.GENERATOR_VERSION and sum(meta["categories"].values()) == 6
    items = read_items(out / "items.jsonl", "synth")
    assert items[0].load_image().size == (224, 224) and items[0].boxes == rows[0]["boxes"]
    # item i does not depend on n, and matches the in-memory generator
    im, row = synth.sample(synth.item_rng(3, 4), SynthConfig())
    assert rows[4]["question"] == row["question"] and rows[4]["boxes"] == row["boxes"]
    assert np.array_equal(np.asarray(items[4].load_image()), np.asarray(im))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_generate_is_atomic_when_interrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    real = synth.sample
    calls = {"n": 0}

    def failing(rng, cfg):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(rng, cfg)

    monkeypatch.setattr(synth, "sample", failing)
    with pytest.raises(KeyboardInterrupt):
        synth.generate(tmp_path / "ds", SynthConfig(), n=5, seed=0)
    assert list(tmp_path.iterdir()) == []  # neither a half dataset nor a temp folder


def test_generate_replaces_a_dataset_but_not_other_folders(tmp_path: Path):
    out = synth.generate(tmp_path / "ds", SynthConfig(), n=2, seed=0)
    synth.generate(out, SynthConfig(), n=3, seed=1)
    assert len((out / "items.jsonl").read_text().splitlines()) == 3
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        synth.generate(other, SynthConfig(), n=1, seed=0)
    assert (other / "notes.txt").read_text() == "mine"


def test_ensure_dataset_caches_by_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("VOPD_BENCH_CACHE", str(tmp_path))
    a = synth.ensure_dataset(n=3, seed=1)
    assert a.parent == tmp_path / "synth" and (a / "items.jsonl").is_file()
    monkeypatch.setattr(synth, "generate", lambda *a, **k: pytest.fail("regenerated a cached dataset"))
    assert synth.ensure_dataset(n=3, seed=1) == a
    monkeypatch.undo()
    monkeypatch.setenv("VOPD_BENCH_CACHE", str(tmp_path))
    assert synth.ensure_dataset(n=3, seed=2) != a
    assert synth.ensure_dataset(n=3, seed=1, clutter=20) != a
    assert synth.ensure_dataset(kind="holdout", n=2, seed=1, target_size=[40, 100]).is_dir()


def test_task_specs_load_synthetic_items(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from vopd_bench.tasks import get_task

    monkeypatch.setenv("VOPD_BENCH_CACHE", str(tmp_path))
    spec = get_task("synth")
    assert spec.loader == "synth" and set(spec.views) == {"full", "crop", "masked", "random_crop"}
    spec.options = {**spec.options, "n": 4}
    items = spec.load_items()
    assert len(items) == 4 and items[0].options and items[0].boxes
    prompt = spec.prompt.render(items[0])
    assert items[0].question in prompt and "D. " in prompt
    hold = get_task("synth_holdout")
    assert hold.options["kind"] == "holdout" and hold.views == ["full"]


def test_cli_defaults_are_the_tasks(tmp_path: Path):
    """`vopd-bench synth` without options writes what the `synth` task evaluates: its defaults are the task
    spec's options (colour only: the reference model was never taught shape or digit)."""
    from helpers import run_cli

    from vopd_bench.tasks import get_task

    for kind, task in (("clutter", "synth"), ("holdout", "synth_holdout")):
        out = tmp_path / kind
        assert run_cli(["synth", "--out", str(out), "--n", "6", "--kind", kind]) == 0
        opts = get_task(task).options
        meta = json.loads((out / "meta.json").read_text())
        assert meta["config"] == SynthConfig(**{k: v for k, v in opts.items() if k not in ("n", "seed")}).to_dict()
        assert meta["seed"] == opts["seed"] and synth.task_options(kind)["n"] == opts["n"]
    rows = [json.loads(x) for x in (tmp_path / "clutter" / "items.jsonl").read_text().splitlines()]
    assert {r["category"] for r in rows} == {"colour"}
    spec = get_task("synth")
    spec.options = {**spec.options, "n": 6}
    assert [(r["id"], r["question"], r["answer"]) for r in rows] == [
        (it.id, it.question, it.answer) for it in spec.load_items()]  # the task's own items, one for one
    # options given still win; plain scenes take the task's categories with their own size and clutter
    assert run_cli(["synth", "--out", str(tmp_path / "all"), "--n", "30", "--categories", "colour,shape,digit"]) == 0
    assert set(json.loads((tmp_path / "all" / "meta.json").read_text())["categories"]) == set(synth.CATEGORIES)
    plain = SynthConfig(**{k: v for k, v in synth.task_options("plain").items() if k not in ("n", "seed")})
    assert plain.categories == ("colour",) and plain.clutter == 0.0 and plain.target_size == (10, 100)
