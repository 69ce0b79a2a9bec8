"""The backend interface: `generate(requests) -> responses`, plus `describe()` for the run record."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, Protocol, runtime_checkable

from PIL import Image

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationKwargs:
    """Decoding settings (recorded in config.json). Greedy unless temperature > 0."""

    max_new_tokens: int = 32
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Request:
    """One user turn: images (in order, placed before the text) and the prompt text."""

    key: str
    images: list[Image.Image]
    prompt: str
    system: str | None = None


@dataclass
class Response:
    """A generated answer; `error` set (and `text` empty) when the backend failed for this request;
    `retryable` errors (timeouts, 5xx) are retried when the run is resumed."""

    text: str
    error: str | None = None
    retryable: bool = False
    latency: float = 0.0
    n_tokens: int | None = None
    visual_tokens: int | None = None  # tokens the request's images became in the prompt (None: not known)


@dataclass
class Prepared:
    """A batch whose model inputs were built ahead of `generate` (see `PreparingBackend`): the inputs, or
    the exception building them raised, and the seconds it took (counted in each response's latency)."""

    requests: list[Request]
    inputs: Any = None
    error: Exception | None = None
    seconds: float = 0.0


SPEED_ONLY = "speed_only"  # metadata key of an options field that changes no number (left out of `settings`)


@dataclass
class BackendConfig:
    """What selects and configures a backend (everything here is recorded in config.json, except
    secrets, which are read from the environment and never stored).

    Settings of one backend alone live in `options`, a dataclass that backend defines (e.g.
    `openai.OpenAIOptions`; None: its defaults). `extra` holds free-form engine arguments."""

    backend: str = "hf"
    model: str = "vopd-tiny"
    revision: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    max_pixels: int | None = None
    min_pixels: int | None = None
    batch_size: int = field(default=16, metadata={SPEED_ONLY: True})
    trust_remote_code: bool = False  # run the checkpoint's own Python code (transformers/vLLM); off by default
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. {"enable_thinking": false}
    options: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    chosen_by: str | None = None  # why this backend: "named", or the `auto` rule that picked it (recorded)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_pixels is not None and self.max_pixels < 28 * 28:
            raise ValueError(f"max_pixels must be >= 784, got {self.max_pixels}")
        if self.options is not None and not (is_dataclass(self.options) and not isinstance(self.options, type)):
            raise TypeError(f"BackendConfig.options must be a dataclass instance, got {type(self.options).__name__}")

    def to_dict(self) -> dict[str, Any]:
        """The settings as recorded in config.json: the backend's `options` fields flattened in place of
        `options` (so an openai run records base_url, concurrency, ... as it always has)."""
        out: dict[str, Any] = {}
        for k, v in asdict(self).items():
            if k == "options":
                out.update(v or {})
            else:
                out[k] = v
        return out

    def settings(self) -> dict[str, Any]:
        """`to_dict()` without the fields marked speed-only (batch size, concurrency, timeouts, retries):
        what could change a recorded number."""
        speed = {f.name for f in fields(self) if f.metadata.get(SPEED_ONLY)}
        if self.options is not None:
            speed |= {f.name for f in fields(self.options) if f.metadata.get(SPEED_ONLY)}
        out = {k: v for k, v in self.to_dict().items() if k not in speed}
        for k in ("trust_remote_code", "chat_template_kwargs"):  # at their defaults: absent, as in earlier releases
            if not out.get(k):
                out.pop(k, None)
        return out


class Backend(Protocol):
    """What the harness needs from a backend."""

    name: str

    def generate(self, requests: list[Request], gen: GenerationKwargs) -> list[Response]:
        """One response per request, in order. Must not raise for a single bad request."""
        ...

    def describe(self) -> dict[str, Any]:
        """Facts that change numbers: resolved model path, revision/commit, dtype, image budget, versions."""
        ...


@runtime_checkable
class PreparingBackend(Backend, Protocol):
    """Optional: a backend that can build a batch's inputs (CPU work: chat template, image preprocessing)
    apart from generating, so the harness prepares the next batch in a thread while this one generates.
    `generate_prepared(prepare(reqs), gen)` must return exactly what `generate(reqs, gen)` would.
    A backend declares it by implementing both methods; the harness asks `isinstance(b, PreparingBackend)`."""

    def prepare(self, requests: list[Request]) -> Prepared:
        """Build the inputs; never raises for a bad request (the error is kept in `Prepared.error`)."""
        ...

    def generate_prepared(self, prepared: Prepared, gen: GenerationKwargs) -> list[Response]:
        """As `generate`, on prepared inputs (a failed preparation fails like `generate` would)."""
        ...


def isolate_failures(
    fn: Callable[[list[Request], GenerationKwargs], list[Response]], requests: list[Request], gen: GenerationKwargs
) -> list[Response]:
    """Run `fn` on the batch; if it raises, retry request by request so one bad request only fails
    itself (recorded as a retryable error, never as a wrong answer)."""
    if not requests:
        return []
    try:
        return fn(requests, gen)
    except Exception as e:
        if len(requests) == 1:
            log.warning("generation failed for %s: %s", requests[0].key, e)
            return [Response(text="", error=f"{type(e).__name__}: {e}", retryable=True)]
        log.warning("batch generation failed (%s); retrying requests one by one", e)
        return [r for req in requests for r in isolate_failures(fn, [req], gen)]
