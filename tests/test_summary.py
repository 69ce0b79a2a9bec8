"""The printed summary of `vopd-bench eval`: a per-category table for tasks with several categories,
and a warning for a task or category the model answers no better than chance, where the gap means nothing.
Real runs of the reference model on small generated data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_cli

from vopd_bench.results import chance_level
from vopd_bench.schema import SampleRecord
from vopd_bench.summary import chance_warnings


def _eval(tiny_model: str, data: Path, out: Path) -> dict:
    assert run_cli(["eval", "--model", tiny_model, "--task", "synth", "--data", str(data), "--out", str(out), "-q"]) == 0
    return json.loads((out / "results.json").read_text())


def test_summary_flags_a_category_the_model_was_never_taught(tiny_model, tmp_path, capsys):
    # seed 7, measured here: colour crop 100.0 [82.4, 100.0] (18 items), shape crop 36.4 [19.7, 57.0] (22 items)
    data = tmp_path / "data"
    assert run_cli(["synth", "--out", str(data), "--n", "40", "--seed", "7", "--categories", "colour,shape"]) == 0
    capsys.readouterr()
    res = _eval(tiny_model, data, tmp_path / "run")
    out = capsys.readouterr().out
    synth = res["tasks"]["synth"]
    assert synth["chance"] == 0.25 and {c: b["chance"] for c, b in synth["categories"].items()} == {
        "colour": 0.25, "shape": 0.25}
    assert "Per category" in out and all(f"│ synth │ {c}" in out for c in ("colour", "shape"))
    lines = chance_warnings(res)
    assert len(lines) == 1 and lines[0].startswith("synth, category shape: crop accuracy")
    assert "is not above chance (25.0%, n=22)" in lines[0] and "gap is not meaningful" in lines[0]
    assert "warning: synth, category shape: crop accuracy" in out


def test_summary_of_the_synth_task_defaults_has_no_warning(tiny_model, tmp_path, capsys):
    data = tmp_path / "data"
    assert run_cli(["synth", "--out", str(data), "--n", "24"]) == 0  # the task's own items: colour only
    res = _eval(tiny_model, data, tmp_path / "run")
    out = capsys.readouterr().out
    assert list(res["tasks"]["synth"]["categories"]) == ["colour"]
    assert chance_warnings(res) == [] and "warning" not in out and "Per category" not in out


def _rec(answer: str, parsed: str | None, **kw) -> SampleRecord:
    return SampleRecord(id="i", task="t", view="full", answer=answer, parsed=parsed, correct=answer == parsed, **kw)


def test_chance_level_of_records():
    assert chance_level([_rec("yes", "no"), _rec("No", None)]) == 0.5
    assert chance_level([_rec("A", "A", n_options=4), _rec("B", "A", n_options=2)]) == pytest.approx(0.375)
    # records without n_options: the furthest letter seen (gold or parsed) bounds the number of options
    assert chance_level([_rec("A", "C"), _rec("B", None)]) == pytest.approx(1 / 3)
    assert chance_level([_rec("a red car", "red car")]) is None and chance_level([]) is None
