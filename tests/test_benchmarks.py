"""The GPU benchmark script is ready for a lent device: the same script runs here with the tiny shape on CPU."""

from __future__ import annotations

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
