"""The quality scripts of the performance suite (benchmarks/quality_seeds.py, benchmarks/recipe_sweep.py) run from a
fresh clone: tiny settings (2 steps, 8 eval items, 4 prompts per step), real training runs, figures checked against
the run directories they wrote. No timing is asserted."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--set", "steps=2", "--set", "eval_limit=8", "--set", "prompts_per_step=4", "--set", "micro_batch_size=4",
        "--set", "train_options.n=16", "--set", "eval_batch_size=8", "--set", "eval_views=[full,crop]"]


def script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([sys.executable, f"benchmarks/{name}", *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=3000)  # a hang guard: 3 tiny runs take minutes, far longer on a shared machine
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


def reference_sha() -> str:
    from vopd_bench.models import REFERENCE_DIR

    return hashlib.sha256((REFERENCE_DIR / "model.safetensors").read_bytes()).hexdigest()


@pytest.mark.slow
def test_seeds_then_sweep_on_the_tiny_settings(tmp_path: Path) -> None:
    out, seeds_json, sweep_json = tmp_path / "runs", tmp_path / "seeds.json", tmp_path / "sweep.json"
    p = script("quality_seeds.py", "--seeds", "0", "1", "--repeat", "0", "--out", str(out), "--json",
               str(seeds_json), *TINY)
    fig = json.loads(seeds_json.read_text())
    sha = fig["model_sha256"]
    assert sha == reference_sha() and fig["steps"] == 2 and fig["eval_every"] == 2
    assert [r["seed"] for r in fig["runs"]] == [0, 1]
    for r in fig["runs"]:
        curve = [json.loads(line) for line in (Path(r["run"]) / "curve.jsonl").read_text().splitlines()]
        assert [c["step"] for c in curve] == [0, 2]  # eval_every = steps: the base and the last point only
        last = curve[-1]["tasks"]
        assert r["end"]["full"] == pytest.approx(100 * last["synth"]["views"]["full"]["accuracy"], abs=0.01)
        assert r["end"]["holdout"] == pytest.approx(100 * last["synth_holdout"]["views"]["full"]["accuracy"], abs=0.01)
        assert r["weights_sha256"] and r["wall_s"] > 0
    # the printed figures: one line per seed, then the spread as the last lines
    lines = p.stdout.strip().splitlines()
    assert sum(line.startswith("seed ") for line in lines) == 2
    assert lines[-1].startswith("closure %") and "mean" in lines[-1] and "min" in lines[-1]
    assert fig["spread"]["full_end"]["n"] == 2
    # the same seed twice on one machine with the same threads: the same weights, byte for byte
    (check,) = fig["determinism"]
    assert check["weights_identical"] and check["responses_differing"] == 0 and check["responses_compared"] == 24
    # the model ran from a snapshot named by its hash
    assert (out / "models" / sha[:12] / "model.safetensors").is_file()

    p = script("recipe_sweep.py", "--lr", "3e-4", "--out", str(out), "--json", str(sweep_json), *TINY)
    sweep = json.loads(sweep_json.read_text())
    assert [(r["recipe"], r["settings"]) for r in sweep["runs"]] == [
        ("paper_recipe_tiny", {"lr": 3e-4, "ema_rate": 0.05}), ("demo", {"seed": 0})]
    paper = json.loads((Path(sweep["runs"][0]["run"]) / "config.json").read_text())["config"]
    assert (paper["teacher"], paper["ema_rate"], paper["beta"], paper["top_k"], paper["anchor_weight"], paper["lr"]) == (
        "ema", 0.05, 0.5, 100, 0.0, 3e-4)
    assert sweep["runs"][1]["run"] == fig["runs"][0]["run"]  # the demo row is the seeds script's seed-0 run
    table = p.stdout.strip().splitlines()[-3:]
    assert table[0].startswith("|---") and "paper lr 0.0003 ema 0.05" in table[1] and table[2].startswith("| demo")
    # --report-only trains nothing and finds the same two runs
    p = script("recipe_sweep.py", "--lr", "3e-4", "--out", str(out), "--report-only", *TINY)
    assert p.stdout.strip().splitlines()[-2:] == table[1:2] + table[2:]
