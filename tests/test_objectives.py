"""Objectives and teachers are registered classes: a new one is a class + this kind of test, and the config's
choices, the trainer's loss and its train_log columns follow the registries without another edit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vopd_bench.errors import UserError
from vopd_bench.train import objectives as objectives_mod
from vopd_bench.train import teacher as teacher_mod
from vopd_bench.train.config import OPDConfig, load_config

FIXTURES = Path(__file__).parent / "fixtures" / "recipes"


def test_registries_name_the_config_choices() -> None:
    assert {"distill", "supervised", "anchor"} <= set(objectives_mod.OBJECTIVES)
    assert objectives_mod.main_objectives() == ("distill", "supervised")  # anchor is an added term
    assert set(teacher_mod.TEACHERS) == {"ema", "frozen", "live"}
    with pytest.raises(UserError, match="'objective': must be one of distill, supervised"):
        load_config(None, ["objective=anchor"])


@pytest.mark.parametrize("recipe", ["demo", "paper_qwen3.5_4b"])
def test_shipped_recipes_resolve_as_before_the_defaults_moved(recipe: str) -> None:
    """Recipes list only what differs from the (paper's) defaults; the resolved config is the one the full
    recipes gave (tests/fixtures/recipes/*.json, written from the code before the change)."""
    resolved = load_config(recipe).to_dict()
    resolved.pop("recipe")
    expected = json.loads((FIXTURES / f"{recipe}.json").read_text())
    assert json.dumps(resolved) == json.dumps(expected)  # values, types (1.0 vs 1) and key order


def test_crop_overrides_are_typed() -> None:
    assert load_config(None, ["crop.margin=1"]).crop == {"margin": 1.0}
    for override, message in [
        ("crop.zoom=2", "'crop': unknown field(s) zoom; known: margin, min_side, upscale, resize_to"),
        ("crop.margin=wide", "config key 'crop.margin': expected float"),
        ("crop.min_side=1.5", "config key 'crop.min_side': expected int"),
        ("crop.margin=-1", "'crop': crop margin must be >= 0"),
    ]:
        with pytest.raises(UserError) as e:
            load_config(None, [override])
        assert message in str(e.value) and "\n" not in str(e.value)


@pytest.fixture
def registries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations inside a test stay inside it."""
    monkeypatch.setattr(objectives_mod, "OBJECTIVES", dict(objectives_mod.OBJECTIVES))
    monkeypatch.setattr(teacher_mod, "TEACHERS", dict(teacher_mod.TEACHERS))


def test_a_new_objective_and_teacher_train_a_step(registries: None, tiny_model: str, synth_small: Path,
                                                  tmp_path: Path) -> None:
    from vopd_bench.train.objectives import MicroBatch, Objective, register
    from vopd_bench.train.teacher import LiveTeacher, register_teacher
    from vopd_bench.train.trainer import Trainer

    @register_teacher
    class CountingTeacher(LiveTeacher):
        """The live teacher, counting its updates."""

        name = "counting"
        updates = 0

        def update(self) -> None:
            self.updates += 1

    @register
    class LogitMSE(Objective):
        """Mean squared distance between the student's (full) and the teacher's (crop) log-probabilities."""

        name = "logit_mse"
        token_means = ("student_entropy",)

        def __init__(self, cfg: OPDConfig, teacher: teacher_mod.Teacher) -> None:
            super().__init__(cfg, teacher)
            self.teacher = teacher

        def prepare(self, batch: MicroBatch) -> None:
            batch.scored(self.teacher)

        def loss(self, batch: MicroBatch) -> tuple[torch.Tensor, dict[str, float]]:
            s, t = batch.student("full").log_softmax(-1), batch.scored(self.teacher).log_softmax(-1)
            loss = ((s - t).pow(2).mean(-1) * batch.mask).sum() / batch.num_tokens
            return loss, {"mse": float(loss.detach()), "student_entropy": self.student_entropy(batch)}

    cfg = load_config(None, [
        f"model={tiny_model}", f"train_data={synth_small}", "objective=logit_mse", "teacher=counting",
        "anchor_weight=0.5", f"eval_data={{synth: {synth_small}}}", "holdout_tasks=[]", "steps=1",
        "prompts_per_step=2", "rollouts_per_prompt=2", "max_new_tokens=4", "micro_batch_size=2", "lr=1e-3",
        "warmup_steps=0", "threads=1", "progress=false", f"out={tmp_path / 'run'}",
    ])
    trainer = Trainer(cfg)
    assert [type(o).__name__ for o in trainer.objectives] == ["LogitMSE", "Anchor"]
    before = [p.detach().clone() for p in trainer.policy.trainable]
    rec = trainer.train_step(0)
    assert list(rec)[:5] == ["step", "loss", "mse", "anchor", "student_entropy"]  # losses, then token means
    assert rec["loss"] == pytest.approx(rec["mse"] + 0.5 * rec["anchor"], abs=2e-6)
    assert "jsd" not in rec and "teacher_entropy" not in rec
    assert trainer.teacher.updates == 1 and rec["grad_norm"] > 0
    assert any(not torch.equal(b, p) for b, p in zip(before, trainer.policy.trainable))
