"""`report_to`: a real (tiny) training run logs to TensorBoard and to W&B (offline), read back from the files they
wrote and compared with train_log.jsonl and curve.jsonl. The same run checks the training side of the Python API
(`vopd_bench.train`, `load_curve`, `load_run(dir, step=)`)."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pytest

import vopd_bench
from vopd_bench.errors import UserError
from vopd_bench.frames import gap_from_samples
from vopd_bench.train.logging_sinks import check_report_to, point_scalars, step_scalars


def test_report_to_values_are_checked():
    assert check_report_to(["none"]) == [] and check_report_to([]) == []
    with pytest.raises(UserError, match="report_to.*'tensorbord'.*tensorboard, wandb, none"):
        check_report_to(["tensorbord"])


def test_scalars_of_a_step_and_a_point():
    rec = {"step": 3, "loss": 0.5, "jsd": 0.4, "lr": 1e-4, "example": "x", "time": {"rollout": 1.0, "optimizer": 0.5}}
    s = step_scalars(rec)
    assert s == {"train/loss": 0.5, "train/jsd": 0.4, "train/lr": 1e-4, "time/rollout": 1.0, "time/optimizer": 0.5,
                 "train/step_s": 1.5}
    point = {"step": 3, "eval_s": 2.0, "roles": {"t": "eval", "h": "holdout"},
             "tasks": {"t": {"views": {"full": {"n": 4, "accuracy": 0.5}, "crop": {"n": 4, "accuracy": 0.75}},
                             "gap": {"value": 25.0}, "closure": {"value": 0.5}},
                       "h": {"views": {"full": {"n": 4, "accuracy": 1.0}}}}}
    assert point_scalars(point) == {"eval/t/full": 50.0, "eval/t/crop": 75.0, "eval/t/gap": 25.0,
                                    "eval/t/closure": 50.0, "holdout/h/full": 100.0, "time/eval_s": 2.0}


def _wandb_history(run_dir: Path) -> list[dict]:
    """The history rows of the offline W&B run under `run_dir`, read from its .wandb file."""
    from wandb.proto import wandb_internal_pb2 as pb
    from wandb.sdk.internal import datastore

    files = glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(files) == 1, files
    ds = datastore.DataStore()
    ds.open_for_scan(files[0])
    rows = []
    while (data := ds.scan_data()) is not None:
        rec = pb.Record()
        rec.ParseFromString(data)
        if rec.WhichOneof("record_type") == "history":
            rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item})
    return rows


@pytest.mark.slow
def test_training_logs_to_tensorboard_and_wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard", reason="report_to tensorboard needs the tensorboard extra")
    pytest.importorskip("wandb", reason="report_to wandb needs the wandb extra")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")
    out = tmp_path / "tr"
    tr = vopd_bench.train("demo", out=out, steps=2, eval_every=1, eval_limit=4, prompts_per_step=4,
                          train_options={"seed": 2024, "n": 16}, report_to=["tensorboard", "wandb"], progress=False)
    assert isinstance(tr, vopd_bench.TrainingRun) and tr.steps == [0, 1, 2]
    steps = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    curve = vopd_bench.load_curve(out)
    assert sorted(set(curve["step"])) == [0, 1, 2]
    assert set(curve["role"]) == {"eval", "holdout"}

    def acc(step: int, task: str, view: str) -> float:
        row = curve[(curve.step == step) & (curve.task == task) & (curve.view == view)]
        return 100.0 * float(row["accuracy"].iloc[0])

    def gap(step: int) -> float:
        return float(curve[(curve.step == step) & (curve.task == "synth")]["gap"].iloc[0])

    # TensorBoard: its own event reader
    ea = EventAccumulator(str(out / "tensorboard"))
    ea.Reload()
    tb = {tag: {e.step: e.value for e in ea.Scalars(tag)} for tag in ea.Tags()["scalars"]}
    for rec in steps:
        assert tb["train/loss"][rec["step"]] == pytest.approx(rec["loss"], rel=1e-6)
        assert tb["train/jsd"][rec["step"]] == pytest.approx(rec["jsd"], rel=1e-6)
        assert tb["train/student_entropy"][rec["step"]] == pytest.approx(rec["student_entropy"], rel=1e-5)
        assert tb["train/lr"][rec["step"]] == pytest.approx(rec["lr"], rel=1e-6)
        assert tb["train/step_s"][rec["step"]] == pytest.approx(sum(rec["time"].values()), rel=1e-5)
    for step in (0, 1, 2):
        assert tb["eval/synth/full"][step] == pytest.approx(acc(step, "synth", "full"))
        assert tb["eval/synth/crop"][step] == pytest.approx(acc(step, "synth", "crop"))
        assert tb["holdout/synth_holdout/full"][step] == pytest.approx(acc(step, "synth_holdout", "full"))
        assert tb["eval/synth/gap"][step] == pytest.approx(gap(step))

    # W&B offline: the history records of its run file
    hist = _wandb_history(out)
    by_step: dict[int, dict] = {}
    for row in hist:
        by_step.setdefault(row["train/global_step"], {}).update(row)
    for rec in steps:
        assert by_step[rec["step"]]["train/loss"] == pytest.approx(rec["loss"])
        assert by_step[rec["step"]]["train/lr"] == pytest.approx(rec["lr"])
    for step in (0, 1, 2):
        assert by_step[step]["eval/synth/full"] == pytest.approx(acc(step, "synth", "full"))
        assert by_step[step]["eval/synth/gap"] == pytest.approx(gap(step))
        assert by_step[step]["holdout/synth_holdout/full"] == pytest.approx(acc(step, "synth_holdout", "full"))

    # the re-scoring runs load as runs; their samples recompute the curve's gap
    for step in (0, 2):
        run = vopd_bench.load_run(out, step=step)
        assert run.path.name == f"step-{step}"
        assert run.gap("synth").value == pytest.approx(gap(step))
        assert gap_from_samples(run.samples, "synth") == pytest.approx(gap(step))
    assert vopd_bench.load_run(out).path.name == "step-2"  # default: the last scored checkpoint
    with pytest.raises(UserError, match="no step 7"):
        vopd_bench.load_run(out, step=7)
