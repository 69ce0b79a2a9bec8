"""Benchmark loaders on miniature copies of each published layout (tests/fixtures_bench.py): parsed
boxes, crop pixels, scoring, categories, HR-Bench cycles and clustering, bad input, the Hub path,
and an offline end-to-end CLI run over every task."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from pathlib import Path

import fixtures_bench as fb
import numpy as np
import pytest
from helpers import records, run_cli
from PIL import Image

from vopd_bench.backends import Response
from vopd_bench.errors import UserError
from vopd_bench.evaluate import EvalConfig, run_eval
from vopd_bench.items import ImageError
from vopd_bench.scoring import extract_choice, extract_yesno, score
from vopd_bench.stats import cluster_mean_ci, wilson
from vopd_bench.tasks import SCORERS, all_specs, get_task
from vopd_bench.views import NoBoxError, region_box, render_view

TASKS = sorted(fb.WRITERS)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bench")
    return {name: write(root / name) for name, write in fb.WRITERS.items()}


def load(name: str, path: Path):
    return get_task(name).load_items(path)


class FakeBackend:
    """Answers every request with `reply(request)`; no model."""

    name = "fake"

    def __init__(self, reply=lambda req: "A"):
        self.reply = reply

    def generate(self, requests, gen):
        return [Response(text=self.reply(r)) for r in requests]

    def describe(self):
        return {"model": "fake", "backend": "fake", "fingerprint": "fake"}


def evaluate(tmp_path: Path, task: str, path: Path, reply=lambda req: "A", **kw):
    cfg = EvalConfig(tasks=[task], data={task: str(path)}, out=str(tmp_path / "run"), progress=False, **kw)
    return run_eval(cfg, backend=FakeBackend(reply))


def near(pixel, colour, tol: int = 40) -> bool:
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel, colour, strict=True))


def has_colour(arr: np.ndarray, colour, tol: int = 30) -> bool:
    return bool((np.abs(arr.astype(int) - np.array(colour)) <= tol).all(axis=-1).any())


# ------------------------------------------------------------------ per-benchmark parsing


def test_vstar_boxes_options_and_categories(data):
    items = load("vstar", data["vstar"])
    assert [it.id for it in items] == ["0", "1", "2", "3", "4", "5"]
    first = items[0]
    assert first.question == "What is the colour of the cup?"
    assert first.options == ["red", "blue", "green", "white"]  # no trailing instruction in "white"
    assert [it.answer for it in items] == fb.VSTAR_GOLD and first.category == "direct_attributes"
    assert first.boxes == [[float(v) for v in fb.target_box(0)]]  # xywh -> xyxy
    assert items[3].boxes == []  # empty bbox list: no box
    pos = items[4]
    assert pos.category == "relative_position" and pos.options == ["left", "right"]
    assert pos.boxes == [[float(v) for v in fb.target_box(4)], [60.0, 40.0, 90.0, 70.0]]
    assert all("Answer with" not in o for it in items for o in it.options)


def test_vstar_without_label_takes_the_json_first_option(tmp_path):
    items = load("vstar", fb.vstar(tmp_path, with_label=False))
    assert [it.answer for it in items] == fb.VSTAR_GOLD


def test_vstar_instruction_does_not_leak_even_on_the_option_line():
    from vopd_bench.loaders.vstar import split_text

    q, opts = split_text("Is the cup left of the (small) plate? (A) left (B) right Answer with the option's letter.")
    assert q == "Is the cup left of the (small) plate?" and opts == ["left", "right"]
    q, opts = split_text("What colour?\n(A) red\n(B) blue\nReply with one letter.")
    assert opts == ["red", "blue"]


@pytest.mark.parametrize("task", ["vstar", "treebench", "viscot_textvqa"])
def test_crop_view_pixels_come_from_the_box(data, task):
    spec = get_task(task)
    it = load(task, data[task])[0]
    full = it.load_image()
    crop, region = render_view(it, "crop", spec.crop)
    assert region == region_box(it.boxes, full.width, full.height, spec.crop)
    x1, y1, x2, y2 = region
    b = it.boxes[0]
    assert x1 <= b[0] and y1 <= b[1] and b[2] <= x2 and b[3] <= y2
    arr = np.asarray(crop)
    cx = ((b[0] + b[2]) / 2 - x1) * crop.width / (x2 - x1)  # the target's centre, in crop pixels
    cy = ((b[1] + b[3]) / 2 - y1) * crop.height / (y2 - y1)
    assert near(arr[int(cy), int(cx)], fb.TARGET)
    assert not has_colour(arr, fb.DISTRACTOR)  # the distractor lies outside the region
    assert has_colour(np.asarray(full), fb.DISTRACTOR)
    same = np.asarray(full.crop(tuple(region)).resize(crop.size, Image.BICUBIC)).astype(int)
    assert np.abs(same - arr.astype(int)).max() <= 1


def test_treebench_options_boxes_and_five_options(data):
    items = load("treebench", data["treebench"])
    assert [it.id for it in items[:2]] == ["1000", "1001"]
    assert items[0].options == ["a cup", "a bowl", "a plate", "a vase"]
    assert items[1].options[-1] == "a jar" and items[1].answer == "E"
    assert items[0].boxes == [[float(v) for v in fb.target_box(0)]]
    assert {it.category for it in items} == {"Perception/Attributes", "Reasoning/Ordering"}
    assert score("choice", "E", items[1].answer, items[1].options) == ("E", True)


def test_treebench_options_from_the_multichoice_text(tmp_path):
    items = load("treebench", fb.treebench(tmp_path, letter_columns=False))
    assert items[1].options == ["a cup", "a bowl", "a plate", "a vase", "a jar"]
    assert items[1].answer == "E"


def test_viscot_joins_answers_and_keeps_float_boxes(data):
    items = load("viscot_textvqa", data["viscot_textvqa"])
    assert len(items) == 5
    it = items[2]
    assert it.question == "what is written on sign 2?" and it.answer == "Stop 2" and it.options is None
    x1, y1, x2, y2 = fb.target_box(2)
    assert it.boxes == [[x1 + 0.25, y1 + 0.5, x2 - 0.25, float(y2)]]
    assert it.load_image().size == (fb.W, fb.H)
    assert score("exact", "stop 2.", it.answer, None) == ("stop 2", True)


def test_zoombench_crop_view_is_the_shipped_crop(data, tmp_path):
    items = load("zoombench", data["zoombench"])
    assert [it.id for it in items] == ["zb0", "zb1", "zb2", "zb3"]
    assert items[0].question == "How many red squares are there? (0)" and items[0].answer == "one"
    assert items[0].category == "Fine-Grained Counting" and items[0].boxes == []
    crop, region = render_view(items[0], "crop", get_task("zoombench").crop)
    assert region is None and crop.size == (112, 96) and near(crop.getpixel((56, 48)), fb.TARGET)
    assert items[3].crop_image is None
    with pytest.raises(NoBoxError):
        render_view(items[3], "crop", get_task("zoombench").crop)
    res = evaluate(tmp_path, "zoombench", data["zoombench"], reply=lambda r: "one")
    t = res["tasks"]["zoombench"]
    assert t["views"]["full"]["n"] == 4 and t["views"]["crop"]["n"] == 3 and t["views"]["crop"]["skipped_no_box"] == 1
    assert t["views"]["full"]["accuracy"] == pytest.approx(0.5)  # "one" matches rows 0 and 2 ("1" does not)


def test_zoombench_query_response_columns(tmp_path):
    items = load("zoombench", fb.zoombench(tmp_path, names=("query", "response")))
    assert items[1].question.startswith("How many") and items[1].answer == "1"


def test_mme_realworld_five_options_and_categories(data):
    items = load("mme_realworld", data["mme_realworld"])
    assert items[0].options == ["red", "blue", "green", "white", "The image does not feature the object"]
    assert [it.answer for it in items] == ["A", "B", "C", "D", "E"]
    assert items[0].category == "Perception/Monitoring" and items[4].category == "Reasoning/Remote Sensing"
    assert items[0].boxes == [] and items[0].load_image().size == (fb.W, fb.H)
    prompt = get_task("mme_realworld").prompt.render(items[4])
    assert "(E) The image does not feature the object" in prompt and prompt.endswith("The best answer is:")
    assert score("choice", "The best answer is: E", "E", items[4].options) == ("E", True)


def test_mmvp_pairs_and_label_corrections(data, tmp_path):
    items = load("mmvp", data["mmvp"])
    assert [it.id for it in items] == ["1", "2", "99", "100"]
    assert items[0].options == ["Long tusks", "Short tusks"]
    assert [it.answer for it in items] == ["A", "B", "B", "A"]  # 99 and 100 corrected as lmms-eval does
    assert [it.group for it in items] == ["pair0", "pair0", "pair49", "pair49"]
    assert items[2].load_image().size == (fb.W, fb.H)
    spec = get_task("mmvp")
    spec.options = {**spec.options, "fix_labels": False}
    assert [it.answer for it in spec.load_items(data["mmvp"])] == ["A", "B", "A", "B"]


def test_cvbench_both_files_answers_and_sources(data):
    items = load("cvbench", data["cvbench"])
    assert [it.id for it in items] == ["2D-0", "2D-1", "3D-2", "3D-3"]
    assert [it.answer for it in items] == ["A", "B", "A", "B"]
    assert [it.category for it in items] == ["ADE20K", "COCO", "Omni3D", "Omni3D"]
    assert items[0].options == ["1", "2", "3", "0"]


def test_mmstar_options_split_out_of_the_question(data):
    items = load("mmstar", data["mmstar"])
    assert items[0].question == "Which object is red?"
    assert items[0].options == ["a cup", "a car, a bike", "a dog", "none"]
    assert [it.answer for it in items] == ["A", "B", "C", "D"]


def test_pope_layouts_and_yesno(data, tmp_path):
    items = load("pope", data["pope"])
    assert [(it.answer, it.category) for it in items][:2] == [("yes", "adversarial"), ("no", "popular")]
    assert score("yesno", "Yes, there is.", items[0].answer, None) == ("yes", True)
    orig = load("pope", fb.pope_original(tmp_path))
    assert [it.id for it in orig] == ["adversarial-1", "adversarial-2", "random-1", "random-2"]
    assert orig[1].answer == "no" and orig[0].load_image().size == (fb.W, fb.H)


# ------------------------------------------------------------------ HR-Bench: cycles and clustering


def test_hrbench_groups_cycle_average_and_clustered_ci(data, tmp_path):
    items = load("hrbench4k", data["hrbench4k"])
    assert len(items) == 12 and len({it.group for it in items}) == 3
    assert all(sum(j.group == it.group for j in items) == 4 for it in items)
    assert all(it.options[ord(it.answer) - 65] == "red" for it in items)
    boxes = tmp_path / "boxes.jsonl"
    boxes.write_text("".join(json.dumps({"id": it.id, "boxes": [fb.target_box(int(it.id) // 4)]}) + "\n" for it in items))
    res = evaluate(tmp_path, "hrbench4k", data["hrbench4k"], views=["full", "crop"], boxes=str(boxes))
    t = res["tasks"]["hrbench4k"]
    recs = records(tmp_path / "run", "hrbench4k", "full")
    cycle = {it.id: it.meta["cycle"] for it in items}
    per_cycle = [np.mean([r["correct"] for r in recs if cycle[r["id"]] == c]) for c in sorted(set(cycle.values()))]
    assert t["views"]["full"]["accuracy"] == pytest.approx(np.mean(per_cycle)) == pytest.approx(0.25)
    assert set(t["categories"]) == {"single", "cross"}
    correct = [float(r["correct"]) for r in recs]
    groups = [r["group"] for r in recs]
    assert (t["views"]["full"]["ci_low"], t["views"]["full"]["ci_high"]) == pytest.approx(cluster_mean_ci(correct, groups))
    assert (t["views"]["full"]["ci_low"], t["views"]["full"]["ci_high"]) != pytest.approx(wilson(3, 12))
    assert t["gap"]["clustered"] is True and t["gap"]["n_pairs"] == 12


# ------------------------------------------------------------------ bad input


def _drop_column(tsv: Path, column: str) -> None:
    import csv

    csv.field_size_limit(2**31 - 1)
    with tsv.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    for r in rows:
        del r[column]
    fb.write_tsv(tsv, rows)


@pytest.mark.parametrize(
    ("task", "breaks", "message"),
    [
        ("vstar", lambda d: (d / "test_questions.jsonl").unlink(), "missing test_questions.jsonl"),
        ("vstar", lambda d: (d / "direct_attributes" / "sa_100.json").unlink(), "missing sa_100.json"),
        ("treebench", lambda d: _drop_column(d / "TreeBench.tsv", "target_instances"), "missing column 'target_instances'"),
        ("hrbench4k", lambda d: _drop_column(d / "hr_bench_4k.tsv", "cycle_category"), "missing column 'cycle_category'"),
        ("viscot_textvqa", lambda d: (d / "viscot_benchmark" / "benchmark" / "textvqa.json").unlink(), "missing benchmark/textvqa.json"),
        ("zoombench", lambda d: (d / "data" / "test.parquet").unlink(), "no data/test*.parquet"),
        ("mmvp", lambda d: (d / "Questions.csv").write_text("Index,Question,Options\n1,q,(a) x (b) y\n"), "missing column 'Correct Answer'"),
        ("mme_realworld", lambda d: fb.write_parquet(d / "data" / "train-00000-of-00001.parquet", [{"index": 1, "question": "q"}]),
         "missing column 'multi-choice options'"),
    ],
)
def test_wrong_layout_is_a_one_line_error_naming_what_is_missing(tmp_path, task, breaks, message):
    path = fb.WRITERS[task](tmp_path / "d")
    breaks(path)
    with pytest.raises(UserError, match=re.escape(message)) as e:
        load(task, path)
    assert "\n" not in str(e.value) and str(tmp_path / "d") in str(e.value)


def test_wrong_layout_through_the_cli_exits_2_with_one_line(tmp_path, capsys):
    path = fb.treebench(tmp_path / "d")
    _drop_column(path / "TreeBench.tsv", "answer")
    rc = run_cli(["eval", "--model", "unused", "--task", "treebench", "--data", str(path), "--out", str(tmp_path / "r"), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "missing column 'answer'" in err[0] and "TreeBench.tsv" in err[0]


@pytest.mark.parametrize("bad", ["[[1, 2, 3]]", "[[1, 2, 3, 4", "__import__('os').system('true')", "[['a', 'b', 'c', 'd']]"])
def test_box_string_that_does_not_parse(tmp_path, bad):
    path = fb.treebench(tmp_path, bad_boxes=bad)
    with pytest.raises(UserError, match=r"TreeBench.tsv: row 1 \(index 1000\): column 'target_instances'"):
        load("treebench", path)


def test_undecodable_image_is_an_item_error_and_the_run_goes_on(tmp_path):
    path = fb.treebench(tmp_path / "d", bad_image=True)
    items = load("treebench", path)  # lazy: loading does not decode
    with pytest.raises(ImageError):
        items[2].load_image()
    res = evaluate(tmp_path, "treebench", path)
    recs = {r["id"]: r for r in records(tmp_path / "run", "treebench", "full")}
    assert recs["1002"]["error"] and "decode" in recs["1002"]["error"]
    assert sum(bool(r["error"]) for r in recs.values()) == 1
    assert res["tasks"]["treebench"]["views"]["full"]["n"] == 5 and res["tasks"]["treebench"]["views"]["full"]["errors"] == 1


def test_box_outside_the_image_is_clipped_with_a_warning(tmp_path, caplog):
    path = fb.treebench(tmp_path / "d", outside=True)
    assert load("treebench", path)[0].boxes == [[300.0, 220.0, 360.0, 300.0]]
    with caplog.at_level(logging.WARNING):
        evaluate(tmp_path, "treebench", path, views=["full", "crop"], limit=1)
    assert any("extends outside" in r.getMessage() and "clipped" in r.getMessage() for r in caplog.records)
    crop_box = records(tmp_path / "run", "treebench", "crop")[0]["crop_box"]
    assert 0 <= crop_box[0] < crop_box[2] <= fb.W and 0 <= crop_box[1] < crop_box[3] <= fb.H


def test_crop_for_a_task_without_boxes_says_use_boxes(data, tmp_path, capsys):
    with pytest.raises(UserError, match="--boxes"):
        evaluate(tmp_path, "mme_realworld", data["mme_realworld"], views=["full", "crop"])
    rc = run_cli(["eval", "--model", "unused", "--task", "hrbench4k", "--data", str(data["hrbench4k"]),
                  "--views", "full,crop", "--out", str(tmp_path / "r"), "-q"])
    assert rc == 2 and "--boxes" in capsys.readouterr().err


def test_viscot_without_data_says_pass_data():
    with pytest.raises(UserError, match="--data"):
        get_task("viscot_textvqa").load_items(None)


# ------------------------------------------------------------------ the Hub path (no network)


def test_hub_without_huggingface_hub_says_pass_data(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(UserError, match=r"treebench: .*huggingface_hub.*--data PATH"):
        get_task("treebench").load_items(None)


def test_hub_download_failure_says_pass_data(monkeypatch):
    import huggingface_hub

    def offline(*a, **kw):
        raise OSError("We have no connection\nsecond line")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(UserError, match=r"cannot download HaochenWang/TreeBench .*OSError: We have no connection\); .*--data") as e:
        get_task("treebench").load_items(None)
    assert "\n" not in str(e.value)


def test_hub_snapshot_is_read_like_data(monkeypatch, data):
    import huggingface_hub

    seen = {}

    def snapshot(repo_id, repo_type, allow_patterns, revision):
        seen.update(repo_id=repo_id, repo_type=repo_type, patterns=allow_patterns)
        return str(data["hrbench8k"])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    items = get_task("hrbench8k").load_items(None)
    assert len(items) == 12
    assert seen == {"repo_id": "DreamMr/HR-Bench", "repo_type": "dataset", "patterns": ["hr_bench_8k.tsv"]}


# ------------------------------------------------------------------ answer extraction traps


FOUR = ["red", "Blue", "green", "white"]
FIVE = ["red", "blue", "green", "white", "none of these"]


@pytest.mark.parametrize(
    ("response", "options", "expected"),
    [
        ("Blue", FOUR, "B"),  # the option text "Blue" is option B here
        ("Blue", ["red", "green", "blue", "white"], "C"),  # "Blue" is option C, never the letter B
        ("Blue", ["red", "green", "yellow", "white"], None),  # not an option, not a letter
        ("Blue.", ["red", "green", "blue", "white"], "C"),
        ("B", ["red", "green", "blue", "white"], "B"),
        ("Definitely the green one.", ["red", "green", "blue", "white"], "B"),  # "D" of "Definitely" is no answer
        ("Clearly it is white.", ["red", "green", "blue", "white"], "D"),
        ("A cat sits on the mat.", ["red", "green", "blue", "white"], None),
        ("Because the cup is red, I pick C.", ["red", "green", "blue", "white"], "C"),
        ("E", FIVE, "E"),
        ("(E)", FIVE, "E"),
        ("The best answer is: E", FIVE, "E"),
        ("E", ["red", "green", "blue", "white"], None),
        ("Each square is red.", FIVE, "A"),  # "E" of "Each" is no answer; "red" is option A
    ],
)
def test_answer_extraction_traps(response, options, expected):
    assert extract_choice(response, options) == expected


def test_yesno_and_exact_traps():
    assert extract_yesno("Yes.") == "yes" and extract_yesno("No, there is not.") == "no"
    assert extract_yesno("Yes and no.") is None and extract_yesno("Nothing to see") is None
    assert score("exact", "The Stop sign.", "stop sign", None) == ("stop sign", True)
    assert score("exact", "", "stop", None) == (None, False)


# ------------------------------------------------------------------ specs and `vopd-bench tasks`


def test_specs_fill_the_tasks_table_and_match_the_loaders(data):
    specs = all_specs()
    for name in TASKS:
        s = specs[name]
        assert (s.hub_id or s.source) and s.source and s.size and s.size > 0 and s.box_source and s.scorer in SCORERS
        items = s.load_items(data[name])
        has_region = any(it.boxes or it.crop_image is not None for it in items)
        assert ("crop" in s.views) == has_region, name
        assert s.views[0] == "full"
    assert specs["vstar"].size == 191 and specs["treebench"].size == 405 and specs["hrbench4k"].size == 800
    assert specs["pope"].scorer == "yesno" and specs["viscot_textvqa"].scorer == "exact"


def test_tasks_command_lists_every_task(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    assert run_cli(["tasks"]) == 0
    out = capsys.readouterr().out
    for name in [*TASKS, "mme_realworld_cn"]:
        assert name in out
    assert "craigwu/vstar_bench" in out and "23609" in out


# ------------------------------------------------------------------ end to end, offline, every task


@pytest.fixture(scope="module")
def e2e(data, tiny_model, tmp_path_factory):
    """One `vopd-bench eval` over all tasks (one model load): --limit 4 --max-new-tokens 4, offline."""
    out = tmp_path_factory.mktemp("e2e") / "run"
    args = ["eval", "--model", tiny_model, "--out", str(out), "--limit", "4", "--max-new-tokens", "4", "--max-pixels", "12544", "-q"]
    for name in TASKS:
        args += ["--task", name, "--data", f"{name}={data[name]}"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        rc = run_cli(args)
    return rc, out


@pytest.mark.parametrize("task", TASKS)
def test_eval_cli_end_to_end(e2e, task):
    rc, out = e2e
    assert rc == 0
    t = json.loads((out / "results.json").read_text())["tasks"][task]
    assert t["views"]["full"]["n"] == 4 and t["views"]["full"]["errors"] == 0
    assert len(records(out, task, "full")) == 4
    if "crop" in get_task(task).views:
        crop = records(out, task, "crop")
        assert crop and all(r["error"] is None for r in crop)
    assert os.path.isfile(out / "config.json")
