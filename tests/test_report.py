"""`vopd-bench report`: run dirs with known numbers → tables, figures and report.md."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from vopd_bench.errors import UserError

# ---- fixtures: run directories written by hand with known numbers ----------------------------


def view(acc: float, lo: float, hi: float, n: int = 100, pf: int = 0) -> dict[str, Any]:
    return {"n": n, "accuracy": acc, "ci_low": lo, "ci_high": hi, "parse_failures": pf,
            "parse_failure_rate": pf / n, "errors": 0, "skipped_no_box": 0}


def gap(v: float, lo: float, hi: float, p: float = 0.001, n: int = 100) -> dict[str, Any]:
    return {"value": v, "ci_low": lo, "ci_high": hi, "p_value": p, "n_pairs": n}


def task(full: tuple, crop: tuple | None = None, g: tuple | None = None, cats: dict | None = None) -> dict[str, Any]:
    t: dict[str, Any] = {"views": {"full": view(*full)}}
    if crop is not None:
        t["views"]["crop"] = view(*crop)
    if g is not None:
        t["gap"] = gap(*g)
    if cats:
        t["categories"] = cats
    return t


def write_eval_run(d: Path, model: str, tasks: dict[str, dict[str, Any]], max_pixels: int = 1003520) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    config = {
        "backend": {"backend": "hf", "model": model, "model_path": model, "revision": None, "dtype": "bfloat16",
                    "image_budget": {"min_pixels": 3136, "max_pixels": max_pixels}},
        "tasks": {t: {"crop": {"margin": 0.5, "min_side": 32, "upscale": 2.0, "resize_to": None},
                      "prompt_hash": "abc", "generation": {"max_new_tokens": 8}} for t in tasks},
        "seed": 0, "versions": {"python": "3.11"},
    }
    (d / "config.json").write_text(json.dumps(config))
    (d / "results.json").write_text(json.dumps({"tasks": tasks, "average": {}, "model": model, "backend": "hf",
                                                "views": {t: list(v["views"]) for t, v in tasks.items()}}))
    for t, tv in tasks.items():
        for v, s in tv["views"].items():
            p = d / "samples" / t / f"{v}.jsonl"
            p.parent.mkdir(parents=True, exist_ok=True)
            rows = [{"id": f"q{i}", "view": v, "answer": "A", "parsed": "A", "correct": i < round(s["accuracy"] * s["n"]),
                     "error": None} for i in range(s["n"])]
            p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


CATS = {"colour": {"views": {"full": view(0.40, 0.30, 0.50, 50), "crop": view(0.90, 0.80, 0.96, 50)},
                   "gap": gap(50.0, 38.0, 62.0, 1e-8, 50)},
        "shape": {"views": {"full": view(0.60, 0.46, 0.72, 50), "crop": view(0.70, 0.56, 0.81, 50)},
                  "gap": gap(10.0, -2.0, 22.0, 0.2, 50)}}


def make_runs(tmp_path: Path) -> dict[str, Path]:
    """Two eval runs (A, B) on vstar + hrbench + holdout, and a training run with a 3-point curve."""
    a = write_eval_run(tmp_path / "runA", "org/ModelA-7B", {
        "vstar": task((0.50, 0.40, 0.60, 100, 2), (0.80, 0.71, 0.87, 100, 1), (30.0, 20.0, 40.0, 1e-6), CATS),
        "hrbench": task((0.60, 0.50, 0.69), (0.70, 0.60, 0.78), (10.0, 1.0, 19.0, 0.03)),
        "holdout": task((0.90, 0.83, 0.94)),
    })
    b = write_eval_run(tmp_path / "runB", "/ckpt/ModelB/", {
        "vstar": task((0.65, 0.55, 0.74), (0.85, 0.77, 0.91), (20.0, 11.0, 29.0, 1e-4)),
        "hrbench": task((0.55, 0.45, 0.64), (0.75, 0.66, 0.82), (20.0, 10.0, 30.0, 1e-4)),
        "holdout": task((0.85, 0.77, 0.91)),
    }, max_pixels=200704)
    t = tmp_path / "train"
    t.mkdir()
    (t / "config.json").write_text(json.dumps({"kind": "train", "model": "org/Tiny-VL"}))
    write_eval_run(t / "evals" / "step-0", "org/Tiny-VL", {
        "clutter": task((0.475, 0.38, 0.57, 200), (0.965, 0.93, 0.98, 200), (49.0, 42.0, 56.0, 1e-20, 200), CATS),
        "holdout": task((0.90, 0.85, 0.94, 200)),
    })
    curve = []
    for step, full, crop, g, hold in ((0, 0.475, 0.965, 49.0, 0.90), (50, 0.60, 0.96, 36.0, 0.90),
                                       (100, 0.80, 0.95, 15.0, 0.89)):
        curve.append({"step": step, "checkpoint": f"ckpt/step-{step}", "eval_dir": f"evals/step-{step}",
                      "tasks": {"clutter": {"views": {"full": view(full, full - 0.07, full + 0.07, 200),
                                                      "crop": view(crop, crop - 0.03, min(crop + 0.02, 1.0), 200)},
                                            "gap": gap(g, g - 7, g + 7, 1e-5, 200)},
                                "holdout": {"views": {"full": view(hold, hold - 0.05, hold + 0.04, 200)}}},
                      "train": {"loss": 1.0 / (step + 1)}})
    (t / "curve.jsonl").write_text("".join(json.dumps(c) + "\n" for c in curve))
    return {"a": a, "b": b, "train": t}


@pytest.fixture
def runs(tmp_path: Path) -> dict[str, Path]:
    """A fresh copy per test (tests may break files)."""
    return make_runs(tmp_path)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The full report of A, B and the training run, rendered once for the module."""
    from vopd_bench.report import build_report

    root = tmp_path_factory.mktemp("report")
    r = make_runs(root)
    build_report([r["a"], r["b"], r["train"]], root / "out")
    return root / "out"


def _csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def _md_rows(path: Path) -> dict[str, list[str]]:
    rows = [ln.strip("|").split(" | ") for ln in path.read_text().splitlines() if ln.startswith("| ")]
    return {r[0].strip(): [c.strip() for c in r[1:]] for r in rows}


# ---- tables -----------------------------------------------------------------------------------


def test_table1_cells_and_bold(report: Path) -> None:
    rows = {r["model"]: r for r in _csv(report / "tables" / "table1_full.csv")}
    assert list(rows) == ["ModelA-7B", "ModelB", "Tiny-VL", "Tiny-VL + Vision-OPD (step 100)"]
    a, b, base, opd = rows.values()
    assert (a["vstar"], a["hrbench"], a["holdout"], a["clutter"]) == ("50.00", "60.00", "90.00", "")
    assert (a["vstar_ci_low"], a["vstar_ci_high"], a["vstar_n"]) == ("40.00", "60.00", "100")
    assert (b["vstar"], base["clutter"], opd["clutter"], opd["holdout"]) == ("65.00", "47.50", "80.00", "89.00")
    assert a["average"] == ""  # A lacks clutter: no comparable average

    md = _md_rows(report / "tables" / "table1_full.md")
    assert md["Model"] == ["vstar", "hrbench", "clutter", "holdout", "Average"]
    assert md["ModelA-7B"] == ["50.0", "**60.0**", "–", "**90.0**", "–"]
    assert md["ModelB"] == ["**65.0**", "55.0", "–", "85.0", "–"]
    assert md["Tiny-VL"] == ["–", "–", "47.5", "**90.0**", "–"]  # tie on holdout: both bold
    assert md["Tiny-VL + Vision-OPD (step 100)"] == ["–", "–", "**80.0**", "89.0", "–"]

    tex = (report / "tables" / "table1_full.tex").read_text()
    for s in ("\\toprule", "\\midrule", "\\bottomrule", "\\label{tab:table1_full}",
              "ModelB & \\textbf{65.0} & 55.0 & -- & 85.0 & -- \\\\"):
        assert s in tex


def test_table2_crop_gap(report: Path) -> None:
    md = _md_rows(report / "tables" / "table2_crop_gap.md")
    assert md["Model"][:2] == ["vstar Crop", "vstar Gap"]
    assert md["ModelA-7B"][:4] == ["80.0", "+30.0", "70.0", "**+10.0**"]
    assert md["ModelB"][:4] == ["**85.0**", "**+20.0**", "**75.0**", "+20.0"]
    assert md["Tiny-VL"][4:6] == ["**96.5**", "+49.0"]
    assert md["Tiny-VL + Vision-OPD (step 100)"][4:6] == ["95.0", "**+15.0**"]  # closest to zero
    rows = {r["model"]: r for r in _csv(report / "tables" / "table2_crop_gap.csv")}
    a = rows["ModelA-7B"]
    assert (a["vstar_crop"], a["vstar_gap"], a["vstar_gap_ci_low"], a["vstar_gap_p_value"]) == ("80.00", "30.00", "20.00",
                                                                                                  "1e-06")
    tex = (report / "tables" / "table2_crop_gap.tex").read_text()
    assert "\\multicolumn{2}{c}{vstar}" in tex and "\\cmidrule(lr){2-3}" in tex
    assert "ModelB & \\textbf{85.0} & \\textbf{+20.0}" in tex


def test_averages_bold_ties_negatives_and_escaping(runs: dict[str, Path]) -> None:
    from vopd_bench.report.load import load_eval_run
    from vopd_bench.report.tables import table_crop_gap, table_full

    a, b = load_eval_run(runs["a"]), load_eval_run(runs["b"], label="my_model & co")
    t1 = table_full([a, b])
    assert t1.columns[-1].values == pytest.approx([200 / 3, 205 / 3])  # (50+60+90)/3, (65+55+85)/3
    assert "| my\\_model" not in t1.to_markdown() and "| my_model & co | **65.0** | 55.0 | 85.0 | **68.3** |" in t1.to_markdown()
    assert "my\\_model \\& co" in t1.to_latex()
    t2 = table_crop_gap([a, b])
    md = t2.to_markdown()
    assert "| ModelA-7B | 80.0 | +30.0 | 70.0 | **+10.0** | 75.0 | **+20.0** |" in md  # average gaps tie
    assert "| my_model & co | **85.0** | **+20.0** | **75.0** | +20.0 | **80.0** | **+20.0** |" in md
    a.tasks["vstar"].gap.value = -5.0  # type: ignore[union-attr]
    tex = table_crop_gap([a, b]).to_latex()
    assert "\\textbf{$-$5.0}" in tex  # |−5| beats |+20|


# ---- figures ----------------------------------------------------------------------------------


def test_gap_models_figure_values(runs: dict[str, Path]) -> None:
    from vopd_bench.report.figures import paper_style, plot_gap_models
    from vopd_bench.report.load import load_eval_run

    with paper_style():
        fig, data = plot_gap_models([load_eval_run(runs["a"]), load_eval_run(runs["b"])])
    assert [ax.get_title() for ax in fig.axes] == ["vstar", "hrbench", "Average"]
    assert data["vstar"]["full"] == pytest.approx([50.0, 65.0])
    assert data["vstar"]["crop"] == pytest.approx([80.0, 85.0])
    assert data["vstar"]["full_ci"][0] == pytest.approx((40.0, 60.0))
    assert data["Average"]["full"] == pytest.approx([55.0, 60.0])
    assert data["Average"]["gap"] == pytest.approx([20.0, 20.0])
    ax = fig.axes[0]
    assert [round(p.get_height(), 6) for p in ax.patches] == [50.0, 65.0, 80.0, 85.0]
    assert [t.get_text() for t in ax.texts] == ["+30.0", "+20.0"]
    whiskers = sorted(tuple(round(y, 6) for _, y in seg) for c in ax.collections for seg in c.get_segments())
    assert (40.0, 60.0) in whiskers and (71.0, 87.0) in whiskers
    assert fig.get_figwidth() == pytest.approx(7.0)


def test_before_after_and_curve_figures(runs: dict[str, Path], tmp_path: Path) -> None:
    from PIL import Image

    from vopd_bench.report.curve import draw_curve, plot_curve
    from vopd_bench.report.figures import paper_style, plot_before_after
    from vopd_bench.report.load import load_training_run
    from vopd_bench.train.rundir import read_curve

    tr = load_training_run(runs["train"])
    assert tr.before.tasks["clutter"].categories  # step 0 read from its eval dir's results.json
    assert tr.after is not None and not tr.after.tasks["clutter"].categories  # last step: curve.jsonl numbers
    with paper_style():
        fig, data = plot_before_after(tr.before, tr.after)
    assert data["before"] == pytest.approx([49.0]) and data["after"] == pytest.approx([15.0])
    assert data["reduction"] == pytest.approx([34 / 49])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == ["+49.0", "+15.0"]
    assert ax.get_xticklabels()[0].get_text() == "clutter\n(gap −69%)\nclosed +66%"  # (80 − 47.5) / (96.5 − 47.5)
    assert data["closure"][0].value == pytest.approx(32.5 / 49) and data["closure"][0].ci_low is None  # no samples

    with paper_style():
        fig, cd = plot_curve(read_curve(runs["train"] / "curve.jsonl"))
    c = cd["tasks"]["clutter"]
    assert c["steps"] == [0, 50, 100]
    assert c["full"] == pytest.approx([47.5, 60.0, 80.0]) and c["gap"] == pytest.approx([49.0, 36.0, 15.0])
    assert c["reduction"] == pytest.approx(34 / 49)
    assert c["note"] == "gap +49.0 → +15.0 pts\nreduction 69%\nclosed +66%\nfull +32.5, crop −1.5 pts"
    assert cd["holdout"]["holdout"]["acc"] == pytest.approx([90.0, 90.0, 89.0])
    gap_ax = fig.axes[1]
    assert c["note"] in [t.get_text() for t in gap_ax.texts]
    assert list(gap_ax.lines[0].get_ydata()) == pytest.approx([49.0, 36.0, 15.0])
    assert len(fig.axes[0].collections) == 3  # CI bands: full, crop, holdout

    paths = draw_curve(runs["train"] / "curve.jsonl", tmp_path / "fig" / "curve")
    assert [p.name for p in paths] == ["curve.png", "curve.pdf"]
    assert abs(Image.open(paths[0]).size[0] - 1400) < 30  # 7 in at 200 dpi
    pdf = paths[1].read_bytes()
    assert b"/FontFile2" in pdf and b"/Type3" not in pdf  # TrueType embedded (pdf.fonttype 42)


def test_curve_torn_tail_and_rescored_step(runs: dict[str, Path]) -> None:
    from vopd_bench.train.rundir import read_curve

    p = runs["train"] / "curve.jsonl"
    lines = p.read_text().splitlines(keepends=True)
    again = json.loads(lines[1])
    again["tasks"]["clutter"]["gap"]["value"] = 30.0
    p.write_text("".join(lines) + json.dumps(again) + "\n" + '{"step": 150, "tas')
    curve = read_curve(p)
    assert [c.step for c in curve] == [0, 50, 100]
    assert curve[1].tasks["clutter"].gap.value == 30.0  # type: ignore[union-attr]


def test_draw_curve_trainer_shape_single_point(tmp_path: Path) -> None:
    """The trainer's curve lines (no parse_failures, null accuracy for an empty view), one checkpoint."""
    from vopd_bench.report.curve import plot_curve
    from vopd_bench.report.figures import paper_style
    from vopd_bench.train.rundir import read_curve

    v = {"n": 40, "accuracy": 0.25, "ci_low": 0.14, "ci_high": 0.40, "parse_failure_rate": 0.0}
    line = {"step": 0, "checkpoint": "ckpt/step-0", "eval_dir": str(tmp_path / "nowhere"),
            "tasks": {"synth": {"views": {"full": v, "crop": {**v, "accuracy": 0.75}},
                                "gap": {"value": 50.0, "ci_low": 30.0, "ci_high": 70.0, "p_value": 1e-4, "n_pairs": 40}},
                      "synth_holdout": {"views": {"full": {**v, "n": 0, "accuracy": None, "ci_low": None,
                                                           "ci_high": None}}}}}
    p = tmp_path / "curve.jsonl"
    p.write_text(json.dumps(line) + "\n")
    with paper_style():
        _, data = plot_curve(read_curve(p))
    assert data["tasks"]["synth"]["gap"] == [50.0] and data["tasks"]["synth"]["reduction"] is None
    assert data["tasks"]["synth"]["note"] == "gap +50.0 pts at step 0"
    assert list(data["holdout"]) == ["synth_holdout"]


def test_curve_reports_crop_change_without_a_second_collapse_rule(runs: dict[str, Path]) -> None:
    """Full +32.5 pts with crop −1.5; a crop drop of 16.5 (beyond the 10-point collapse threshold) is flagged only by
    the dagger and its footnote, not by a second rule in the note or the line."""
    from vopd_bench.report.curve import plot_curve
    from vopd_bench.report.figures import paper_style
    from vopd_bench.report.load import load_training_run
    from vopd_bench.report.markdown import curve_line
    from vopd_bench.train.rundir import read_curve

    p = runs["train"] / "curve.jsonl"
    with paper_style():
        _, ok = plot_curve(read_curve(p))
    d = ok["tasks"]["clutter"]
    assert d["full_change"] == pytest.approx(32.5) and d["crop_change"] == pytest.approx(-1.5)
    assert d["note"].endswith("full +32.5, crop −1.5 pts") and not ok["collapsed"]
    lines = p.read_text().splitlines()
    last = json.loads(lines[-1])
    last["tasks"]["clutter"]["views"]["crop"]["accuracy"] = 0.80
    p.write_text("\n".join([*lines[:-1], json.dumps(last)]) + "\n")
    with paper_style():
        _, bad = plot_curve(read_curve(p))
    assert bad["tasks"]["clutter"]["crop_change"] == pytest.approx(-16.5)
    assert bad["tasks"]["clutter"]["note"].endswith("full +32.5, crop −16.5 pts")
    assert bad["tasks"]["clutter"]["note"].startswith("gap +49.0 → +15.0 pts†\n")
    line = curve_line(load_training_run(runs["train"]), bad)
    assert "crop -16.5 pts" in line and "crop accuracy fell" not in line and "† Collapse" in line


# ---- the whole report, CLI ---------------------------------------------------------------------


def test_report_md_and_cli(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vopd_bench.cli import main

    out = tmp_path / "rep"
    main(["report", str(runs["a"]), "--before", str(runs["a"]), "--after", str(runs["b"]),
          "--label", "Base", "--out", str(out)])
    assert "report:" in capsys.readouterr().out
    md = (out / "report.md").read_text()
    assert "Before / after: Base → ModelB" in md
    # gap closed from the items of both runs: vstar (65 − 50) / (80 − 50), hrbench (55 − 60) / (70 − 60)
    assert "Base → ModelB: gap vstar +30.0 → +20.0 pts (reduction 33%; gap closed +50% [" in md
    assert "; hrbench +10.0 → +20.0 pts (reduction −100%; gap closed −50% [" in md and "†" not in md
    assert "Image budget Base: 3,136–1,003,520 px; ModelB: 3,136–200,704 px" in md
    assert "margin 0.5, min side 32 px, upscale 2.0×" in md
    assert "n per task: vstar 100, hrbench 100, holdout 100" in md
    assert "parse-failure rate: full 0.3%" in md  # 2 of 600 full-view answers
    links = [ln.split("](", 1)[1].split(")", 1)[0] for ln in md.splitlines() if "](" in ln]
    assert links and all((out / link).is_file() for link in links)
    figs = sorted(p.name for p in (out / "figures").iterdir())
    assert figs == ["before_after_Base.pdf", "before_after_Base.png", "categories_vstar.pdf",
                    "categories_vstar.png", "gap_models.pdf", "gap_models.png",
                    "transitions_Base_ModelB.pdf", "transitions_Base_ModelB.png"]  # the pair's items that moved
    assert not list(out.glob(".report-*"))


def test_full_report_sections(report: Path) -> None:
    md = (report / "report.md").read_text()
    for s in ("## Regional-to-global gap across models", "## Tables", "## Before / after: Tiny-VL → Tiny-VL + Vision-OPD",
              "## Gap-reduction curve: Tiny-VL", "## Per-category breakdown: vstar", "## Per-category breakdown: clutter",
              "clutter gap +49.0 → +15.0 pts (relative reduction 69%; gap closed +66%), full +32.5 pts, crop -1.5 pts; "
              "holdout accuracy 90.0 → 89.0%"):
        assert s in md
    cat = _md_rows(report / "tables" / "categories_vstar.md")
    assert cat["colour"] == ["40.0", "90.0", "+50.0"] and cat["shape"] == ["60.0", "70.0", "+10.0"]


def test_duplicate_labels_disambiguated(runs: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    from vopd_bench.report.build import load_inputs

    shutil.copytree(runs["a"], tmp_path / "runA2")
    inp = load_inputs([runs["a"], tmp_path / "runA2"])
    assert [m.label for m in inp.models] == ["ModelA-7B (runA)", "ModelA-7B (runA2)"]


def test_label_options(runs: dict[str, Path]) -> None:
    from vopd_bench.commands.report import parse_labels

    got = parse_labels(("First", f"{runs['b']}=Second"), [runs["a"]])
    assert got == {runs["a"]: "First", runs["b"]: "Second"}
    with pytest.raises(UserError, match="2 --label values for 1 RUN_DIR"):
        parse_labels(("x", "y"), [runs["a"]])


# ---- bad input --------------------------------------------------------------------------------


def _break(runs: dict[str, Path], how: str) -> tuple[Path, str]:
    a, t = runs["a"], runs["train"]
    if how == "results_not_json":
        (a / "results.json").write_text("{not json")
        return a, f"{a / 'results.json'}: not valid JSON"
    if how == "results_no_accuracy":
        r = json.loads((a / "results.json").read_text())
        del r["tasks"]["vstar"]["views"]["crop"]["accuracy"]
        (a / "results.json").write_text(json.dumps(r))
        return a, f"{a / 'results.json'}: tasks.vstar.views.crop.accuracy is missing"
    if how == "results_missing":
        (a / "results.json").unlink()
        return a, f"{a / 'results.json'}: not found"
    if how == "config_missing":
        (a / "config.json").unlink()
        return a, f"{a / 'config.json'}: not found"
    if how == "config_not_object":
        (t / "config.json").write_text("[1, 2]")
        return t, f"{t / 'config.json'}: the top level should be an object"
    if how == "curve_bad_line":
        lines = (t / "curve.jsonl").read_text().splitlines(keepends=True)
        (t / "curve.jsonl").write_text(lines[0] + "{oops\n" + "".join(lines[1:]))
        return t, f"{t / 'curve.jsonl'}:2: not valid JSON"
    if how == "curve_bad_step":
        lines = (t / "curve.jsonl").read_text().splitlines(keepends=True)
        (t / "curve.jsonl").write_text(lines[0].replace('"step": 0', '"step": "zero"') + "".join(lines[1:]))
        return t, f"{t / 'curve.jsonl'}: line 1: step should be a number"
    if how == "curve_missing":
        (t / "curve.jsonl").unlink()
        return t, f"{t / 'curve.jsonl'}: not found"
    raise AssertionError(how)


BREAKS = ["results_not_json", "results_no_accuracy", "results_missing", "config_missing", "config_not_object",
          "curve_bad_line", "curve_bad_step", "curve_missing"]


@pytest.mark.parametrize("how", BREAKS)
def test_bad_input_names_the_file(runs: dict[str, Path], tmp_path: Path, how: str) -> None:
    from vopd_bench.report.build import load_inputs

    bad, msg = _break(runs, how)
    with pytest.raises(UserError) as e:
        load_inputs([bad])
    assert str(e.value).startswith(msg)
    assert "\n" not in str(e.value)


def test_bad_input_leaves_existing_report_intact(runs: dict[str, Path], report: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from vopd_bench.cli import main

    before = {p: p.read_bytes() for p in report.rglob("*") if p.is_file()}
    bad, msg = _break(runs, "curve_bad_line")
    with pytest.raises(SystemExit) as e:
        main(["report", str(runs["a"]), str(bad), "--out", str(report)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {msg} (Expecting property name enclosed in double quotes)"
    assert {p: p.read_bytes() for p in report.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("n, rows", [(200, 2), (100, 3)])
def test_base_eval_and_training_step0_are_one_row(runs: dict[str, Path], tmp_path: Path, n: int, rows: int) -> None:
    """The base model's eval run beside a training run whose step 0 repeats it (same items, same numbers) is
    one table row and the "before" of the pair; a different n (another eval) keeps both rows."""
    from vopd_bench.report.build import load_inputs

    clutter = task((0.475, 0.38, 0.57, n), (0.965, 0.93, 0.98, n), (49.0, 42.0, 56.0, 1e-20, n))
    clutter["views"]["masked"] = view(0.25, 0.2, 0.3, n)
    base = write_eval_run(tmp_path / "base", "org/Tiny-VL", {"clutter": clutter,
                                                            "holdout": task((0.90, 0.85, 0.94, n))})
    inp = load_inputs([base, runs["train"]])
    assert len(inp.models) == rows
    before, after = inp.pairs[0]
    assert after.tasks["clutter"].views["full"].accuracy == pytest.approx(0.80)
    assert (before.path == base) == (rows == 2)


def test_table_to_frame_matches_the_csv(tmp_path):
    """Each report table is also a DataFrame with the CSV's columns and numbers."""
    import io

    import pandas as pd

    from vopd_bench.report.tables import Column, Table

    t = Table("cap", "t", ["a", "b"], [Column("Full", "full", [50.0, None], extra={"ci_low": [40.0, None]}),
                                       Column("Gap", "gap", [10.0, 2.0], best="absmin", flagged={1})])
    df = t.to_frame()
    csv = pd.read_csv(io.StringIO(t.to_csv()), index_col=0)
    assert list(df.columns) == list(csv.columns) == ["full", "full_ci_low", "gap", "gap_collapse"]
    assert df.loc["a", "full"] == csv.loc["a", "full"] == 50.0 and pd.isna(df.loc["b", "full"])
    assert df["gap_collapse"].tolist() == [0, 1]
