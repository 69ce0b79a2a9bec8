"""`vopd-bench compare`: the 2×2 item transitions between two runs (counts add up, ids are the moved items)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import run_cli

from vopd_bench.cli import cli
from vopd_bench.compare import compare_runs, transition
from vopd_bench.rundir import RunDir
from vopd_bench.schema import CurvePoint, RunConfig, SampleRecord, TaskResult, TrainRunConfig, ViewStats
from vopd_bench.stats import mcnemar_exact
from vopd_bench.train.rundir import TrainRun


def _run(path: Path, outcomes: dict[str, dict[str, list[bool | None]]]) -> Path:
    """An eval run dir: task → view → per-item correct (None = an error record)."""
    rd = RunDir(path)
    rd.check_or_write_config(RunConfig(views={t: list(v) for t, v in outcomes.items()}), overwrite=False)
    for task, views in outcomes.items():
        for view, cs in views.items():
            rd.write_samples(task, view, [
                SampleRecord(id=f"i{k}", task=task, view=view, correct=bool(c), error=None if c is not None else "boom")
                for k, c in enumerate(cs)
            ])
    return path


def test_counts_add_up_and_ids_are_the_moved_items() -> None:
    a = {f"i{k}": {"correct": c} for k, c in enumerate([1, 1, 0, 0, 1, 0, 0])}
    b = {f"i{k}": {"correct": c} for k, c in enumerate([1, 0, 1, 0, 1, 1, 1])}
    b["i9"] = {"correct": True}  # only in B
    a["i5"]["error"] = "timeout"  # an error: left out
    t = transition("synth", "full", a, b)
    assert (t.both_right, t.fixed, t.broken, t.both_wrong) == (2, 2, 1, 1)
    assert t.fixed_ids == ["i2", "i6"] and t.broken_ids == ["i1"]
    assert t.errors == 1 and t.only_in_one == 1
    assert t.n + t.errors + t.only_in_one == len(set(a) | set(b))
    assert t.p_value == mcnemar_exact(2, 1)
    assert t.net_points == pytest.approx(100 * (2 - 1) / 6)


def test_compare_two_eval_runs_through_the_cli(tmp_path: Path) -> None:
    before = [False] * 6 + [True] * 4
    after = [True] * 5 + [False] + [True] * 3 + [False]  # fixed i0..i4, broken i9
    a = _run(tmp_path / "a", {"synth": {"full": before, "crop": [True] * 10}})
    b = _run(tmp_path / "b", {"synth": {"full": after, "crop": [True] * 9 + [None]}})
    tables = {t.view: t for t in compare_runs(a, b)}
    assert set(tables) == {"full", "crop"}
    full = tables["full"]
    assert (full.fixed, full.broken, full.both_right, full.both_wrong) == (5, 1, 3, 1)
    assert tables["crop"].n == 9 and tables["crop"].errors == 1

    out = tmp_path / "cmp.json"
    r = CliRunner().invoke(cli, ["compare", str(a), str(b), "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert "synth/full fixed: i0, i1, i2, i3, i4" in r.output and "synth/full broken: i9" in r.output
    saved = {t["view"]: t for t in json.loads(out.read_text())["tables"]}
    assert saved["full"]["n"] == 10 and saved["full"]["p_value"] == pytest.approx(mcnemar_exact(5, 1))


def test_compare_a_training_run_first_vs_last(tmp_path: Path) -> None:
    run = TrainRun(tmp_path / "train")
    run.path.mkdir()
    run.write_config(TrainRunConfig())
    for step, cs in [(0, [False, False, True]), (25, [True, False, True]), (50, [True, True, False])]:
        d = _run(run.step_dir(step), {"synth": {"full": cs}})
        run.append(CurvePoint(step=step, eval_dir=str(d), tasks={"synth": TaskResult(views={"full": ViewStats(n=3)})}))
    r = CliRunner().invoke(cli, ["compare", str(run.path)])
    assert r.exit_code == 0, r.output
    assert "A = step 0" in r.output and "B = step 50" in r.output
    assert "synth/full fixed: i0, i1" in r.output and "synth/full broken: i2" in r.output
    r = CliRunner().invoke(cli, ["compare", str(run.path), "--steps", "25", "50"])
    assert r.exit_code == 0 and "synth/full fixed: i1" in r.output
    assert run_cli(["compare", str(run.path), "--steps", "0", "7"]) == 2


def test_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _run(tmp_path / "a", {"synth": {"full": [True]}})
    b = _run(tmp_path / "b", {"other": {"full": [True]}})
    for args, message in [
        ([str(a), str(tmp_path / "missing")], "run directory not found"),
        ([str(a), str(b)], "share no task"),
        ([str(a)], "is not a training run"),
        ([str(tmp_path)] * 3, "got 3 paths"),
    ]:
        assert run_cli(["compare", *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
