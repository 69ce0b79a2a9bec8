"""A small deterministic OpenAI-compatible judge server on 127.0.0.1 (stdlib only), for the judge's tests.

It serves GET /v1/models and POST /v1/chat/completions. The reply to a prompt is chosen by the prompt's
text: a line "The response is: X" or "Response: X" is compared with "The answer is: Y" / "Correct answer: Y"
(case-insensitive, stripped) and answered "Yes" or "No". A fault is chosen by a marker in the response
text, for that prompt:

- ``#500``: HTTP 500 every time (``#500x1``: only the first attempt);
- ``#hang``: sleep `hang_s` seconds before answering (past a short client timeout);
- ``#garbage``: HTTP 200 whose body is not JSON;
- ``#maybe``: the reply "Maybe." (neither yes nor no); ``#reply=TEXT``: the reply TEXT;
- ``#block``: wait until `state.release` is set (a kill test holds a request in flight).

`JudgeState` counts requests per prompt; `serve(state)` is a context manager yielding the /v1 URL. Run as a
script (`python tests/judge_server.py --port N`) it serves until killed (for a child-process test).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "judge-model"
_RESPONSE = re.compile(r"^(?:The response is|Response): (.*)$", re.M)
_ANSWER = re.compile(r"^(?:The answer is|Correct answer): (.*)$", re.M)


class JudgeState:
    """What the server does and what it saw."""

    def __init__(self, models: list[str] | None = None, hang_s: float = 2.0) -> None:
        self.lock = threading.Lock()
        self.models = [MODEL] if models is None else models
        self.hang_s = hang_s
        self.calls: Counter[str] = Counter()  # prompt -> POSTs
        self.bodies: list[dict] = []
        self.auth: list[str | None] = []
        self.models_asked = 0
        self.release = threading.Event()

    @property
    def total(self) -> int:
        with self.lock:
            return sum(self.calls.values())


def reply_for(prompt: str, attempt: int) -> tuple[str, str]:
    """(action, reply text) for a prompt on its `attempt`-th request."""
    m_resp, m_ans = _RESPONSE.search(prompt), _ANSWER.search(prompt)
    response = m_resp.group(1) if m_resp else ""
    if "#500x1" in response:
        if attempt == 1:
            return "500", ""
    elif "#500" in response:
        return "500", ""
    for marker in ("hang", "garbage", "block"):
        if f"#{marker}" in response:
            return marker, ""
    if "#maybe" in response:
        return "ok", "Maybe."
    m = re.search(r"#reply=(\S+)", response)
    if m:
        return "ok", m.group(1).replace("_", " ")
    response = re.sub(r"#\S+", "", response).strip().lower()
    answer = (m_ans.group(1) if m_ans else "").strip().lower()
    return "ok", "Yes" if response and response == answer else "No"


def make_handler(state: JudgeState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _send(self, code: int, blob: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(blob)))
            self.end_headers()
            self.wfile.write(blob)

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                with state.lock:
                    state.models_asked += 1
                data = {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "test"} for m in state.models]}
                self._send(200, json.dumps(data).encode())
            else:
                self._send(404, b'{"error": "not found"}')

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path != "/v1/chat/completions":
                self._send(404, b'{"error": "not found"}')
                return
            prompt = body["messages"][-1]["content"]
            with state.lock:
                state.calls[prompt] += 1
                attempt = state.calls[prompt]
                state.bodies.append(body)
                state.auth.append(self.headers.get("Authorization"))
            action, text = reply_for(prompt, attempt)
            if action == "hang":
                time.sleep(state.hang_s)
                action, text = "ok", "Yes"
            elif action == "block":
                state.release.wait(60)
                action, text = "ok", "Yes"
            if action == "500":
                self._send(500, b'{"error": {"message": "server error"}}')
            elif action == "garbage":
                self._send(200, b"<html>this is not json", "text/html")
            else:
                data = {"id": "j", "object": "chat.completion", "model": body["model"],
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": text}}],
                        "usage": {"prompt_tokens": 50, "completion_tokens": 1, "total_tokens": 51}}
                self._send(200, json.dumps(data).encode())

    return Handler


@contextlib.contextmanager
def serve(state: JudgeState, port: int = 0) -> Iterator[str]:
    """The server on 127.0.0.1 (`port` 0: a free one); yields its /v1 base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    with serve(JudgeState(), args.port) as url:
        print(url, flush=True)
        threading.Event().wait()
