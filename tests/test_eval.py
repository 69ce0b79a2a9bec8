"""The gap eval end to end on the tiny model: run dir contract, resume, kill -9, sharding, bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import free_port, make_dataset, records, run_cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("fx"), n=12)


def _eval_args(model, spec, data, out, *extra):
    return ["eval", "--model", model, "--task", str(spec), "--data", str(data), "--out", str(out), "-q", *extra]


def _stable(results: dict) -> dict:
    """results.json without fields that legitimately differ between runs (none today: all of it)."""
    return results["tasks"]


def test_eval_writes_contract(tiny_model, fx, tmp_path, capsys):
    data, spec = fx
    out = tmp_path / "run"
    assert run_cli(_eval_args(tiny_model, spec, data, out, "--views", "full,crop,masked,random_crop")) == 0
    printed = capsys.readouterr().out
    assert "gap" in printed and "McNemar" in printed
    res = json.loads((out / "results.json").read_text())
    t = res["tasks"]["fx"]
    for v in ("full", "crop", "masked", "random_crop"):
        s = t["views"][v]
        assert s["n"] == 12
        assert {"accuracy", "ci_low", "ci_high", "parse_failures"} <= set(s)
        assert 0.0 <= s["ci_low"] <= s["accuracy"] <= s["ci_high"] <= 1.0
    assert {"value", "ci_low", "ci_high", "p_value", "n_pairs"} <= set(t["gap"])
    assert t["gap"]["n_pairs"] == 12
    assert set(t["categories"]) == {"big", "small"}
    assert "average" in res
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["tasks"]["fx"]["crop"] == {"margin": 0.5, "min_side": 48, "upscale": 2.0, "resize_to": 224}
    assert cfg["tasks"]["fx"]["generation"]["max_new_tokens"] == 6
    assert cfg["backend"]["image_budget"]["max_pixels"] and cfg["backend"]["fingerprint"]
    assert cfg["tasks"]["fx"]["prompt_hash"] and "torch" in cfg["versions"]
    crop = records(out, "fx", "crop")
    assert len(crop) == 12
    r = crop[0]
    for k in ("id", "view", "answer", "response", "parsed", "correct", "error", "prompt_hash", "latency", "crop_box"):
        assert k in r
    assert len(r["crop_box"]) == 4
    # recomputing accuracy from the samples gives results.json's number
    acc = sum(x["correct"] for x in crop) / len(crop)
    assert t["views"]["crop"]["accuracy"] == pytest.approx(acc)


def test_rerun_resumes_without_recomputing(tiny_model, fx, tmp_path):
    data, spec = fx
    out = tmp_path / "run"
    assert run_cli(_eval_args(tiny_model, spec, data, out, "--limit", "6")) == 0
    first = records(out, "fx", "full")
    assert len(first) == 6
    assert run_cli(_eval_args(tiny_model, spec, data, out)) == 0  # extends to all 12
    again = records(out, "fx", "full")
    assert again[:6] == first and len(again) == 12
    before = (out / "samples" / "fx" / "full.jsonl").read_bytes()
    assert run_cli(_eval_args(tiny_model, spec, data, out)) == 0  # nothing to do
    assert (out / "samples" / "fx" / "full.jsonl").read_bytes() == before


def test_torn_last_line_is_repaired(tiny_model, fx, tmp_path):
    data, spec = fx
    out = tmp_path / "run"
    assert run_cli(_eval_args(tiny_model, spec, data, out, "--views", "full")) == 0
    ref = json.loads((out / "results.json").read_text())
    p = out / "samples" / "fx" / "full.jsonl"
    lines = p.read_text().splitlines(keepends=True)
    p.write_text("".join(lines[:5]) + lines[5][:20])  # as if killed mid-write
    assert run_cli(_eval_args(tiny_model, spec, data, out, "--views", "full")) == 0
    recs = records(out, "fx", "full")
    assert sorted(r["id"] for r in recs) == sorted(f"fx-{i}" for i in range(12))
    assert _stable(json.loads((out / "results.json").read_text())) == _stable(ref)


def test_sigkill_then_resume_matches_uninterrupted(tiny_model, fx, tmp_path):
    data, spec = fx
    ref_out, out = tmp_path / "ref", tmp_path / "run"
    assert run_cli(_eval_args(tiny_model, spec, data, ref_out, "--batch-size", "2")) == 0
    cmd = [sys.executable, "-m", "vopd_bench.cli", *_eval_args(tiny_model, spec, data, out, "--batch-size", "2")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    target = out / "samples" / "fx" / "full.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if target.is_file() and len(target.read_text().splitlines()) >= 4:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "eval finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = len(target.read_text().splitlines())
    assert 4 <= n_before < 12
    assert run_cli(_eval_args(tiny_model, spec, data, out, "--batch-size", "2")) == 0
    for view in ("full", "crop"):
        recs = records(out, "fx", view)
        ids = [r["id"] for r in recs]
        assert len(ids) == len(set(ids)) == 12  # none lost, none duplicated
    strip = lambda rs: sorted((r["id"], r["response"], r["correct"]) for r in rs)  # noqa: E731
    assert strip(records(out, "fx", "full")) == strip(records(ref_out, "fx", "full"))
    assert _stable(json.loads((out / "results.json").read_text())) == _stable(json.loads((ref_out / "results.json").read_text()))


@pytest.mark.slow
def test_two_rank_sharded_equals_one_rank(tiny_model, fx, tmp_path):
    data, spec = fx
    one, two = tmp_path / "one", tmp_path / "two"
    assert run_cli(_eval_args(tiny_model, spec, data, one, "--batch-size", "1")) == 0
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [torchrun, "--nproc_per_node", "2", "--master_port", str(free_port()), "-m", "vopd_bench.cli",
           *_eval_args(tiny_model, spec, data, two, "--batch-size", "1")]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not list((two / "samples" / "fx").glob("*.rank*.jsonl"))  # merged by rank 0
    for view in ("full", "crop"):
        assert [r["id"] for r in records(two, "fx", view)] == [r["id"] for r in records(one, "fx", view)]
        a = [(r["id"], r["response"], r["correct"]) for r in records(one, "fx", view)]
        b = [(r["id"], r["response"], r["correct"]) for r in records(two, "fx", view)]
        assert a == b
    ra = json.loads((one / "results.json").read_text())
    rb = json.loads((two / "results.json").read_text())
    assert ra["tasks"] == rb["tasks"]
    assert json.loads((two / "config.json").read_text())["world_size"] == 2
