"""The reference model's grounding stage: ground examples, the staged pre-training (`init`), its records,
the grounding figures of `measure`, and the CLI's options."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_cli

from vopd_bench import grounding
from vopd_bench import reference as R
from vopd_bench.reference import build as tiny
from vopd_bench.reference.pretrain import PretrainConfig, pretrain, pretrain_example
from vopd_bench.tasks import get_task

SMALL = {
    "vocab_size": 400, "text_hidden": 64, "text_heads": 2, "text_kv_heads": 1, "text_layers": 1, "text_mlp": 128,
    "vision_depth": 1, "vision_hidden": 32, "vision_mlp": 64, "vision_heads": 2,
}
FAST = {"batch_size": 2, "eval_n": 3, "eval_every": 2, "warmup": 1, "threads": 1, "tiny": SMALL}


@pytest.fixture(scope="module")
def data() -> R.TaskData:
    return R.TaskData(get_task("synth"))


def test_ground_example_is_the_grounding_prompt_answered_with_the_gold_box(data: R.TaskData):
    for item in data.items(5, 1234):
        ex = data.ground_example(item)
        assert R.BOX_FORMAT == grounding.format_for(model="vopd-tiny") == "qwen2.5-vl"
        assert ex.prompt == grounding.grounding_prompt(item.question, "qwen2.5-vl")
        assert ex.image.size == (224, 224) and ex.box == item.boxes[0]
        assert ex.response.startswith('{"bbox_2d": [') and ex.response.endswith("]}")
        parsed = grounding.parse_box(ex.response, 224, 224, "qwen2.5-vl")
        assert parsed == [round(v) for v in item.boxes[0]]
        assert R.box_scores(parsed, item.boxes[0]) == {"iou": 1.0, "centre_hit": 1.0}


def test_box_scores():
    gold = [10.0, 10.0, 30.0, 30.0]
    assert R.box_scores(None, gold) == {"iou": 0.0, "centre_hit": 0.0}
    half = R.box_scores([20, 10, 40, 30], gold)  # overlaps half: IoU 1/3, centre (30, 20) on the edge
    assert half["iou"] == pytest.approx(1 / 3) and half["centre_hit"] == 1.0
    assert R.box_scores([0, 0, 60, 60], gold) == {"iou": pytest.approx(400 / 3600), "centre_hit": 1.0}
    assert R.box_scores([40, 40, 50, 50], gold)["centre_hit"] == 0.0


def test_ground_source_draws_clutter_in_its_range(data: R.TaskData):
    spec = R.pretrain_task()
    pdata = R.TaskData(spec)
    cfg = PretrainConfig(mix={"ground": 1.0}, ground_clutter=[300.0, 300.0], ground_target_size=[20, 22])
    rng = np.random.default_rng(0)
    examples = [pretrain_example(pdata, rng, cfg) for _ in range(4)]
    assert all(e.category == "ground" and e.response.startswith('{"bbox_2d"') for e in examples)
    sizes = [e.box[2] - e.box[0] for e in examples]  # type: ignore[index]
    assert all(10 <= s <= 24 for s in sizes), sizes
    # no clutter at all: the scene is plain apart from the target
    plain = pretrain_example(pdata, rng, PretrainConfig(mix={"ground": 1.0}, ground_clutter=[0.0, 0.0]))
    dense = examples[0]
    def n_colours(im):
        return len(np.unique(np.asarray(im).reshape(-1, 3), axis=0))

    assert n_colours(plain.image) < n_colours(dense.image)


def test_config_validation_and_recipes():
    with pytest.raises(ValueError, match="ground_clutter"):
        PretrainConfig(ground_clutter=[500.0, 100.0])
    with pytest.raises(ValueError, match="ground_target_size"):
        PretrainConfig(ground_target_size=[2, 10])
    with pytest.raises(ValueError, match="mix"):
        PretrainConfig(mix={"grounding": 1.0})
    with pytest.raises(ValueError, match="recipe"):
        PretrainConfig.recipe("nope")
    g = PretrainConfig.recipe("ground", init="x", steps=7)
    assert g.mix["ground"] > 0 and g.steps == 7 and g.init == "x" and g.lr == R.RECIPES["ground"]["lr"]
    # the first stage's recipe is unchanged: no grounding, no init
    base = PretrainConfig.recipe("base")
    assert base.init is None and "ground" not in base.mix and base.to_dict() == PretrainConfig().to_dict()


@pytest.mark.slow
def test_two_stages_record_both_configs_and_logs(tmp_path: Path):
    """Stage 1 from random weights, stage 2 continues it with the ground source: training.json lists both
    stages (the first exactly as its own training.json), the log keeps stage 1's lines, and stage 2's
    evaluations carry the grounding figures."""
    s1 = pretrain(PretrainConfig(steps=2, **FAST), tmp_path / "s1")
    info1 = json.loads((s1 / "training.json").read_text())
    assert "stages" not in info1 and "stage" not in (s1 / "pretrain_log.jsonl").read_text()
    cfg2 = PretrainConfig.recipe("ground", init=str(s1), steps=2, **FAST)
    s2 = pretrain(cfg2, tmp_path / "s2")
    info2 = json.loads((s2 / "training.json").read_text())
    assert [st["config"] for st in info2["stages"]] == [info1["config"], cfg2.to_dict()]
    assert info2["stages"][0]["final_eval"] == info1["final_eval"] and info2["config"]["init"] == str(s1)
    assert len(info2["init_sha256"]) == 64
    lines = [json.loads(x) for x in (s2 / "pretrain_log.jsonl").read_text().splitlines()]
    assert [(x["stage"], x["step"]) for x in lines] == [(1, 0), (1, 2), (2, 0), (2, 2)]
    g = lines[-1]["ground"]
    assert set(g) == {"parse_rate", "mean_iou", "iou50", "centre_hit"} and all(0 <= v <= 1 for v in g.values())
    assert 0 <= lines[-1]["task_full"] <= 1
    # the tokenizer and processor are the initial checkpoint's, unchanged
    assert (s2 / "tokenizer.json").read_text() == (s1 / "tokenizer.json").read_text()
    # a third stage lists all three; it changes the text decoder's rotary base, which the saved model carries
    s3 = pretrain(PretrainConfig.recipe("ground", init=str(s2), steps=1, rope_theta=10.0, **FAST), tmp_path / "s3")
    info3 = json.loads((s3 / "training.json").read_text())
    assert len(info3["stages"]) == 3 and info3["stages"][:2] == info2["stages"]
    assert info3["stages"][2]["config"]["rope_theta"] == 10.0
    assert json.loads((s2 / "config.json").read_text())["text_config"]["rope_parameters"]["rope_theta"] == 10000.0
    model, proc = tiny.load(s3)
    assert model.config.text_config.rope_parameters["rope_theta"] == 10.0
    inv_freq = model.model.language_model.rotary_emb.inv_freq
    head_dim = model.config.text_config.head_dim
    assert torch.allclose(inv_freq, 10.0 ** (-torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
    stats = R.grounding_stats(model, proc, R.TaskData(get_task("synth")), R.TaskData(get_task("synth")).items(3, 1))
    assert stats["n"] == 3 and 0 <= stats["self_zoom_accuracy"] <= 1 and 0 <= stats["parse_rate"] <= 1


def test_init_must_be_a_pretrained_checkpoint(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    from vopd_bench.errors import UserError

    with pytest.raises(UserError, match="training.json"):
        pretrain(PretrainConfig(init=str(tmp_path / "empty"), steps=1), tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["--recipe", "ground"],  # needs --init
        ["--mix", "crop=oops"],
        ["--mix", "grounding=1"],
        ["--ground-clutter", "480"],
        ["--ground-clutter", "500,100"],
        ["--recipe", "ground", "--init", "/nonexistent/vopd-tiny"],
        ["--rope-theta", "10"],  # needs --init
        ["--recipe", "ground", "--init", "vopd_bench/reference/vopd-tiny", "--rope-theta", "0.5"],
    ],
)
def test_cli_rejects_bad_options(tmp_path: Path, args: list[str]):
    assert run_cli(["reference", "pretrain", "--out", str(tmp_path / "o"), *args]) == 2
    assert not (tmp_path / "o").exists()


def test_cli_measure_rejects_bad_seeds():
    assert run_cli(["reference", "measure", "--seeds", "a,b"]) == 2
    assert run_cli(["reference", "measure", "--ground-n", "-1"]) == 2
