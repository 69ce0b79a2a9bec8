"""Preflight and the exit status of an incomplete run, with `vopd-bench eval` run as a subprocess (what a
script or CI job sees) against real servers on 127.0.0.1 and real model folders:

- a backend that cannot work (nothing listening, a rejected key, a model the server does not serve, a model
  folder without config.json, with an unknown architecture, with no chat template) stops before anything is
  written: exit 2, exactly one line on stderr naming the URL or path and the cause;
- a server that fails half the requests: the run keeps what succeeded and exits 3; re-run against the healthy
  server, it asks only the failed ones and exits 0.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import free_port, make_dataset
from test_openai import SECRET, FaultState, fault_cfg, make_task, serve

from vopd_bench.backends import make_backend
from vopd_bench.backends.base import BackendConfig
from vopd_bench.errors import EXIT_BAD_INPUT, EXIT_INCOMPLETE, UserError
from vopd_bench.rundir import RunDir
from vopd_bench.runtime import read_jsonl

KEY_ENV = "VOPD_TEST_API_KEY"


def vopd(*args: str, key: str | None = SECRET) -> subprocess.CompletedProcess:
    """`vopd-bench ARGS` in a fresh interpreter (no hub access); the API key, if any, in $VOPD_TEST_API_KEY."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop(KEY_ENV, None)
    if key is not None:
        env[KEY_ENV] = key
    return subprocess.run([sys.executable, "-m", "vopd_bench", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def refused(proc: subprocess.CompletedProcess, out: Path) -> str:
    """Assert a bad-input exit: code 2, one `error:` line on stderr and no traceback, nothing under `out`."""
    assert proc.returncode == EXIT_BAD_INPUT, (proc.returncode, proc.stderr[-3000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    assert not out.exists() or not any(out.iterdir()), sorted(out.rglob("*"))
    assert SECRET not in proc.stdout + proc.stderr
    return lines[0]


# ---------------------------------------------------------------- the OpenAI backend
@pytest.fixture()
def fault_task(tmp_path: Path) -> tuple[Path, Path]:
    return make_task(tmp_path / "data")


def openai_eval(url: str, task: tuple[Path, Path], out: Path, *more: str) -> list[str]:
    spec, data = task
    return ["eval", "--backend", "openai", "--base-url", url, "--model", "fault-model", "--api-key-env", KEY_ENV,
            "--task", str(spec), "--data", str(data), "--views", "full", "--out", str(out), "--quiet", *more]


def test_nothing_listening(fault_task, tmp_path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    msg = refused(vopd(*openai_eval(url, fault_task, tmp_path / "run")), tmp_path / "run")
    assert f"cannot reach {url}/models: connection refused" in msg, msg


def test_key_rejected(fault_task, tmp_path) -> None:
    state = FaultState()
    state.key = "sk-the-right-one"
    with serve(state) as url:
        msg = refused(vopd(*openai_eval(url, fault_task, tmp_path / "run")), tmp_path / "run")
        assert f"{url}/models: HTTP 401, the key in ${KEY_ENV} was rejected" in msg, msg
        msg = refused(vopd(*openai_eval(url, fault_task, tmp_path / "run"), key=None), tmp_path / "run")
        assert f"HTTP 401, it wants an API key and ${KEY_ENV} is not set" in msg, msg
    assert state.attempts == {}  # no chat request was sent


def test_model_not_served(fault_task, tmp_path) -> None:
    state = FaultState()
    state.models = [f"served-{i}" for i in range(7)]
    with serve(state) as url:
        msg = refused(vopd(*openai_eval(url, fault_task, tmp_path / "run")), tmp_path / "run")
    assert f"{url} does not serve model 'fault-model'; it serves: served-0, served-1, served-2, served-3, " \
           "served-4 (+2 more) (pass one as --model)" in msg, msg
    assert state.attempts == {}


class HalfDown(FaultState):
    """Odd-numbered items get 503 on every attempt while `outage` is set; the rest are answered."""

    def plan(self, i: int, attempt: int) -> str:
        return "503" if i % 2 and self.outage else "ok"


def test_half_failing_server_exits_incomplete_then_rerun_completes(fault_task, tmp_path) -> None:
    state = HalfDown()
    out = tmp_path / "run"
    with serve(state) as url:
        args = openai_eval(url, fault_task, out, "--max-retries", "1", "--timeout", "5", "--concurrency", "4")
        first = vopd(*args)
        assert first.returncode == EXIT_INCOMPLETE, (first.returncode, first.stderr[-3000:])
        assert "10 of 20 requests failed — re-run the same command to retry them" in first.stderr
        recs = RunDir(out).load_records("fault", "full")
        assert len(recs) == 20  # what succeeded is written, the failures are recorded as retryable errors
        bad = {k for k, r in recs.items() if r["error"]}
        assert bad == {f"it{i:02d}" for i in range(1, 20, 2)}
        assert all(recs[k]["retryable"] and recs[k]["response"] == "" for k in bad)
        assert all(r["correct"] for k, r in recs.items() if k not in bad)
        assert all(state.attempts[i] == (2 if i % 2 else 1) for i in range(20))  # 1 + --max-retries for the 503s

        state.outage = False
        before = dict(state.attempts)
        second = vopd(*args)
        assert second.returncode == 0, second.stderr[-3000:]
        assert "requests failed" not in second.stderr
    assert {i for i in state.attempts if state.attempts[i] != before[i]} == set(range(1, 20, 2))  # only the failed
    recs = RunDir(out).load_records("fault", "full")
    assert len(recs) == 20 and all(r["correct"] and r["error"] is None for r in recs.values())
    assert len(read_jsonl(out / "samples" / "fault" / "full.jsonl")) == 30
    full = json.loads((out / "results.json").read_text())["tasks"]["fault"]["views"]["full"]
    assert full["n"] == 20 and full["errors"] == 0 and full["accuracy"] == 1.0


# the other preflight failures, on the backend itself (no CLI start-up)
def test_no_answer_in_time() -> None:
    with socket.socket() as s:  # accepts connections (the kernel's backlog) but never answers
        s.bind(("127.0.0.1", 0))
        s.listen()
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
        with pytest.raises(UserError, match=rf"^{re.escape(url)}/models did not answer within 0\.5 s"):
            make_backend(fault_cfg(url, timeout=0.5))


def test_not_an_openai_base_url() -> None:
    with serve(FaultState()) as url:
        root = url.removesuffix("/v1")
        with pytest.raises(UserError, match=rf"^{re.escape(root)}/models: HTTP 404; {re.escape(root)} is probably not an OpenAI-compatible "
                                            r"/v1 base URL \(for a server without /models: --no-preflight\)"):
            make_backend(fault_cfg(root))
        backend = make_backend(fault_cfg(root, extra={"preflight": False}))  # the way around: no check
        assert backend.describe()["served_model"] is None
        backend.close()


def test_unknown_host() -> None:
    with pytest.raises(UserError, match=r"^cannot reach http://no-such-host\.invalid/v1/models: "):
        make_backend(fault_cfg("http://no-such-host.invalid/v1"))


def test_models_endpoint_5xx_is_retried_then_refused() -> None:
    state = FaultState()
    state.models_status = 503
    with serve(state) as url, pytest.raises(UserError, match=rf"^{re.escape(url)}/models: HTTP 503 Service Unavailable"):
        make_backend(fault_cfg(url, max_retries=2))
    assert state.models_asked == 3  # 1 + max_retries, as for requests


# ---------------------------------------------------------------- the HF and vLLM backends
def broken_model(tmp_path: Path, tiny_model: str, how: str) -> Path:
    """A copy of the shipped tiny model, broken one way."""
    dst = tmp_path / f"model-{how}"
    shutil.copytree(tiny_model, dst)
    cfg_path = dst / "config.json"
    if how == "no-config":
        cfg_path.unlink()
    elif how == "unknown-type":
        cfg = json.loads(cfg_path.read_text())
        cfg["model_type"] = "frobnicator_vl"
        cfg_path.write_text(json.dumps(cfg))
    elif how == "no-chat-template":
        (dst / "chat_template.jinja").unlink()
    elif how == "text-only":  # a known model type, but not a vision-language one
        cfg = json.loads(cfg_path.read_text())["text_config"]
        cfg_path.write_text(json.dumps({**cfg, "model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]}))
    elif how == "unknown-arch":  # transformers loads it; neither vLLM nor transformers has the class
        cfg = json.loads(cfg_path.read_text())
        cfg_path.write_text(json.dumps({**cfg, "architectures": ["FrobnicatorForConditionalGeneration"]}))
    return dst


HF_CASES = {
    "no-config": "has no config.json",
    "unknown-type": "has model_type 'frobnicator_vl', unknown to transformers",
    "no-chat-template": "has no chat template: add the base model's chat_template.jinja",
}


@pytest.mark.parametrize("how", list(HF_CASES))
def test_hf_model_folder_refused_by_the_cli(how, tiny_model, tmp_path) -> None:
    model = broken_model(tmp_path, tiny_model, how)
    data, spec = make_dataset(tmp_path / "fx", n=2)
    out = tmp_path / "run"
    msg = refused(vopd("eval", "--backend", "hf", "--model", str(model), "--task", str(spec), "--data", str(data),
                       "--out", str(out), "--quiet"), out)
    assert str(model) in msg and HF_CASES[how] in msg, msg


def test_hf_text_only_model_refused(tiny_model, tmp_path) -> None:
    model = broken_model(tmp_path, tiny_model, "text-only")
    with pytest.raises(UserError, match=r"has model_type 'qwen2', not an image-text-to-text model"):
        make_backend(BackendConfig(backend="hf", model=str(model)))


@pytest.mark.parametrize("how", list(HF_CASES))
def test_vllm_model_folder_refused_before_the_engine(how, tiny_model, tmp_path) -> None:
    """Checked before vLLM is imported: the same one-line errors as the HF backend."""
    model = broken_model(tmp_path, tiny_model, how)
    with pytest.raises(UserError, match=HF_CASES[how]):
        make_backend(BackendConfig(backend="vllm", model=str(model)))


@pytest.mark.vllm
def test_vllm_unknown_architecture_refused_before_the_engine(tiny_model, tmp_path) -> None:
    pytest.importorskip("vllm")
    model = broken_model(tmp_path, tiny_model, "unknown-arch")
    with pytest.raises(UserError, match=r"does not support architecture FrobnicatorForConditionalGeneration"):
        make_backend(BackendConfig(backend="vllm", model=str(model)))


@pytest.mark.parametrize("backend", ["hf", pytest.param("vllm", marks=pytest.mark.vllm), "openai"])
def test_module_preflight_alone(backend, tiny_model, tmp_path) -> None:
    """`<backend>.preflight(cfg)`: the constructor's checks without loading weights or starting an engine (for
    a command that runs several backends and must check them all before writing anything)."""
    if backend == "vllm":
        pytest.importorskip("vllm")
    mod = importlib.import_module(f"vopd_bench.backends.{backend}")
    if backend == "openai":
        with serve(FaultState()) as url:
            mod.preflight(fault_cfg(url))
            with pytest.raises(UserError, match="does not serve model 'nope'"):
                mod.preflight(fault_cfg(url, model="nope"))
        return
    mod.preflight(BackendConfig(backend=backend, model=tiny_model))
    with pytest.raises(UserError, match="has no chat template"):
        mod.preflight(BackendConfig(backend=backend, model=str(broken_model(tmp_path, tiny_model, "no-chat-template"))))
