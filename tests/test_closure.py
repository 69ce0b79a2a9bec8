"""Gap closure and the collapse flag, on training runs written to disk as the trainer writes them.

The collapsed case is issue 25's: 10 steps at a too-high learning rate on 60 items took full 51.7 -> 23.3,
crop 98.3 -> 23.3 and the holdout 100 -> 21.7, so the gap went +46.7 -> +0.0 ("reduction 100%") while the
full view got worse: gap closed = (14 - 31) / (59 - 31) = -17/28. The healthy case is the demo's shape: full
100 -> 153 of 200 over crop 197 of 200, gap closed = 53/97 = 54.6%.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vopd_bench.results import task_result
from vopd_bench.runtime import read_jsonl
from vopd_bench.schema import SampleRecord
from vopd_bench.stats import gap_closure
from vopd_bench.train import checkpoint
from vopd_bench.train.curve import append_point, collapse_warnings, summarize_task
from vopd_bench.train.rundir import TrainRun, read_curve

GAP, HOLD = "synth", "synth_holdout"
# step -> (task, view) -> ids answered correctly
COLLAPSED = {0: {(GAP, "full"): range(31), (GAP, "crop"): range(59), (HOLD, "full"): range(60)},
             10: {(GAP, "full"): [*range(10), *range(40, 44)], (GAP, "crop"): range(14), (HOLD, "full"): range(13)}}
HEALTHY = {0: {(GAP, "full"): range(100), (GAP, "crop"): range(197), (HOLD, "full"): range(200)},
           50: {(GAP, "full"): range(40, 160), (GAP, "crop"): range(195), (HOLD, "full"): range(197)},
           100: {(GAP, "full"): [*range(3, 150), *range(194, 200)], (GAP, "crop"): range(198),
                 (HOLD, "full"): range(200)}}


def _records(task: str, view: str, correct: Any, n: int) -> list[dict[str, Any]]:
    """Sample records with the fields `make_record` writes."""
    ok = set(correct)
    return [{"id": f"{task}-{i}", "task": task, "view": view, "answer": "A", "category": "colour", "group": None,
             "prompt_hash": "p0", "crop_box": [0, 0, 16, 16] if view == "crop" else None,
             "response": f"Answer: {'A' if i in ok else 'B'}", "parsed": "A" if i in ok else "B", "correct": i in ok,
             "error": None, "retryable": False, "latency": 0.01, "n_tokens": 6} for i in range(n)]


def write_eval_dir(d: Path, model: str, correct: dict[tuple[str, str], Any], n: int) -> dict[str, Any]:
    """An eval run dir as `run_eval` leaves it (config, samples, results); returns its results' tasks."""
    tasks: dict[str, Any] = {}
    for task in dict.fromkeys(t for t, _ in correct):
        by_view = {v: _records(task, v, ids, n) for (t, v), ids in correct.items() if t == task}
        for v, recs in by_view.items():
            p = d / "samples" / task / f"{v}.jsonl"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("".join(json.dumps(r) + "\n" for r in recs))
        tasks[task] = task_result({v: [SampleRecord.from_dict(r) for r in rs] for v, rs in by_view.items()}).to_dict()
    (d / "config.json").write_text(json.dumps({"backend": {"backend": "hf", "model": model, "model_path": model}}))
    (d / "results.json").write_text(json.dumps({"tasks": tasks, "model": model}))
    return tasks


def write_training_run(root: Path, steps: dict[int, dict[tuple[str, str], Any]], n: int) -> Path:
    """A training dir: config.json, a checkpoint per step > 0, evals/step-N and curve.jsonl (the trainer's
    own functions append the points, warnings included)."""
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"kind": "train", "model": "vopd-tiny", "config": {
        "objective": "distill", "collapse_warn_points": 10.0, "lr": 3e-3, "teacher": "ema"}}))
    curve = root / "curve.jsonl"
    for step, correct in steps.items():
        ckpt = "/pkg/reference/vopd-tiny" if step == 0 else str(
            checkpoint.save(root / "checkpoints", step, lambda f: None, {}))
        eval_dir = root / "evals" / f"step-{step}"
        tasks = write_eval_dir(eval_dir, ckpt, correct, n)
        point = {"step": step, "checkpoint": ckpt, "eval_dir": str(eval_dir),
                 "tasks": {t: summarize_task(r) for t, r in tasks.items()}, "train": {}, "eval_s": 1.0}
        warnings = collapse_warnings(TrainRun(root).curve(), point, 10.0)
        if warnings:
            point["warnings"] = warnings
        append_point(curve, point)
    return root


def vectors(steps: dict[int, dict[tuple[str, str], Any]], n: int, last: int) -> tuple[list[float], ...]:
    def v(ids: Any) -> list[float]:
        return [float(i in set(ids)) for i in range(n)]

    return v(steps[0][(GAP, "full")]), v(steps[0][(GAP, "crop")]), v(steps[last][(GAP, "full")])


@pytest.fixture(scope="module")
def collapsed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_training_run(tmp_path_factory.mktemp("collapsed") / "train", COLLAPSED, 60)


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another model on the same items: full 40.0, crop 70.0, gap +30.0."""
    d = tmp_path_factory.mktemp("other") / "run"
    write_eval_dir(d, "org/Other-VL", {(GAP, "full"): range(24), (GAP, "crop"): range(42), (HOLD, "full"): range(57)},
                   60)
    return d


@pytest.fixture(scope="module")
def collapsed_report(collapsed: Path, other: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vopd_bench.report import build_report

    out = tmp_path_factory.mktemp("report")
    build_report([collapsed, other], out)
    return out


# ---- what the training run records ------------------------------------------------------------


def test_curve_records_closure_beside_the_relative_gap_change(collapsed: Path) -> None:
    first, last = read_curve(collapsed / "curve.jsonl")
    assert first.tasks[GAP].closure is None
    c = last.tasks[GAP].closure
    value, lo, hi = gap_closure(*vectors(COLLAPSED, 60, 10))
    assert c.value == pytest.approx(-17 / 28) == pytest.approx(value)
    assert (c.ci_low, c.ci_high) == pytest.approx((lo, hi)) and lo < -17 / 28 < hi < 0
    assert c.gap_reduction == pytest.approx(1.0)  # +46.7 -> +0.0: "100%", although the model collapsed
    assert c.n_items == 60 and c.base_step == 0
    assert last.tasks[GAP].gap.value == pytest.approx(0.0)  # existing keys unchanged
    assert last.tasks[HOLD].closure is None  # no gap, no closure
    assert any("synth/crop" in w for w in last.warnings)


# ---- the report --------------------------------------------------------------------------------


def _md_rows(text: str) -> dict[str, list[str]]:
    rows = [ln.strip("|").split(" | ") for ln in text.splitlines() if ln.startswith("| ")]
    return {r[0].strip(): [c.strip() for c in r[1:]] for r in rows}


def test_report_text_gives_the_closure_and_flags_the_collapse(collapsed_report: Path) -> None:
    md = (collapsed_report / "report.md").read_text()
    value, lo, hi = gap_closure(*vectors(COLLAPSED, 60, 10))
    ci = f"{100 * value:+.0f}% [{100 * lo:+.0f}%, {100 * hi:+.0f}%]".replace("-", "−")
    assert ci.startswith("−61% [")
    pair = next(ln for ln in md.splitlines() if ln.startswith("vopd-tiny → vopd-tiny + Vision-OPD (step 10): gap"))
    assert f"synth +46.7 → +0.0 pts† (reduction 100%; gap closed {ci})." in pair
    assert "† Collapse" in pair and "synth crop 98.3 → 23.3" in pair and "synth_holdout full 100.0 → 21.7" in pair
    assert "gap closed = (full_N − full_0) / (crop_0 − full_0)" in md  # the captions define it
    curve = next(ln for ln in md.splitlines() if "scored checkpoint(s)" in ln)
    assert f"synth gap +46.7 → +0.0 pts† (relative reduction 100%; gap closed {ci})" in curve
    assert "step 10: synth crop 98.3 → 23.3, synth_holdout full 100.0 → 21.7" in curve


def test_tables_dagger_the_collapsed_gap_and_never_bold_it(collapsed_report: Path) -> None:
    md = (collapsed_report / "tables" / "table2_crop_gap.md").read_text()
    rows = _md_rows(md)
    assert rows["vopd-tiny + Vision-OPD (step 10)"][:2] == ["23.3", "+0.0†"]  # closest to zero, yet not bold
    assert rows["Other-VL"][:2] == ["70.0", "**+30.0**"]  # the best gap among models that did not collapse
    assert rows["vopd-tiny"][:2] == ["**98.3**", "+46.7"]
    assert "\n\n† Collapse: crop or holdout accuracy fell more than 10 points below the base — vopd-tiny + " \
           "Vision-OPD (step 10): synth crop 98.3 → 23.3, synth_holdout full 100.0 → 21.7. " in md
    tex = (collapsed_report / "tables" / "table2_crop_gap.tex").read_text()
    assert "vopd-tiny + Vision-OPD (step 10) & 23.3 & +0.0$^\\dagger$ &" in tex and "\\textbf{+30.0}" in tex
    assert "{\\footnotesize $^\\dagger$ Collapse:" in tex and "98.3 $\\rightarrow$ 23.3" in tex
    import csv

    with (collapsed_report / "tables" / "table2_crop_gap.csv").open() as f:
        csv_rows = {r["model"]: r for r in csv.DictReader(f)}
    assert csv_rows["vopd-tiny + Vision-OPD (step 10)"]["synth_gap_collapse"] == "1"
    assert csv_rows["Other-VL"]["synth_gap_collapse"] == "0"
    cats = (collapsed_report / "tables" / "categories_synth.md").read_text()
    assert _md_rows(cats)["colour"][2::3] == ["+46.7", "+0.0†", "+30.0"] and "† Collapse" in cats


def test_figures_show_closure_and_dagger(collapsed: Path, other: Path) -> None:
    from vopd_bench.report.build import load_inputs
    from vopd_bench.report.curve import plot_curve
    from vopd_bench.report.figures import paper_style, plot_before_after, plot_gap_models

    inp = load_inputs([collapsed, other])
    run = inp.trainings[0]
    before, after = inp.pairs[0]
    with paper_style():
        fig, ba = plot_before_after(before, after)
        _, gm = plot_gap_models(inp.models)
        cfig, cd = plot_curve(run.curve, run.collapse_threshold)
    assert ba["closure"][0].value == pytest.approx(-17 / 28) and ba["reduction"] == [pytest.approx(1.0)]
    assert ba["ticks"][0].startswith("synth\n(gap −100%)\nclosed −61%\n[−")
    note = fig.get_supxlabel()
    assert note.startswith("closed: (full_N − full_0) / (crop_0 − full_0)") and "\n†\u00a0Collapse" in note
    assert "synth crop 98.3 → 23.3" in note.replace("\n", " ")
    assert [t.get_text() for t in fig.axes[0].texts] == ["+46.7", "±0.0†"]
    assert gm[GAP]["gap_text"] == ["+46.7", "±0.0†", "+30.0"]
    c = cd["tasks"][GAP]
    assert c["closure"].value == pytest.approx(-17 / 28) and c["note"].startswith("gap +46.7 → ±0.0 pts†\n")
    assert "closed −61% [" in c["note"] and cd["collapsed"] == {10: ["synth crop 98.3 → 23.3",
                                                                     "synth_holdout full 100.0 → 21.7"]}
    assert "†" in [t.get_text() for t in cfig.axes[1].texts]


def test_an_old_curve_without_closure_is_read_and_computed(collapsed: Path, tmp_path: Path) -> None:
    """Curves written before the closure existed: the report computes it from the eval dirs' sample files."""
    import shutil

    from vopd_bench.report.closure import curve_closure
    from vopd_bench.report.load import load_training_run

    run = tmp_path / "train"
    shutil.copytree(collapsed, run)
    lines = []
    for p in read_jsonl(run / "curve.jsonl"):
        for t in p["tasks"].values():
            t.pop("closure", None)
        p["eval_dir"] = f"elsewhere/evals/step-{p['step']}"  # the run was moved: found under run/evals/
        lines.append(json.dumps(p))
    (run / "curve.jsonl").write_text("\n".join(lines) + "\n")
    tr = load_training_run(run)
    assert tr.curve[-1].tasks[GAP].closure is None and tr.dir.eval_dir(tr.curve[-1]) == run / "evals" / "step-10"
    c = curve_closure(tr.curve[0], tr.curve[-1], GAP, tr.dir)
    assert c is not None and c.value == pytest.approx(-17 / 28) and c.ci_low is not None and c.n_items == 60
    assert tr.after is not None and tr.after.collapse


def test_healthy_run_keeps_its_real_closure(tmp_path: Path) -> None:
    """The demo's shape, with the base eval given beside the run: 54.6% closed, no dagger anywhere."""
    from vopd_bench.report import build_report

    train = write_training_run(tmp_path / "train", HEALTHY, 200)
    base = tmp_path / "base"
    write_eval_dir(base, "vopd-tiny", HEALTHY[0], 200)
    value, lo, hi = gap_closure(*vectors(HEALTHY, 200, 100))
    assert value == pytest.approx(53 / 97)
    build_report([base, train], tmp_path / "rep", labels={base: "vopd-tiny (base)"})
    md = (tmp_path / "rep" / "report.md").read_text()
    ci = f"+55% [{100 * lo:+.0f}%, {100 * hi:+.0f}%]"
    assert f"synth +48.5 → +22.5 pts (reduction 54%; gap closed {ci})." in md
    assert f"synth gap +48.5 → +22.5 pts (relative reduction 54%; gap closed {ci})" in md
    assert "†" not in md and "Collapse" not in md
    assert _md_rows((tmp_path / "rep" / "tables" / "table2_crop_gap.md").read_text())[
        "vopd-tiny + Vision-OPD (step 100)"][:2] == ["**99.0**", "**+22.5**"]


# ---- the demo's final line ----------------------------------------------------------------------


def test_demo_summary_lines(collapsed: Path, tmp_path: Path) -> None:
    from vopd_bench.demo import summary_lines

    value, lo, hi = gap_closure(*vectors(COLLAPSED, 60, 10))
    synth, hold, flag = summary_lines(collapsed)
    assert synth.startswith("synth: step 0 -> 10: full 51.7 -> 23.3  crop 98.3 -> 23.3  gap +46.7 -> +0.0 pts "
                            "(relative reduction 100%); gap closed by the full view -60.7% "
                            f"[{100 * lo:.1f}%, {100 * hi:.1f}%]; full-image gain -28.3 pts")
    assert hold == "synth_holdout: step 0 -> 10: full 100.0 -> 21.7"
    assert flag == ("COLLAPSE at step 10: synth crop 98.3 -> 23.3, synth_holdout full 100.0 -> 21.7 (more than 10 "
                    "points below step 0): the narrower gap is not a closed one")
    healthy = summary_lines(write_training_run(tmp_path / "train", HEALTHY, 200))
    assert len(healthy) == 2 and "gap closed by the full view 54.6% [" in healthy[0]


# ---- checkpoint names ---------------------------------------------------------------------------


def test_checkpoint_eval_is_named_by_its_run(collapsed: Path, tmp_path: Path) -> None:
    """`vopd-bench eval --model runs/x/checkpoints/step-10` then `report`: labelled by the run, not `step-10`."""
    from vopd_bench.report.load import load_eval_run

    ckpt = collapsed / "checkpoints" / "step-10"
    assert checkpoint.identity(ckpt) == {"step": 10, "model": "vopd-tiny", "objective": "distill"}
    d = tmp_path / "eval-ckpt"
    write_eval_dir(d, str(ckpt), COLLAPSED[10], 60)
    assert load_eval_run(d).label == "vopd-tiny + Vision-OPD (step 10)"
    # a checkpoint saved before checkpoint.json named its model: read from the run's config.json
    old = tmp_path / "old" / "checkpoints" / "step-75"
    old.mkdir(parents=True)
    (old / "checkpoint.json").write_text(json.dumps({"step": 75, "saved": "2025-01-01T00:00:00"}))
    (tmp_path / "old" / "config.json").write_text(json.dumps({"kind": "train", "model": "org/Qwen-VL",
                                                              "config": {"objective": "supervised"}}))
    write_eval_dir(tmp_path / "eval-old", str(old), COLLAPSED[10], 60)
    assert load_eval_run(tmp_path / "eval-old").label == "Qwen-VL + label-supervised (ceiling) (step 75)"
    write_eval_dir(tmp_path / "eval-plain", "org/Plain-VL", COLLAPSED[10], 60)  # not a checkpoint: its name
    assert load_eval_run(tmp_path / "eval-plain").label == "Plain-VL"


def test_two_eval_runs_are_flagged_with_the_default_threshold(collapsed: Path, tmp_path: Path) -> None:
    """`report --before BASE --after CKPT_EVAL`: the closure from both runs' items, the collapse flag at the
    trainer's default `collapse_warn_points`, and the checkpoint named by its run."""
    from vopd_bench.report.build import load_inputs
    from vopd_bench.report.markdown import pair_line

    base, after = tmp_path / "base", tmp_path / "after"
    write_eval_dir(base, "vopd-tiny", COLLAPSED[0], 60)
    write_eval_dir(after, str(collapsed / "checkpoints" / "step-10"), COLLAPSED[10], 60)
    inp = load_inputs([], pairs=[(base, after)])
    b, a = inp.pairs[0]
    assert a.label == "vopd-tiny + Vision-OPD (step 10)" and a.collapse_threshold == 10.0
    assert a.collapse == ["synth crop 98.3 → 23.3", "synth_holdout full 100.0 → 21.7"] and not b.collapse
    line = pair_line(b, a)
    assert line.startswith("vopd-tiny → vopd-tiny + Vision-OPD (step 10): gap synth +46.7 → +0.0 pts† "
                           "(reduction 100%; gap closed −61% [−")
    assert "† Collapse: crop or holdout accuracy fell more than 10 points below the base" in line


def test_bad_closure_input_is_a_one_line_error(collapsed: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from vopd_bench.cli import main
    from vopd_bench.errors import UserError
    from vopd_bench.report.build import load_inputs

    run = tmp_path / "train"
    shutil.copytree(collapsed, run)
    lines = (run / "curve.jsonl").read_text().splitlines()
    (run / "curve.jsonl").write_text(lines[0] + "\n" + lines[1].replace('"gap_reduction": 1.0', '"gap_reduction": "all"')
                                     + "\n")
    with pytest.raises(UserError, match=r"curve.jsonl: line 2: tasks.synth.closure.gap_reduction should be a number"):
        load_inputs([run])
    # the stored closure (with its CI) is used as recorded: without it the report reads the sample files
    old = [json.loads(x) for x in lines]
    for p in old:
        for t in p["tasks"].values():
            t.pop("closure", None)
    (run / "curve.jsonl").write_text("".join(json.dumps(p) + "\n" for p in old))
    samples = run / "evals" / "step-10" / "samples" / GAP / "full.jsonl"
    rows = [json.loads(x) for x in samples.read_text().splitlines()]
    del rows[3]["correct"]
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SystemExit) as e:
        main(["report", str(run), "--out", str(tmp_path / "rep")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {samples}: record 'synth-3' has no 'correct' field"


def test_demo_summary_of_a_moved_run_finds_its_eval_dirs(collapsed: Path, tmp_path: Path) -> None:
    """eval_dir recorded elsewhere (the run was moved): the full-image gain still comes from run/evals/."""
    import shutil

    from vopd_bench.demo import summary_lines

    run = tmp_path / "train"
    shutil.copytree(collapsed, run)
    lines = []
    for p in read_jsonl(run / "curve.jsonl"):
        p["eval_dir"] = f"elsewhere/evals/step-{p['step']}"
        lines.append(json.dumps(p))
    (run / "curve.jsonl").write_text("\n".join(lines) + "\n")
    synth = summary_lines(run)[0]
    assert "full-image gain -28.3 pts" in synth and "(n = 60)" in synth and "nan" not in synth
