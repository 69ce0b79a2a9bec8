"""The `self_zoom` view ("look, then zoom"): two stages per item through a real backend, the box mapped and
cropped with the task's crop protocol, fall-backs counted, IoU recorded, resume without redoing first stages,
the report's zoom-baselines section, and training re-scoring with the view."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import make_dataset, records, run_cli
from PIL import Image
from zoom_server import ZoomState, serve, square

from vopd_bench import grounding
from vopd_bench.grounding import iou
from vopd_bench.views import CropParams, region_box


@pytest.fixture()
def fixture_data(tmp_path: Path) -> tuple[Path, Path, list[dict]]:
    data, spec = make_dataset(tmp_path / "fx", n=12, seed=3)
    rows = [json.loads(line) for line in (data / "items.jsonl").read_text().splitlines()]
    return data, spec, rows


def _eval(url: str, spec: Path, data: Path, out: Path, *extra: str) -> int:
    return run_cli(["eval", "--backend", "openai", "--base-url", url, "--model", "pointer-vlm", "--task", str(spec),
                    "--data", str(data), "--views", "full,self_zoom,crop", "--out", str(out), "--quiet", *extra])


def test_two_stages_through_a_server(fixture_data, tmp_path: Path) -> None:
    data, spec, rows = fixture_data
    state = ZoomState(blind_x=40)
    with serve(state) as url:
        assert _eval(url, spec, data, tmp_path / "run") == 0
    recs = {r["id"]: r for r in records(tmp_path / "run", "fx", "self_zoom")}
    blind = {r["id"] for r in rows if r["boxes"][0][0] < 40}
    assert 0 < len(blind) < len(rows)  # the fixture has both kinds
    params = CropParams(margin=0.5, min_side=48, resize_to=224)  # the fixture spec's crop
    for row in rows:
        rec = recs[row["id"]]
        facts = rec["self_zoom"]
        if row["id"] in blind:  # no usable box: the full image, counted
            assert facts["fallback"] and facts["box"] is None and facts["iou"] is None and rec["crop_box"] is None
            continue
        assert not facts["fallback"] and facts["box"] == row["boxes"][0]  # the server's box, back in pixels
        assert facts["iou"] == pytest.approx(1.0)
        assert rec["crop_box"] == region_box([row["boxes"][0]], 224, 224, params)  # the task's crop protocol
        assert rec["correct"]  # the crop around the right box: the server reads the colour
        assert rec["latency"] >= facts["latency"]  # both stages' seconds
    assert state.calls["locate"] == len(rows)
    assert state.calls["answer"] == 3 * len(rows)  # full, self_zoom, crop
    res = json.loads((tmp_path / "run" / "results.json").read_text())["tasks"]["fx"]["views"]
    g = res["self_zoom"]["grounding"]
    assert g["n"] == len(rows) and g["fallback"] == len(blind) and g["iou_n"] == len(rows) - len(blind)
    assert g["iou_mean"] == pytest.approx(1.0)
    n_right = sum(r["correct"] for r in recs.values())
    assert res["self_zoom"]["accuracy"] == pytest.approx(n_right / len(rows))
    assert res["full"]["accuracy"] < res["self_zoom"]["accuracy"] <= res["crop"]["accuracy"]
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["identity"]["tasks"]["fx"]["self_zoom"]["format"] == "json"  # no processor, unknown name: the generic format
    assert cfg["self_zoom"]["prompt"] == grounding.PROMPTS["json"]
    # the DataFrame API flattens the first stage's facts into columns
    from vopd_bench.frames import samples_frame

    df = samples_frame(tmp_path / "run", images=False)
    zoom = df[df["view"] == "self_zoom"].set_index("id")
    assert "self_zoom" not in df.columns and zoom["self_zoom.fallback"].sum() == len(blind)
    assert zoom.loc[sorted(set(recs) - blind), "self_zoom.iou"].tolist() == pytest.approx([1.0] * (len(rows) - len(blind)))
    assert df[df["view"] == "full"]["self_zoom.iou"].isna().all()  # other views have no such facts


def test_resume_keeps_finished_first_stages(fixture_data, tmp_path: Path) -> None:
    """A run killed after some first stages: the rerun asks only the missing ones, then every second stage."""
    data, spec, rows = fixture_data
    state = ZoomState()
    out = tmp_path / "run"
    with serve(state) as url:
        assert _eval(url, spec, data, out, "--views", "self_zoom") == 0
        stage = out / "stages" / "fx" / "self_zoom.jsonl"
        lines = stage.read_text().splitlines()
        assert len(lines) == len(rows)
        stage.write_text("\n".join(lines[:5]) + "\n" + lines[5][:20])  # killed mid-write of the 6th answer
        (out / "samples" / "fx" / "self_zoom.jsonl").unlink()  # ... before any second stage was written
        (out / "results.json").unlink()
        before = list(state.located)
        assert _eval(url, spec, data, out, "--views", "self_zoom") == 0
    asked_again = state.located[len(before):]
    assert len(asked_again) == len(rows) - 5  # the five finished first stages were not asked again
    assert len(records(out, "fx", "self_zoom")) == len(rows)


def test_seen_size_maps_qwen25_boxes_back(tiny_model: str) -> None:
    """Qwen2.5-VL states absolute pixels of the image its processor resized; the box is mapped back."""
    from transformers import AutoProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    from vopd_bench.inputs import set_image_budget
    from vopd_bench.self_zoom import locate_row, seen_size

    proc = AutoProcessor.from_pretrained(tiny_model)
    set_image_budget(proc, None, 112 * 112)

    class B:  # what seen_size reads of a backend: its processor
        processor = proc

    im = Image.new("RGB", (300, 200), (235, 235, 235))
    seen = seen_size(B(), im, "qwen2.5-vl")
    h, w = smart_resize(200, 300, 28, 3136, 112 * 112)
    assert seen == (w, h) and seen != im.size
    assert seen_size(B(), im, "qwen-1000") == im.size  # relative coordinates: no resize to undo
    assert grounding.qwen_resize(300, 200) == smart_resize(200, 300, 28, 56 * 56, 28 * 28 * 16384)[::-1]

    class R:
        text, n_tokens, latency, visual_tokens, error, retryable = (
            grounding.box_text([0, 0, seen[0] // 2, seen[1] // 2], *seen, "qwen2.5-vl"), 9, 0.1, 16, None, False)

    class It:
        id = "x"

    row = locate_row(It(), R(), im, seen, "qwen2.5-vl")
    assert row["box"] == [0, 0, 150, 100]  # half of the seen image = half of the original


def test_family_formats() -> None:
    """The first stage asks each family in its own grounding format."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLProcessor

    assert grounding.format_for(Qwen2_5_VLProcessor.__new__(Qwen2_5_VLProcessor)) == "qwen2.5-vl"
    assert grounding.format_for(Qwen2VLProcessor.__new__(Qwen2VLProcessor)) == "qwen-1000"
    assert grounding.format_for(None, "Qwen/Qwen3-VL-8B-Instruct") == "qwen-1000"
    assert grounding.format_for(None, "llava-hf/llava-onevision-qwen2-0.5b-ov-hf") == "json"
    for fmt in grounding.FORMATS:
        text = grounding.box_text([10, 20, 110, 220], 400, 400, fmt)
        assert grounding.parse_box(text, 400, 400, fmt) == [10, 20, 110, 220]
        assert "What colour?" in grounding.grounding_prompt("What colour?", fmt)


def test_hf_backend_and_report(tiny_model: str, synth_small: Path, tmp_path: Path) -> None:
    """The reference model through the HF backend: every record's fall-back flag says whether its first answer
    held a box; IoU where it did; the report's zoom-baselines table and figure."""
    out = tmp_path / "hf"
    assert run_cli(["eval", "--model", tiny_model, "--task", "synth", "--data", str(synth_small), "--limit", "6",
                    "--views", "full,self_zoom,crop", "--out", str(out), "--quiet"]) == 0
    stage = {r["id"]: r for r in map(json.loads, (out / "stages" / "synth" / "self_zoom.jsonl").read_text().splitlines())}
    for rec in records(out, "synth", "self_zoom"):
        facts = rec["self_zoom"]
        box = grounding.parse_box(stage[rec["id"]]["response"], 224, 224, "qwen2.5-vl")
        assert facts["fallback"] == (box is None) and facts["box"] == box
        if box is not None:
            gold = json.loads((synth_small / "items.jsonl").read_text().splitlines()[int(rec["id"][-6:])])["boxes"]
            assert facts["iou"] == pytest.approx(iou(box, gold[0]), abs=1e-4)
    assert json.loads((out / "config.json").read_text())["identity"]["tasks"]["synth"]["self_zoom"]["format"] == "qwen2.5-vl"
    assert run_cli(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Zoom baselines: synth" in md and (tmp_path / "rep" / "figures" / "zoom_synth.png").is_file()
    assert "self_zoom (two passes)" in md and "crop (oracle box)" in md


def test_training_rescoring_with_self_zoom(tiny_model: str, synth_small: Path, tmp_path: Path) -> None:
    """A training run listing self_zoom among its eval views scores it at every checkpoint."""
    from test_train import _overrides

    from vopd_bench.synth import ensure_dataset

    holdout = ensure_dataset(kind="holdout", n=4, seed=778)
    settings = {"model": tiny_model, "train_task": "synth", "train_data": str(synth_small), "eval_tasks": ["synth"],
                "holdout_tasks": ["synth_holdout"], "eval_data": {"synth": str(synth_small), "synth_holdout": str(holdout)}, "eval_limit": 2,
                "eval_max_new_tokens": 4, "steps": 1, "eval_every": 1, "prompts_per_step": 2, "rollouts_per_prompt": 1,
                "max_new_tokens": 4, "micro_batch_size": 2, "warmup_steps": 0, "threads": 1, "progress": False,
                "eval_views": ["full", "crop", "self_zoom"]}
    out = tmp_path / "train"
    assert run_cli(["train", "--out", str(out), *_overrides(settings)]) == 0
    points = [json.loads(line) for line in (out / "curve.jsonl").read_text().splitlines() if line.strip()]
    assert len(points) == 2
    for p in points:
        assert set(p["tasks"]["synth"]["views"]) == {"full", "crop", "self_zoom"}
        assert set(p["tasks"]["synth_holdout"]["views"]) == {"full"}
    assert (out / "evals" / "step-1" / "stages" / "synth" / "self_zoom.jsonl").is_file()
    from vopd_bench.report.curve import plot_curve
    from vopd_bench.train.rundir import TrainRun

    _, drawn = plot_curve(TrainRun(out).curve())
    assert drawn["tasks"]["synth"]["full"]  # the curve figure draws with the extra view present
    assert run_cli(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    assert "Zoom baselines: synth" in (tmp_path / "rep" / "report.md").read_text()
    assert run_cli(["train", "--out", str(tmp_path / "bad"), *_overrides({**settings, "eval_views": ["full", "zoom"]})]) == 2


def test_lmms_export_refuses_staged_view(tmp_path: Path) -> None:
    assert run_cli(["export-lmms-eval", "--task", "synth", "--views", "full,self_zoom", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_square_helper_reads_the_fixture(fixture_data) -> None:
    """The test server's own reading of the fixture images is right (so the tests above mean something)."""
    data, _, rows = fixture_data
    for row in rows:
        box, _ = square(Image.open(data / row["image"]))
        assert box == [int(v) for v in row["boxes"][0]]


@pytest.mark.parametrize("task", ["vstar", "treebench", "mmstar"])
def test_benchmark_fixtures(task: str, tiny_model: str, tmp_path: Path) -> None:
    """Boxed benchmark fixtures (their published layouts) and a boxless one (MMStar: no IoU, the view still runs)."""
    import fixtures_bench as fb

    data = fb.WRITERS[task](tmp_path / task)
    out = tmp_path / "run"
    assert run_cli(["eval", "--model", tiny_model, "--task", task, "--data", str(data), "--limit", "3",
                    "--views", "full,self_zoom", "--out", str(out), "--quiet", "--max-new-tokens", "8"]) == 0
    recs = records(out, task, "self_zoom")
    assert len(recs) == 3 and all(not r["error"] for r in recs)
    stages = (out / "stages" / task / "self_zoom.jsonl").read_text().splitlines()
    assert len(stages) == 3
    g = json.loads((out / "results.json").read_text())["tasks"][task]["views"]["self_zoom"]["grounding"]
    assert g["n"] == 3 and g["fallback"] == sum(r["self_zoom"]["fallback"] for r in recs)
    has_gold = task != "mmstar"
    assert g["iou_n"] == (sum(r["self_zoom"]["box"] is not None for r in recs) if has_gold else 0)
