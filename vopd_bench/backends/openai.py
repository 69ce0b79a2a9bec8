"""OpenAI-compatible chat-completions backend (vLLM serve, SGLang, TGI, hosted APIs).

Its own settings are `OpenAIOptions` (`cfg.options`; the `--base-url`, `--api-key-env`, `--concurrency`,
`--timeout`, `--max-retries` and `--no-preflight` options of eval and parity). Images travel as PNG data
URLs, resized on the client to the image budget first. Requests run in a thread pool of `concurrency`;
429/408/5xx, timeouts and dropped connections are retried with exponential backoff and jitter
(`max_retries`, `timeout` per attempt). A request that still fails becomes
`Response(error=..., retryable=True)`, so a resumed run asks again.

The API key is read from the environment variable named by `api_key_env`; it is sent only in
the Authorization header and never logged or recorded.

Preflight: the constructor lists the server's models (GET {base_url}/models) and stops with a one-line
`UserError` -- before anything is written -- when the server cannot be reached, rejects the key, is not an
OpenAI-compatible /v1 base, or does not serve `cfg.model`. 429/5xx answers are retried as requests are.

`cfg.extra` keys: backoff_base (s, default 1), backoff_max (s, default 30), max_tokens_param
("max_tokens" or "max_completion_tokens"), extra_body (dict merged into every request body),
preflight (default true; false -- `--no-preflight` on the command line -- skips the model listing, for
servers that do not implement /models).

`cfg.chat_template_kwargs` (`--chat-template-kwargs`) travel in every request body as
`chat_template_kwargs`, the field `vllm serve` (and SGLang) pass to the model's chat template; a key of
`extra_body` of the same name wins. The server renders the template, so `visual_tokens` stays None (the
chat-completions answer does not say how many tokens an image became) and `trust_remote_code` is the
server's own setting (recorded as asked, not applied here).
"""

from __future__ import annotations

import base64
import io
import logging
import math
import os
import random
import re
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import click
from PIL import Image

from vopd_bench.backends.base import SPEED_ONLY, BackendConfig, GenerationKwargs, Request, Response
from vopd_bench.errors import UserError

log = logging.getLogger(__name__)
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
IMAGE_FORMAT = "png"
PREFLIGHT_TIMEOUT = 10.0  # s, at most, for GET /models
SHOW_MODELS = 5  # served model ids named when the requested one is missing
SKIP_PREFLIGHT = "--no-preflight"  # the eval/parity flag that sets cfg.extra["preflight"] = False


@dataclass(frozen=True)
class OpenAIOptions:
    """The openai backend's own settings (recorded in config.json's backend_config, flattened)."""

    base_url: str | None = None  # the server's /v1 URL (required)
    api_key_env: str = "OPENAI_API_KEY"  # the environment variable holding the key
    concurrency: int = field(default=8, metadata={SPEED_ONLY: True})  # parallel requests
    timeout: float = field(default=120.0, metadata={SPEED_ONLY: True})  # seconds per attempt
    max_retries: int = field(default=5, metadata={SPEED_ONLY: True})  # on 429/5xx/timeouts


CLI_OPTIONS = (
    click.Option(["--base-url"], default=None, help="openai backend: the server's /v1 URL."),
    click.Option(["--api-key-env"], default="OPENAI_API_KEY", show_default=True,
                 help="openai backend: env var holding the key."),
    click.Option(["--concurrency"], type=int, default=8, show_default=True, help="openai backend: parallel requests."),
    click.Option(["--timeout"], type=float, default=120.0, show_default=True, help="openai backend: seconds per request."),
    click.Option(["--max-retries"], type=int, default=5, show_default=True,
                 help="openai backend: retries on 429/5xx/timeouts."),
    click.Option([SKIP_PREFLIGHT], is_flag=True,
                 help="openai backend: skip the check of the server's /models list before the run (servers without it)."),
)


def from_cli(kw: Mapping[str, Any]) -> tuple[OpenAIOptions, dict[str, Any]]:
    """The values of `CLI_OPTIONS` as (options, extra)."""
    opts = OpenAIOptions(base_url=kw["base_url"], api_key_env=kw["api_key_env"], concurrency=kw["concurrency"],
                         timeout=kw["timeout"], max_retries=kw["max_retries"])
    return opts, ({"preflight": False} if kw["no_preflight"] else {})


def default_batch_size(opts: OpenAIOptions | None) -> int:
    """Requests per harness batch: enough to keep `concurrency` requests in flight."""
    return 4 * (opts or OpenAIOptions()).concurrency


class RetryableError(Exception):
    """A failure worth another attempt (rate limit, server error, timeout, dropped connection)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FatalError(Exception):
    """A failure another attempt will not fix (bad request, auth, unknown model)."""


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with equal jitter: attempt k waits in [d/2, d], d = min(cap, base * 2**k)."""

    base: float = 1.0
    cap: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        d = min(self.cap, self.base * 2**attempt)
        d = d / 2 + (rng or random).uniform(0, d / 2)
        if retry_after is not None:
            d = max(d, min(self.cap, retry_after))
        return d


def fit_budget(img: Image.Image, min_pixels: int | None, max_pixels: int | None) -> Image.Image:
    """Resize (keeping the aspect ratio) so that min_pixels <= width * height <= max_pixels."""
    w, h = img.size
    area = w * h
    if max_pixels is not None and area > max_pixels:
        s = math.sqrt(max_pixels / area)
        size = (max(1, math.floor(w * s)), max(1, math.floor(h * s)))
    elif min_pixels is not None and area < min_pixels:
        s = math.sqrt(min_pixels / area)
        size = (math.ceil(w * s), math.ceil(h * s))
    else:
        return img
    return img.resize(size, Image.Resampling.BICUBIC)


def data_url(img: Image.Image) -> str:
    """The image as a `data:image/png;base64,...` URL (lossless, RGB)."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format=IMAGE_FORMAT.upper())
    return f"data:image/{IMAGE_FORMAT};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def redact_url(url: str) -> str:
    """The URL without user:password and query string (they may hold credentials)."""
    p = urlsplit(url)
    host = p.hostname or ""
    netloc = f"{host}:{p.port}" if p.port else host
    return urlunsplit((p.scheme, netloc, p.path, "", ""))


def retry_after(headers: Any) -> float | None:
    try:
        return float(headers.get("retry-after"))
    except (TypeError, ValueError):
        return None


class OpenAIBackend:
    name = "openai"

    def __init__(self, cfg: BackendConfig) -> None:
        import httpx

        opts = OpenAIOptions() if cfg.options is None else cfg.options
        if not isinstance(opts, OpenAIOptions):
            raise TypeError(f"the openai backend takes OpenAIOptions, got {type(opts).__name__}")
        if not opts.base_url:
            raise UserError("the openai backend needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        if opts.concurrency < 1 or opts.max_retries < 0 or opts.timeout <= 0:
            raise UserError("openai backend: need concurrency >= 1, max_retries >= 0 and timeout > 0")
        self.cfg = cfg
        self.opts = opts
        self.url = opts.base_url.rstrip("/")
        self.backoff = Backoff(float(cfg.extra.get("backoff_base", 1.0)), float(cfg.extra.get("backoff_max", 30.0)))
        self.max_tokens_param = str(cfg.extra.get("max_tokens_param", "max_tokens"))
        self.extra_body = dict(cfg.extra.get("extra_body") or {})
        if cfg.chat_template_kwargs:
            self.extra_body.setdefault("chat_template_kwargs", dict(cfg.chat_template_kwargs))
        self._key = os.environ.get(opts.api_key_env) or None
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        self.client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(opts.timeout),
            limits=httpx.Limits(max_connections=opts.concurrency, max_keepalive_connections=opts.concurrency),
        )
        try:
            self.served = self.preflight()
        except UserError:
            self.client.close()
            raise

    def preflight(self) -> dict[str, Any] | None:
        """GET {base_url}/models once before any request: the server is reachable, accepts the key and serves
        `cfg.model`. Returns what it says about the model (recorded); any failure is a one-line `UserError`
        naming the URL and the cause. `cfg.extra["preflight"] = False` skips it (servers without /models)."""
        import httpx

        if not self.cfg.extra.get("preflight", True):
            log.info("openai preflight skipped (preflight=false): %s is not checked before the run", redact_url(self.url))
            return None
        url = f"{self.url}/models"
        shown = redact_url(url)
        timeout = min(self.opts.timeout, PREFLIGHT_TIMEOUT)
        for attempt in range(self.opts.max_retries + 1):
            try:
                r = self.client.get(url, timeout=timeout)
            except httpx.TimeoutException:
                raise UserError(f"{shown} did not answer within {timeout:g} s (is the server up, and is this its URL?)") from None
            except httpx.TransportError as e:
                raise UserError(f"cannot reach {shown}: {self._cause(e)} (is the server running, and is --base-url right?)") from None
            if r.status_code not in RETRY_STATUS or attempt == self.opts.max_retries:
                break
            time.sleep(self.backoff.delay(attempt, retry_after(r.headers)))
        env = f"${self.opts.api_key_env}"
        if r.status_code in (401, 403):
            why = f"the key in {env} was rejected" if self._key else f"it wants an API key and {env} is not set"
            raise UserError(f"{shown}: HTTP {r.status_code}, {why}")
        if r.status_code == 404:
            raise UserError(f"{shown}: HTTP 404; {redact_url(self.url)} is probably not an OpenAI-compatible /v1 base URL "
                            f"(for a server without /models: {SKIP_PREFLIGHT})")
        if r.status_code >= 400:
            raise UserError(f"{shown}: HTTP {r.status_code} {r.reason_phrase} (for a server without /models: {SKIP_PREFLIGHT})")
        try:
            models = [m for m in r.json()["data"] if isinstance(m, dict)]
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{shown}: the answer is not an OpenAI model list; {redact_url(self.url)} is probably not "
                            f"an OpenAI-compatible /v1 base URL (for a server without /models: {SKIP_PREFLIGHT})") from None
        for m in models:
            if m.get("id") == self.cfg.model:
                return {k: m.get(k) for k in ("id", "root", "owned_by", "max_model_len") if m.get(k) is not None}
        ids = [str(m.get("id")) for m in models]
        served = ", ".join(ids[:SHOW_MODELS]) + (f" (+{len(ids) - SHOW_MODELS} more)" if len(ids) > SHOW_MODELS else "")
        raise UserError(f"{redact_url(self.url)} does not serve model {self.cfg.model!r}; "
                        + (f"it serves: {served} (pass one as --model)" if ids else "it lists no models"))

    def describe(self) -> dict[str, Any]:
        import httpx

        return {
            "backend": self.name,
            "model": self.cfg.model,
            "model_path": None,
            "revision": self.cfg.revision,
            "base_url": redact_url(self.url),
            "served_model": self.served,
            "dtype": None,
            "image_budget": {"min_pixels": self.cfg.min_pixels, "max_pixels": self.cfg.max_pixels, "applied": "client"},
            "image_format": IMAGE_FORMAT,
            "chat_template_hash": None,
            "chat_template_kwargs": dict(self.cfg.chat_template_kwargs),
            "trust_remote_code": self.cfg.trust_remote_code,
            "concurrency": self.opts.concurrency,
            "timeout": self.opts.timeout,
            "max_retries": self.opts.max_retries,
            "backoff": {"base": self.backoff.base, "cap": self.backoff.cap},
            "api_key_env": self.opts.api_key_env,
            "api_key_set": self.api_key_set,
            "httpx": httpx.__version__,
        }

    def body(self, req: Request, gen: GenerationKwargs) -> dict[str, Any]:
        """The chat-completions request body for one request."""
        content: list[dict[str, Any]] = [
            {"type": "image_url", "image_url": {"url": data_url(fit_budget(im, self.cfg.min_pixels, self.cfg.max_pixels))}}
            for im in req.images
        ]
        content.append({"type": "text", "text": req.prompt})
        messages: list[dict[str, Any]] = [{"role": "system", "content": req.system}] if req.system else []
        messages.append({"role": "user", "content": content})
        body: dict[str, Any] = {
            "model": self.cfg.model,
            "messages": messages,
            self.max_tokens_param: gen.max_new_tokens,
            "temperature": 0.0 if gen.greedy else gen.temperature,
            "top_p": 1.0 if gen.greedy else gen.top_p,
            "seed": gen.seed,
        }
        return {**body, **self.extra_body}

    @property
    def api_key_set(self) -> bool:
        """Whether a key was read from the environment (the key itself is never exposed)."""
        return self._key is not None

    def post(self, body: dict[str, Any]) -> tuple[str, int | None]:
        """One attempt: (text, completion tokens); raises RetryableError or FatalError."""
        import httpx

        try:
            r = self.client.post(f"{self.url}/chat/completions", json=body)
        except httpx.TimeoutException as e:
            raise RetryableError(f"timeout after {self.opts.timeout:g} s ({type(e).__name__})") from None
        except httpx.TransportError as e:
            raise RetryableError(f"connection error ({type(e).__name__}: {self._scrub(str(e))})") from None
        if r.status_code in RETRY_STATUS or r.status_code >= 500:
            raise RetryableError(f"HTTP {r.status_code}", retry_after(r.headers))
        if r.status_code >= 400:
            raise FatalError(f"HTTP {r.status_code}: {self._scrub(r.text[:300])}")
        try:
            data = r.json()
            text = data["choices"][0]["message"].get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
            raise RetryableError(f"malformed response ({type(e).__name__})") from None
        return text, (data.get("usage") or {}).get("completion_tokens")

    def _one(self, req: Request, gen: GenerationKwargs) -> Response:
        t0 = time.perf_counter()
        try:
            body = self.body(req, gen)
        except Exception as e:  # an image that cannot be encoded
            return Response(text="", error=f"{type(e).__name__}: {e}", retryable=False)
        for attempt in range(self.opts.max_retries + 1):
            try:
                text, n = self.post(body)
                return Response(text=text.strip(), latency=time.perf_counter() - t0, n_tokens=n)
            except FatalError as e:
                log.warning("request %s failed: %s", req.key, e)
                return Response(text="", error=str(e), retryable=False, latency=time.perf_counter() - t0)
            except RetryableError as e:
                if attempt == self.opts.max_retries:
                    log.warning("request %s failed after %d attempts: %s", req.key, attempt + 1, e)
                    return Response(text="", error=f"{e} (after {attempt + 1} attempts)", retryable=True,
                                    latency=time.perf_counter() - t0)
                wait = self.backoff.delay(attempt, e.retry_after)
                log.info("request %s: %s; retry %d/%d in %.2f s", req.key, e, attempt + 1, self.opts.max_retries, wait)
                time.sleep(wait)
        raise AssertionError("unreachable")

    def generate(self, requests: list[Request], gen: GenerationKwargs) -> list[Response]:
        if not requests:
            return []
        with ThreadPoolExecutor(max_workers=min(self.opts.concurrency, len(requests))) as pool:
            return list(pool.map(lambda r: self._one(r, gen), requests))

    def close(self) -> None:
        self.client.close()

    def _cause(self, e: Exception) -> str:
        """A transport error's cause in words: "connection refused", "name or service not known", ..."""
        text = self._scrub(str(e)) or type(e).__name__
        return re.sub(r"^\[Errno -?\d+\]\s*", "", text).lower()

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text


def preflight(cfg: BackendConfig) -> None:
    """The constructor's check (`OpenAIBackend.preflight`) alone: a one-line `UserError` if the server cannot
    be used."""
    OpenAIBackend(cfg).close()


def make_backend(cfg: BackendConfig) -> OpenAIBackend:
    return OpenAIBackend(cfg)
