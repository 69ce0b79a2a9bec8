"""The performance suite (benchmarks/) runs from a fresh clone: every script with tiny settings, its figures
printed as its last lines (no timing is asserted: these machines are shared). The GPU script is ready for a lent
device: the same script runs here with the tiny shape on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_script_runs_on_cpu_with_the_tiny_shape(tmp_path: Path) -> None:
    env = {**os.environ, "SHAPE": "tiny", "DEVICE": "cpu", "PY": sys.executable, "N": "4", "STEPS": "1",
           "BACKENDS": "hf", "OUT": str(tmp_path)}
    p = subprocess.run(["bash", "benchmarks/gpu.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    out = p.stdout
    assert "shape tiny:" in out and "model folder:" in out
    hf = next(line for line in out.splitlines() if line.startswith("hf "))
    assert float(hf.split()[4]) > 0  # items/s
    assert "student_forward_backward" in out and "step total (wall)" in out
    assert (tmp_path / "backends.json").is_file()


def test_sized_configs_match_the_published_parameter_counts() -> None:
    """Qwen2.5-VL-3B / 7B-Instruct: 3.75 B / 8.29 B parameters (counted on the meta device, no memory)."""
    import torch
    from transformers import AutoModelForImageTextToText, Qwen2_5_VLConfig

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from make_sized_model import sized_config

    for shape, billions in (("qwen2_5_vl_3b", 3.75), ("qwen2_5_vl_7b", 8.29)):
        with torch.device("meta"):
            m = AutoModelForImageTextToText.from_config(Qwen2_5_VLConfig(**sized_config(shape)))
        assert sum(p.numel() for p in m.parameters()) / 1e9 == pytest.approx(billions, abs=0.01)


# ---------------------------------------------------------------- every script runs (tiny settings; no timing asserted)
def _script(name: str, *args: str, timeout: int = 900) -> str:
    """Run benchmarks/<name> as a user does (from the repository root); its stdout."""
    p = subprocess.run([sys.executable, f"benchmarks/{name}", *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=timeout, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p.stdout


def _last_lines(out: str, n: int) -> list[str]:
    return [line for line in out.splitlines() if line.strip()][-n:]


@pytest.mark.lmms
@pytest.mark.slow
def test_gap_vs_lmms_runs_all_three_sides_with_the_same_answers(tmp_path: Path) -> None:
    pytest.importorskip("lmms_eval")
    pytest.importorskip("decord")  # lmms-eval's qwen2_5_vl imports it
    js = tmp_path / "gap.json"
    out = _script("gap_vs_lmms.py", "--n", "3", "--batch-size", "2", "--repeat", "1", "--json", str(js))
    last = _last_lines(out, 2)
    assert last[0].startswith("vopd-bench / lmms-eval qwen2_5_vl:") and last[1].startswith("vopd-bench / lmms-eval vopd_hf:")
    fig = json.loads(js.read_text())
    assert fig["view_items"] == 6 and set(fig["sides"]) == {"ours", "lmms_qwen", "lmms_vopd_hf"}
    assert all(s["items_per_s"] > 0 for s in fig["sides"].values())
    # vopd_hf inside lmms-eval answers exactly what vopd-bench eval answers (the harness difference alone)
    row = next(line for line in out.splitlines() if line.startswith("lmms-eval vopd_hf"))
    assert row.split()[-1] == "6/6"


def test_eval_throughput_prints_overhead_and_rerun_figures() -> None:
    out = _script("eval_throughput.py", "--n", "4", "--batch-size", "4", "--repeat", "1", "--prefetch", "off")
    assert "harness overhead:" in out and "(goal <= 10%)" in out
    assert "repeated run on the finished run dir:" in out and "(goal <= 2%)" in out


def test_rerun_cli_takes_the_finished_run_path() -> None:
    out = _script("rerun_cli.py", "--n", "4", "--repeat", "1")
    assert "did not take the finished-run path" not in out
    assert _last_lines(out, 1)[0].startswith("ratio")


@pytest.mark.slow
def test_step_breakdown_runs_full_lora_and_sft(tmp_path: Path) -> None:
    js = tmp_path / "step.json"
    out = _script("step_breakdown.py", "--steps", "1", "--prompts", "2", "--rollouts", "2", "--max-new-tokens", "4",
                  "--eval-items", "2", "--rollout-sweep", "1,2", "--json", str(js))
    fig = json.loads(js.read_text())
    modes = {r["mode"]: r for r in fig["modes"]}
    assert set(modes) == {"full_ema", "lora_frozen", "lora_sft"}
    assert modes["lora_sft"]["phases"]["teacher_forward"] == 0  # no teacher in a plain SFT step
    assert modes["lora_frozen"]["phases"]["teacher_forward"] > 0
    assert modes["lora_frozen"]["trainable_m"] < modes["full_ema"]["trainable_m"]
    # the SFT step holds as many sequences as the distillation step (prompts x rollouts), so RSS compares the teacher
    assert modes["lora_sft"]["sequences"] == modes["lora_frozen"]["sequences"] == 4
    assert [r["rollouts"] for r in fig["rollout_sweep"]] == [1, 2]
    assert "peak RSS, LoRA adapter-off teacher / LoRA SFT:" in out and "teacher forward share" in out


def test_step_breakdown_rejects_an_unknown_mode() -> None:
    p = subprocess.run([sys.executable, "benchmarks/step_breakdown.py", "--modes", "full_ema,bogus"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "unknown mode 'bogus'" in p.stderr


@pytest.mark.vllm
@pytest.mark.slow
def test_backends_hf_vs_vllm_runs(tmp_path: Path) -> None:
    pytest.importorskip("vllm")
    js = tmp_path / "b.json"
    out = _script("backends.py", "--n", "4", "--batch-size", "4", "--warmup", "1", "--json", str(js))
    assert _last_lines(out, 1)[0].startswith("identical answers:")
    rows = json.loads(js.read_text())["results"]
    assert [r["backend"] for r in rows] == ["hf", "vllm"] and all(r["errors"] == 0 for r in rows)


def test_scaling_writes_slopes_and_the_plot(tmp_path: Path) -> None:
    png, js = tmp_path / "scaling.png", tmp_path / "s.json"
    out = _script("scaling.py", "--items", "2,4", "--sizes", "112,224", "--size-items", "2", "--repeat", "1",
                  "--batch-size", "4", "--plot", str(png), "--json", str(js))
    last = _last_lines(out, 2)
    assert last[0].startswith("log-log slope, eval time vs items:") and last[1].startswith("log-log slope, eval time vs image side:")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = json.loads(js.read_text())
    assert [n for n, _ in fig["items"]] == [2, 4] and [s for s, _ in fig["sizes"]] == [112, 224]


def test_slope_of_a_power_law() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from scaling import slope

    assert slope([1, 2, 4, 8], [3, 12, 48, 192]) == pytest.approx(2.0)
    assert slope([10, 100], [5, 50]) == pytest.approx(1.0)
