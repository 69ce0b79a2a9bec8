"""A deterministic OpenAI-compatible *vision* server on 127.0.0.1 (stdlib + PIL + numpy), for the self_zoom tests.

It looks at the image it is sent (the fixture of `helpers.make_dataset`: one coloured square on grey):
- asked for a box (the prompt mentions a bounding box / bbox): it answers the square's box as JSON pixels
  `[x1, y1, x2, y2]` of the image it received — or "I cannot tell." when the square's left edge is left of
  `blind_x` (so the tests know which items fall back to the full image);
- asked the question: it names the square's colour (the option letter) only when the square covers at least
  `min_share` of the image (a zoomed crop), else answers "A" — so the full image is mostly wrong and a crop
  around the right box is right.
`state.calls` counts requests per (kind, image size) and `state.prompts` keeps the texts; `serve(state)` yields
the /v1 URL.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler

import numpy as np
from helpers import COLOURS, http_server
from PIL import Image

MODEL = "pointer-vlm"


class ZoomState:
    def __init__(self, blind_x: int = 40, min_share: float = 0.02) -> None:
        self.lock = threading.Lock()
        self.blind_x = blind_x
        self.min_share = min_share
        self.calls: Counter[str] = Counter()  # "locate" / "answer"
        self.located: list[str] = []  # the question text of every locate request, in order
        self.sizes: list[tuple[int, int]] = []  # image sizes of the answer requests


def square(im: Image.Image) -> tuple[list[int], str] | None:
    """The coloured square's box and colour name, or None."""
    a = np.asarray(im.convert("RGB")).astype(int)
    mask = np.abs(a - 235).sum(axis=2) > 60
    if not mask.any():
        return None
    ys, xs = np.nonzero(mask)
    mean = a[mask].mean(axis=0)
    name = min(COLOURS, key=lambda c: float(np.abs(np.array(COLOURS[c]) - mean).sum()))
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1], name


def reply(state: ZoomState, text: str, im: Image.Image) -> str:
    found = square(im)
    if "bbox" in text or "bounding box" in text:
        with state.lock:
            state.calls["locate"] += 1
            state.located.append(text)
        if found is None or found[0][0] < state.blind_x:
            return "I cannot tell."
        return json.dumps(found[0])
    with state.lock:
        state.calls["answer"] += 1
        state.sizes.append(im.size)
    if found is None:
        return "A"
    (x1, y1, x2, y2), colour = found
    if (x2 - x1) * (y2 - y1) < state.min_share * im.width * im.height:
        return "A"
    options = dict(re.findall(r"^([A-D])\. (\w+)$", text, re.M))
    return next((k for k, v in options.items() if v == colour), "A")


def make_handler(state: ZoomState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _send(self, code: int, data: dict) -> None:
            blob = json.dumps(data).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(blob)))
            self.end_headers()
            self.wfile.write(blob)

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "test"}]})
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            parts = body["messages"][-1]["content"]
            text = "".join(p.get("text", "") for p in parts if p.get("type") == "text")
            url = next(p["image_url"]["url"] for p in parts if p.get("type") == "image_url")
            im = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
            out = reply(state, text, im)
            self._send(200, {"id": "z", "object": "chat.completion", "model": body["model"],
                             "choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": out}}],
                             "usage": {"prompt_tokens": 60, "completion_tokens": len(out.split()), "total_tokens": 61}})

    return Handler


def serve(state: ZoomState) -> contextlib.AbstractContextManager[str]:
    """The server for `state` on a free 127.0.0.1 port (a context manager yielding its /v1 URL)."""
    return http_server(make_handler(state))
