"""curve.jsonl as `schema.CurvePoint`: written and read only by `TrainRun`; lines of earlier releases keep loading."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from vopd_bench.schema import Closure, CurvePoint, GapStats, TaskResult, ViewStats
from vopd_bench.train.curve import Scores, append_point
from vopd_bench.train.rundir import TrainRun, read_curve

# step 0 and step 25 of a curve written before points had a version, roles or a closure (the demo's, 2026-11)
OLD = [
    '{"step": 0, "checkpoint": "/work/main/vopd_bench/reference/vopd-tiny", "eval_dir": "runs/demo/train/evals/step-0", '
    '"tasks": {"synth": {"views": {"full": {"n": 200, "accuracy": 0.5, "ci_low": 0.43136085960389187, "ci_high": '
    '0.5686391403961082, "parse_failure_rate": 0.0}, "crop": {"n": 200, "accuracy": 0.985, "ci_low": 0.9568342712073097, '
    '"ci_high": 0.9948857622067417, "parse_failure_rate": 0.0}}, "gap": {"value": 48.5, "ci_low": 41.0, "ci_high": '
    '55.50000000000001, "p_value": 3.155443620884047e-28, "n_pairs": 200}}, "synth_holdout": {"views": {"full": {"n": 200, '
    '"accuracy": 1.0, "ci_low": 0.9811546736227335, "ci_high": 1.0, "parse_failure_rate": 0.0}}}}, "train": {}, '
    '"eval_s": 51.67}',
    '{"step": 25, "checkpoint": "runs/demo/train/checkpoints/step-25", "eval_dir": "runs/demo/train/evals/step-25", '
    '"tasks": {"synth": {"views": {"full": {"n": 200, "accuracy": 0.685, "ci_low": 0.6176504391426966, "ci_high": '
    '0.745376790097715, "parse_failure_rate": 0.0}, "crop": {"n": 200, "accuracy": 0.975, "ci_low": 0.942821659593358, '
    '"ci_high": 0.9892752803482386, "parse_failure_rate": 0.0}}, "gap": {"value": 28.999999999999993, "ci_low": 22.5, '
    '"ci_high": 35.5, "p_value": 8.474124180146703e-16, "n_pairs": 200}}, "synth_holdout": {"views": {"full": {"n": 200, '
    '"accuracy": 1.0, "ci_low": 0.9811546736227335, "ci_high": 1.0, "parse_failure_rate": 0.0}}}}, "train": {"steps": 25, '
    '"loss": 0.15972, "lr": 0.0006590316575006244}, "eval_s": 23.74}',
]


def test_an_old_curve_loads_with_inferred_roles(tmp_path: Path) -> None:
    (tmp_path / "curve.jsonl").write_text("\n".join(OLD) + "\n")
    first, last = TrainRun(tmp_path).curve()
    assert isinstance(first, CurvePoint) and (first.step, last.step) == (0, 25)
    assert isinstance(first.tasks["synth"], TaskResult) and first.tasks["synth"].views["crop"].accuracy == 0.985
    assert last.tasks["synth"].gap is not None and last.tasks["synth"].gap.n_pairs == 200
    assert last.tasks["synth"].closure is None and not last.roles and last.train["steps"] == 25
    assert (last.role("synth"), last.role("synth_holdout")) == ("eval", "holdout")  # from the views


def test_new_lines_are_the_old_ones_plus_version_and_roles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the trainer appends today (a dict point, `score_checkpoint`'s `Scores` as its tasks) is written as the
    same line as before, plus `roles` and `version`; the closure is added to the later point."""
    monkeypatch.chdir(tmp_path)  # no eval dir of the recorded names exists
    path = tmp_path / "curve.jsonl"
    for line in OLD:
        point = json.loads(line)
        point["tasks"] = Scores(point["tasks"], {"synth": "eval", "synth_holdout": "holdout"})
        assert append_point(path, point)
    assert not append_point(path, json.loads(OLD[0]))  # a step is never written twice
    written = [json.loads(x) for x in path.read_text().splitlines()]
    for old, new in zip(map(json.loads, OLD), written, strict=True):
        assert set(new) == {*old, "roles", "version"} and new["roles"] == {"synth": "eval", "synth_holdout": "holdout"}
        closure = new["tasks"]["synth"].pop("closure", None)
        assert {k: new[k] for k in old} == old
    assert closure == {"value": (0.685 - 0.5) / (0.985 - 0.5), "ci_low": None, "ci_high": None, "n_items": None,
                       "gap_reduction": (48.5 - 28.999999999999993) / 48.5, "base_step": 0}  # no eval dirs: no CI
    assert read_curve(path)[1].tasks["synth"].closure == Closure(**closure)


def test_recorded_roles_win_over_the_views(tmp_path: Path) -> None:
    from vopd_bench.report.curve import curve_tasks

    view = ViewStats(n=10, accuracy=0.5, ci_low=0.2, ci_high=0.8, parse_failure_rate=0.0)
    tasks = {"scene_holdout": TaskResult(views={"full": view, "crop": view}, gap=GapStats(value=0.0, n_pairs=10)),
             "plain": TaskResult(views={"full": view})}
    run = TrainRun(tmp_path)
    run.append(CurvePoint(step=0, tasks=tasks, roles={"scene_holdout": "eval", "plain": "holdout"}))
    curve = run.curve()
    assert curve_tasks(curve) == (["scene_holdout"], ["plain"])  # not guessed from the name


def test_every_field_of_a_point_survives_the_file(tmp_path: Path) -> None:
    """A field added to `CurvePoint` (or to what a curve line keeps of its tasks) without its writer and reader
    fails here."""
    view = ViewStats(n=10, accuracy=0.5, ci_low=0.2, ci_high=0.8, parse_failure_rate=0.1)
    gap = GapStats(value=40.0, ci_low=10.0, ci_high=60.0, p_value=0.01, n_pairs=10)
    closure = Closure(value=0.5, ci_low=0.1, ci_high=0.9, n_items=10, gap_reduction=0.4, base_step=0)
    point = CurvePoint(step=5, checkpoint="ck/step-5", eval_dir="evals/step-5",
                       tasks={"synth": TaskResult(views={"full": view, "crop": view}, gap=gap, closure=closure)},
                       roles={"synth": "eval"}, train={"loss": 0.5}, eval_s=1.5, warnings=["w"], version=1,
                       extra={"future": {"kept": True}})
    for f in dataclasses.fields(CurvePoint):
        default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        assert f.name == "version" or getattr(point, f.name) != default, f"set {f.name} in this test"
    run = TrainRun(tmp_path)
    run.append(point)
    assert run.curve() == [point]


def test_truncation_keeps_lines_as_written(tmp_path: Path) -> None:
    path = tmp_path / "curve.jsonl"
    newer = {**json.loads(OLD[0]), "from_a_newer_release": [1, 2]}
    path.write_text(json.dumps(newer) + "\n" + OLD[1] + "\n" + OLD[1] + "\n" + '{"step": 30, "ta')
    run = TrainRun(tmp_path)
    run.truncate_after(25)
    assert [json.loads(x) for x in path.read_text().splitlines()] == [newer, json.loads(OLD[1])]
    run.truncate_after(0)
    assert [json.loads(x) for x in path.read_text().splitlines()] == [newer]
    assert run.curve()[0].extra == {"from_a_newer_release": [1, 2]}


def test_eval_dir_of_a_moved_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evals" / "step-25").mkdir(parents=True)
    point = CurvePoint.from_dict(json.loads(OLD[1]))  # recorded as runs/demo/train/evals/step-25
    assert TrainRun(tmp_path).eval_dir(point) == tmp_path / "evals" / "step-25"
    assert TrainRun(tmp_path).eval_dir(CurvePoint.from_dict(json.loads(OLD[0]))) is None
