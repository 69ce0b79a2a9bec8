"""Every bad input of the eval: a one-line error naming what is wrong, exit != 0, nothing lost."""

from __future__ import annotations

import json

import pytest
from helpers import make_dataset, records, run_cli


@pytest.fixture
def fx(tmp_path):
    return make_dataset(tmp_path / "fx", n=6)


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    lines = [line for line in err if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in "\n".join(err)
    return lines[0]


def test_unknown_task(capsys):
    assert run_cli(["eval", "--task", "no_such_task", "--model", "vopd-tiny"]) == 2
    assert "unknown task 'no_such_task'" in _err(capsys)


def test_missing_model_path(fx, capsys, tmp_path):
    data, spec = fx
    assert run_cli(["eval", "--task", str(spec), "--data", str(data), "--model", "./no/such/model", "--out", str(tmp_path / "r")]) == 2
    assert "model path not found: ./no/such/model" in _err(capsys)


def test_data_file_missing_field(fx, capsys, tiny_model, tmp_path):
    data, spec = fx
    rows = (data / "items.jsonl").read_text().splitlines()
    row = json.loads(rows[2])
    del row["question"]
    rows[2] = json.dumps(row)
    (data / "items.jsonl").write_text("\n".join(rows) + "\n")
    assert run_cli(["eval", "--task", str(spec), "--data", str(data), "--model", tiny_model, "--out", str(tmp_path / "r")]) == 2
    msg = _err(capsys)
    assert "items.jsonl:3" in msg and "missing field 'question'" in msg


def test_corrupt_image_is_recorded_and_run_continues(fx, capsys, tiny_model, tmp_path):
    data, spec = fx
    (data / "images" / "1.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "r"
    args = ["eval", "--task", str(spec), "--data", str(data), "--model", tiny_model, "--out", str(out), "-q"]
    assert run_cli(args) == 3  # not every item was scored: an incomplete run
    assert "2 of 12 requests failed" in capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())["tasks"]["fx"]
    assert res["views"]["full"]["errors"] == 1 and res["views"]["full"]["n"] == 5
    assert res["views"]["crop"]["errors"] == 1
    bad = [r for r in records(out, "fx", "full") if r["id"] == "fx-1"][0]
    assert "cannot decode image" in bad["error"] and bad["correct"] is False
    assert run_cli([*args, "--allow-errors"]) == 0
    assert "2 of them will fail again" in capsys.readouterr().err


def test_bad_boxes_clipped_or_dropped_and_no_box_skipped(fx, caplog, tiny_model, tmp_path):
    data, spec = fx
    rows = [json.loads(line) for line in (data / "items.jsonl").read_text().splitlines()]
    rows[0]["boxes"] = [[200, 200, 400, 400]]  # extends outside the 224px image -> clipped
    rows[1]["boxes"] = [[50, 50, 50, 80]]  # zero area -> dropped -> no box -> skipped for crop
    rows[2]["boxes"] = []  # no box -> skipped for crop
    (data / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "r"
    assert run_cli(["eval", "--task", str(spec), "--data", str(data), "--model", tiny_model, "--out", str(out), "-q"]) == 0
    assert "clipped" in caplog.text and "zero area" in caplog.text
    res = json.loads((out / "results.json").read_text())["tasks"]["fx"]
    assert res["views"]["full"]["n"] == 6
    assert res["views"]["crop"]["n"] == 5 - 1 + 0  # fx-1 lost its only box while rendering: recorded as no region
    crop = {r["id"]: r for r in records(out, "fx", "crop")}
    assert "fx-2" not in crop
    assert crop["fx-0"]["crop_box"][2] <= 224
    assert res["views"]["crop"]["skipped_no_box"] >= 1


def test_out_dir_with_other_config_is_refused(fx, capsys, tiny_model, tmp_path):
    data, spec = fx
    out = tmp_path / "r"
    base = ["eval", "--task", str(spec), "--data", str(data), "--model", tiny_model, "--out", str(out), "-q", "--views", "full"]
    assert run_cli(base) == 0
    before = (out / "samples" / "fx" / "full.jsonl").read_bytes()
    capsys.readouterr()
    assert run_cli([*base, "--max-new-tokens", "3"]) == 2
    msg = _err(capsys)
    assert "different configuration" in msg and "--overwrite" in msg
    assert (out / "samples" / "fx" / "full.jsonl").read_bytes() == before  # nothing lost
    assert run_cli([*base, "--max-new-tokens", "3", "--overwrite"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["tasks"]["fx"]["generation"]["max_new_tokens"] == 3


def test_crop_on_task_without_boxes_names_boxes_option(tmp_path, capsys, tiny_model):
    data, spec = make_dataset(tmp_path / "nb", n=3)
    rows = [json.loads(line) for line in (data / "items.jsonl").read_text().splitlines()]
    for r in rows:
        r["boxes"] = []
    (data / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert run_cli(["eval", "--task", str(spec), "--data", str(data), "--model", tiny_model, "--views", "full,crop",
                    "--out", str(tmp_path / "r")]) == 2
    assert "--boxes" in _err(capsys)


def test_bad_option_values(capsys):
    assert run_cli(["eval", "--task", "synth", "--views", "full,zoom"]) == 2
    assert "unknown view 'zoom'" in _err(capsys)
    assert run_cli(["eval", "--task", "synth", "--limit", "0"]) == 2
    assert "--limit" in _err(capsys)
