"""The report's explanation sections on a real run of the reference model: decomposition, size bins, examples,
transitions — their numbers are the ones recomputed from the sample files."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import records, run_cli

from vopd_bench.analysis import decomposition, size_bins
from vopd_bench.compare import compare_runs


def test_report_explains_the_gap(tiny_model: str, synth_small: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    views = "full,red_box,blur_surround,crop_native,crop"
    assert run_cli(["eval", "--model", tiny_model, "--task", "synth", "--data", str(synth_small), "--limit", "12",
                    "--views", views, "--out", str(run), "--quiet"]) == 0
    fracs = [r["box_frac"] for r in records(run, "synth", "full")]
    assert len(fracs) == 12 and all(0 < f < 1 for f in fracs)
    other = tmp_path / "run2"  # a second run of the same model: every item is "both right" or "both wrong"
    assert run_cli(["eval", "--model", tiny_model, "--task", "synth", "--data", str(synth_small), "--limit", "12",
                    "--views", "full,crop", "--out", str(other), "--quiet"]) == 0

    out = tmp_path / "report"
    assert run_cli(["report", str(run), "--before", str(run), "--after", str(other), "--out", str(out),
                    "--label", f"{run}=base", "--label", f"{other}=again", "--examples", "2"]) == 0
    md = (out / "report.md").read_text()
    steps, n = decomposition(run, "synth")
    assert n == 12 and [s.view for s in steps] == views.split(",")[:1] + ["red_box", "blur_surround", "crop_native", "crop"]
    for s in steps:
        assert f"{s.accuracy:.1f} [" in md
    full = sum(r["correct"] for r in records(run, "synth", "full"))
    assert steps[0].accuracy == 100 * full / 12
    bins = size_bins(run, "synth")
    assert sum(b.n for b in bins) == 12
    assert "## Gap by target size: synth" in md and "## Gap decomposition: base · synth" in md
    for ext in ("png", "pdf"):
        assert (out / "figures" / f"decomposition_base_synth.{ext}").is_file()
    tables = compare_runs(run, other)
    assert {t.view for t in tables} == {"full", "crop"}
    assert all(t.fixed == t.broken == 0 and t.both_right + t.both_wrong == 12 for t in tables)  # same model, greedy
    assert "## Which items moved: base → again" in md
    assert "## Examples: synth" in md and list((out / "figures").glob("examples_*.png"))
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["views"]["synth"] == views.split(",")


def test_decomposition_on_a_boxed_benchmark_fixture(tiny_model: str, tmp_path: Path) -> None:
    """The views and the report's explanation sections on a benchmark's published layout (V*: xywh boxes)."""
    import fixtures_bench as fb

    data = fb.vstar(tmp_path / "vstar")
    run = tmp_path / "run"
    views = "full,red_box,blur_surround,crop_native,crop"
    assert run_cli(["eval", "--model", tiny_model, "--task", "vstar", "--data", str(data), "--views", views,
                    "--out", str(run), "--quiet"]) == 0
    steps, n = decomposition(run, "vstar")
    boxed = [r for r in records(run, "vstar", "full") if r["box_frac"] is not None]  # the fixture's last item: no box
    assert [s.view for s in steps] == views.split(",") and n == len(boxed) == 5
    assert sum(b.n for b in size_bins(run, "vstar", n_bins=2)) == n
    assert run_cli(["report", str(run), "--out", str(tmp_path / "rep")]) == 0
    assert "## Gap decomposition: " in (tmp_path / "rep" / "report.md").read_text()
