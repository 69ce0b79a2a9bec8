"""The LLM judge: grade responses by asking a model on an OpenAI-compatible server (e.g. `vllm serve`).

One call per batch, from the protocol's scorer:

    judge = Judge(JudgeConfig(model="Qwen/Qwen3-8B", base_url="http://127.0.0.1:8000/v1"), run_dir=run)
    verdicts = judge.grade([JudgeRequest(question=..., answer=..., response=..., extracted=...)])

- The prompt is a named template (`judge_prompts.PROMPTS`: `vision-opd`, the released Vision-OPD judge
  prompt; `generic`), sent as one user message at temperature 0. A reply becomes a verdict by the prompt's
  decision rule (`judge_prompts.decide`); a reply with neither yes nor no is a recorded error, never a wrong
  answer (unless `on_undecided="wrong"`, the released script's behaviour).
- A failure (5xx, timeout, dropped connection, garbage JSON after the retries) is `Verdict(correct=None,
  error=..., retryable=True)`: the caller records it and a resumed run asks again. 4xx are not retryable.
- Cache: a JSONL file of the replies that decided (`judge_cache.jsonl` in the run directory, or
  `cache=PATH`, shareable across runs), keyed by (judge model, prompt text) -- the prompt holds the
  question, the gold answer and the response. A re-run, a resume or a second protocol over the same
  responses costs no call. Appends are one write each (flushed, fsynced); a line torn by a kill is skipped
  on reading and the next append starts on a fresh line, so nothing else is lost. The verdict is re-derived
  from the cached reply with the current decision rule.
- Preflight: the constructor lists the server's models (`backends.openai.OpenAIBackend.preflight`, reused)
  and stops with a one-line `UserError` naming --judge-base-url / --judge when the server cannot be used.

The API key is read from the environment variable `api_key_env` and never stored or logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import click

from vopd_bench.backends.base import SPEED_ONLY, BackendConfig
from vopd_bench.errors import UserError
from vopd_bench.judge_prompts import DECISION_RULES, PROMPTS, JudgePrompt, decide

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

CACHE_NAME = "judge_cache.jsonl"
CACHE_VERSION = 1
UNDECIDED = ("error", "retry", "wrong")
SHOW_REPLY = 80  # characters of an undecided reply quoted in its error


def _f(default: Any, help: str, speed: bool = False) -> Any:
    meta = {"help": help, **({SPEED_ONLY: True} if speed else {})}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class JudgeConfig:
    """The judge's settings (recorded in config.json by `record()`, without the speed-only ones and the key)."""

    model: str = _f("", "The judge model's id on the server (--judge).")
    base_url: str = _f("", "The server's OpenAI-compatible /v1 URL (--judge-base-url).")
    prompt: str = _f("generic", "Judge prompt: vision-opd (the released Vision-OPD judge) or generic.")
    decision: str | None = _f(None, "Decision rule: exact or lenient (None: the prompt's own).")
    on_undecided: str = _f("error", "A reply with neither yes nor no: error (recorded, not retried), retry "
                                    "(recorded, retried on resume) or wrong (the released script's rule).")
    api_key_env: str = _f("JUDGE_API_KEY", "Environment variable holding the judge server's key (never stored).")
    temperature: float = _f(0.0, "Sampling temperature of the judge (0: greedy, as released).")
    max_tokens: int = _f(2048, "Most tokens the judge may reply with (released: 2048).")
    extra_body: dict[str, Any] = _f({}, "Merged into every request body, e.g. "
                                        "{'chat_template_kwargs': {'enable_thinking': False}}.")
    cache: str | None = _f(None, "Cache file (JSONL); None: judge_cache.jsonl in the run directory.")
    timeout: float = _f(60.0, "Seconds per request attempt.", speed=True)
    max_retries: int = _f(3, "Retries of a request on 5xx/429/timeouts/garbage replies.", speed=True)
    concurrency: int = _f(8, "Parallel requests.", speed=True)
    backoff_base: float = _f(1.0, "Seconds before the first retry (doubling, with jitter).", speed=True)
    backoff_max: float = _f(30.0, "Longest wait between retries, seconds.", speed=True)
    preflight: bool = _f(True, "List the server's models before the run (off: servers without /models).",
                         speed=True)

    def __post_init__(self) -> None:
        if not self.model:
            raise UserError("the judge needs a model: --judge MODEL (its id on the judge server)")
        if not self.base_url:
            raise UserError("--judge needs --judge-base-url (the judge server's /v1 URL, e.g. http://127.0.0.1:8000/v1)")
        if not self.base_url.startswith(("http://", "https://")):
            raise UserError(f"--judge-base-url must start with http:// or https://, got {self.base_url!r}")
        if self.prompt not in PROMPTS:
            raise UserError(f"unknown judge prompt {self.prompt!r} (--judge-prompt); choose from {', '.join(PROMPTS)}")
        if self.decision is not None and self.decision not in DECISION_RULES:
            raise UserError(f"unknown judge decision rule {self.decision!r}; choose from {', '.join(DECISION_RULES)}")
        if self.on_undecided not in UNDECIDED:
            raise UserError(f"judge on_undecided must be one of {', '.join(UNDECIDED)}, got {self.on_undecided!r}")
        if self.max_tokens < 1 or self.temperature < 0:
            raise UserError("judge: need max_tokens >= 1 (--judge-max-tokens) and temperature >= 0")
        if self.timeout <= 0 or self.max_retries < 0 or self.concurrency < 1:
            raise UserError("judge: need timeout > 0 (--judge-timeout), max_retries >= 0 and concurrency >= 1 "
                            "(--judge-concurrency)")
        if self.backoff_base < 0 or self.backoff_max < 0:
            raise UserError("judge: backoff_base and backoff_max must be >= 0")

    @property
    def template(self) -> JudgePrompt:
        return PROMPTS[self.prompt]

    @property
    def rule(self) -> str:
        """The decision rule in force (the prompt's own unless set)."""
        return self.decision or self.template.decision

    def record(self) -> dict[str, Any]:
        """What changes a judged number, for config.json (speed-only fields and secrets left out)."""
        from vopd_bench.backends.openai import redact_url

        out = {f.name: getattr(self, f.name) for f in fields(self) if not f.metadata.get(SPEED_ONLY)}
        out.update(base_url=redact_url(self.base_url), decision=self.rule, prompt_sha256=self.template.template_hash,
                   prompt_source=self.template.source)
        return out

    @classmethod
    def help_table(cls) -> list[tuple[str, str, str]]:
        """(name, default, help) of every field."""
        return [(f.name, repr(f.default if f.default is not MISSING else f.default_factory()),  # type: ignore[misc]
                 f.metadata["help"]) for f in fields(cls)]


@dataclass(frozen=True)
class JudgeRequest:
    """One response to grade. `response` has its reasoning already stripped by the caller; `extracted` is the
    protocol's extracted answer, if any (the `vision-opd` prompt grades it in place of the response, as the
    released script does). `question` is the text the model saw (for `vision-opd`: the full query, options
    and prompt suffix included, "<image>" removed)."""

    question: str
    answer: str
    response: str
    options: list[str] | None = None
    extracted: str | None = None


@dataclass
class Verdict:
    """The judge's verdict on one response: `correct` True/False, or None with an `error` (`retryable`: a
    resumed run should ask again). `prompt` is the exact text sent, `reply` the raw reply."""

    correct: bool | None
    error: str | None = None
    retryable: bool = False
    prompt: str = ""
    reply: str | None = None
    model: str = ""
    cached: bool = False
    undecided: bool = False  # the reply said neither yes nor no (scored per `on_undecided`)
    attempts: int = 0  # requests sent for it in this call (0: from the cache)
    latency: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Verdict:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# ---------------------------------------------------------------- the cache
def cache_key(model: str, prompt: str) -> str:
    """The cache key of (judge model, prompt text)."""
    return hashlib.sha256(json.dumps([model, prompt], ensure_ascii=False).encode()).hexdigest()


class JudgeCache:
    """Append-only JSONL of judge replies that decided, keyed by `cache_key`; `path=None`: in memory only."""

    def __init__(self, path: Path | str | None) -> None:
        self.path = Path(path) if path is not None else None
        self.entries: dict[str, dict[str, Any]] = {}
        self.skipped = 0  # unreadable lines (a torn last line from a kill, or damage)
        self._lock = threading.Lock()
        if self.path is not None:
            self._load()

    def _load(self) -> None:
        assert self.path is not None
        if self.path.is_dir():
            raise UserError(f"--judge-cache {self.path} is a folder; give a file path (e.g. {self.path / CACHE_NAME})")
        if not self.path.exists():
            return
        try:
            data = self.path.read_bytes()
        except OSError as e:
            raise UserError(f"--judge-cache {self.path}: cannot read it ({e.strerror})") from None
        for line in data.splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                key, model, prompt, reply = rec["key"], rec["model"], rec["prompt"], rec["reply"]
                if key != cache_key(model, prompt) or not isinstance(reply, str):
                    raise ValueError("key mismatch")
            except (ValueError, KeyError, TypeError):
                self.skipped += 1
                continue
            self.entries[key] = rec
        if self.skipped:
            log.warning("%s: skipped %d unreadable line(s) (a write cut by a kill?); their items will be asked again",
                        self.path, self.skipped)

    def get(self, model: str, prompt: str) -> str | None:
        rec = self.entries.get(cache_key(model, prompt))
        return None if rec is None else rec["reply"]

    def put(self, model: str, prompt: str, reply: str, correct: bool, prompt_name: str) -> None:
        """Remember a reply that decided; on disk, one durable append (on a fresh line after a torn one)."""
        key = cache_key(model, prompt)
        rec = {"key": key, "model": model, "prompt_name": prompt_name, "prompt": prompt, "reply": reply,
               "correct": correct, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "version": CACHE_VERSION}
        with self._lock:
            self.entries[key] = rec
            if self.path is None:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            blob = (json.dumps(rec, ensure_ascii=False) + "\n").encode()
            with self.path.open("a+b") as f:
                if f.tell() > 0:
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":
                        blob = b"\n" + blob  # the last write was cut: leave it as a skipped line
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())

    def __len__(self) -> int:
        return len(self.entries)


# ---------------------------------------------------------------- the server
def _judge_message(msg: str) -> str:
    """The openai backend's preflight message, worded for the judge's options."""
    msg = msg.replace("--base-url", "--judge-base-url").replace("as --model", "as --judge")
    msg = msg.replace("--no-preflight", "--judge-no-preflight")
    if "--judge" not in msg:
        msg += " (see --judge-base-url)"
    return f"judge: {msg}"


def _client(cfg: JudgeConfig) -> Any:
    """The judge's HTTP client: the openai backend (its httpx client, retry classes and preflight), reused."""
    from vopd_bench.backends.openai import OpenAIBackend, OpenAIOptions

    class JudgeClient(OpenAIBackend):
        name = "judge"

        def preflight(self) -> dict[str, Any] | None:
            try:
                return super().preflight()
            except UserError as e:
                raise UserError(_judge_message(str(e))) from None

    opts = OpenAIOptions(base_url=cfg.base_url, api_key_env=cfg.api_key_env, concurrency=cfg.concurrency,
                         timeout=cfg.timeout, max_retries=cfg.max_retries)
    extra = {"backoff_base": cfg.backoff_base, "backoff_max": cfg.backoff_max, "preflight": cfg.preflight}
    return JudgeClient(BackendConfig(backend="openai", model=cfg.model, batch_size=1, options=opts, extra=extra))


def preflight(cfg: JudgeConfig) -> None:
    """Check the judge server alone (a one-line `UserError` if it cannot be used)."""
    _client(cfg).close()


class JudgeError(Exception):
    """The judge server failed for a prompt (after retries): recorded on the sample, asked again on resume."""


class Judge:
    """Grades batches of responses with the configured judge (see the module docstring)."""

    def __init__(self, cfg: JudgeConfig, run_dir: Path | str | None = None) -> None:
        self.cfg = cfg
        self.prompt = cfg.template
        self.rule = cfg.rule
        path = cfg.cache if cfg.cache is not None else (Path(run_dir) / CACHE_NAME if run_dir is not None else None)
        self.cache = JudgeCache(path)
        self.client = _client(cfg)  # preflight here, before anything is asked
        self.calls = 0  # requests sent (attempts included) by this instance
        self.consulted = self.cache_hits = 0  # prompts asked through `reply`, of them answered by the cache
        self._calls_lock = threading.Lock()

    def __enter__(self) -> Judge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    def describe(self) -> dict[str, Any]:
        """`cfg.record()` plus what the server said about the model, for config.json."""
        return {**self.cfg.record(), "served_model": self.client.served, "cache_path": str(self.cache.path or ""),
                "api_key_set": self.client.api_key_set}

    def render(self, req: JudgeRequest) -> str:
        """The exact prompt text for one request."""
        shown = req.extracted if self.prompt.uses_extracted and req.extracted is not None else req.response
        return self.prompt.render(question=req.question, answer=req.answer, response=shown, options=req.options)

    def verdict(self, prompt: str, reply: str, cached: bool, attempts: int = 0,
                latency: float | None = None) -> Verdict:
        """A reply read with the decision rule (an undecided one per `on_undecided`)."""
        correct = decide(self.rule, reply)
        v = Verdict(correct=correct, prompt=prompt, reply=reply, model=self.cfg.model, cached=cached,
                    attempts=attempts, latency=latency)
        if correct is None:
            v.undecided = True
            if self.cfg.on_undecided == "wrong":
                v.correct = False
            else:
                shown = reply if len(reply) <= SHOW_REPLY else reply[:SHOW_REPLY] + "..."
                v.error = f"judge reply is neither yes nor no ({self.rule} rule): {shown!r}"
                v.retryable = self.cfg.on_undecided == "retry"
        return v

    def grade(self, requests: Iterable[JudgeRequest]) -> list[Verdict]:
        """One verdict per request, in order; never raises for a single failed request."""
        prompts = [self.render(r) for r in requests]
        out: list[Verdict | None] = [None] * len(prompts)
        todo: dict[str, list[int]] = {}
        for i, p in enumerate(prompts):
            reply = self.cache.get(self.cfg.model, p)
            if reply is not None:
                out[i] = self.verdict(p, reply, cached=True)
            else:
                todo.setdefault(p, []).append(i)
        if todo:
            log.info("judge %s: %d of %d prompts asked (%d from the cache)", self.cfg.model, len(todo), len(prompts),
                     len(prompts) - sum(len(v) for v in todo.values()))
            with ThreadPoolExecutor(max_workers=min(self.cfg.concurrency, len(todo))) as pool:
                for p, v in zip(todo, pool.map(self._ask, todo)):
                    for i in todo[p]:
                        out[i] = replace(v)
        return [v for v in out if v is not None]

    def reply(self, prompt: str) -> str:
        """The raw reply to a ready-made `prompt` (the protocols' judge hook, `protocol.apply_judge`, which reads it
        with the protocol's own rule): from the cache, else from the server (retried; the reply cached).
        Raises `JudgeError` when the server fails."""
        with self._calls_lock:
            self.consulted += 1
        cached = self.cache.get(self.cfg.model, prompt)
        if cached is not None:
            with self._calls_lock:
                self.cache_hits += 1
            return cached
        v = self._ask(prompt)
        if v.reply is None:
            raise JudgeError(v.error or "judge: no reply")
        if v.undecided:  # `_ask` caches only replies its own rule decides; the protocol's rule decides this one
            self.cache.put(self.cfg.model, prompt, v.reply, False, self.prompt.name)
        return v.reply

    def _ask(self, prompt: str) -> Verdict:
        """One prompt through the server, retried; a reply that decides goes to the cache."""
        from vopd_bench.backends.openai import FatalError, RetryableError

        body: dict[str, Any] = {"model": self.cfg.model, "messages": [{"role": "user", "content": prompt}],
                                "temperature": self.cfg.temperature, "max_tokens": self.cfg.max_tokens,
                                **self.cfg.extra_body}
        t0 = time.perf_counter()
        for attempt in range(self.cfg.max_retries + 1):
            with self._calls_lock:
                self.calls += 1
            try:
                text, _ = self.client.post(body)
            except FatalError as e:
                log.warning("judge request failed: %s", e)
                return Verdict(correct=None, error=f"judge: {e}", retryable=False, prompt=prompt, model=self.cfg.model,
                               attempts=attempt + 1, latency=time.perf_counter() - t0)
            except RetryableError as e:
                if attempt == self.cfg.max_retries:
                    log.warning("judge request failed after %d attempts: %s", attempt + 1, e)
                    return Verdict(correct=None, error=f"judge: {e} (after {attempt + 1} attempts)", retryable=True,
                                   prompt=prompt, model=self.cfg.model, attempts=attempt + 1,
                                   latency=time.perf_counter() - t0)
                time.sleep(self.client.backoff.delay(attempt, e.retry_after))
                continue
            reply = text.strip()
            v = self.verdict(prompt, reply, cached=False, attempts=attempt + 1, latency=time.perf_counter() - t0)
            if not v.undecided:
                self.cache.put(self.cfg.model, prompt, reply, bool(v.correct), self.prompt.name)
            return v
        raise AssertionError("unreachable")


# ---------------------------------------------------------------- statistics for the report
@dataclass(frozen=True)
class JudgeStats:
    """How the judge was used on a set of items, and how it agrees with the rules where both decided."""

    items: int  # pairs seen
    consulted: int  # items with a judge verdict (asked or cached)
    asked: int  # ... of which the server was asked in this run
    cache_hits: int
    decided: int  # ... the judge said yes or no
    errors: int  # ... the judge failed (transport or undecided reply)
    retryable_errors: int
    undecided: int  # replies with neither yes nor no (errors, or scored wrong with on_undecided=wrong)
    both_decided: int  # the rules and the judge both decided
    agree: int
    rule_yes_judge_no: int
    rule_no_judge_yes: int

    @property
    def agreement(self) -> float | None:
        return self.agree / self.both_decided if self.both_decided else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "agreement": self.agreement}


def _get(v: Verdict | Mapping[str, Any], name: str) -> Any:
    return v.get(name) if isinstance(v, Mapping) else getattr(v, name)


def judge_stats(pairs: Iterable[tuple[bool | None, Verdict | Mapping[str, Any] | None]]) -> JudgeStats:
    """Stats over (rule verdict, judge verdict) pairs: the rule's True/False/None (None: the rules could not
    decide), the judge's `Verdict` or its `to_dict()` (None: not consulted)."""
    n = consulted = cached = decided = errors = retryable = undecided = both = agree = yn = ny = 0
    for rule, v in pairs:
        n += 1
        if v is None:
            continue
        consulted += 1
        cached += bool(_get(v, "cached"))
        undecided += bool(_get(v, "undecided"))
        j = _get(v, "correct")
        if j is None:
            errors += 1
            retryable += bool(_get(v, "retryable"))
            continue
        decided += 1
        if rule is None:
            continue
        both += 1
        agree += rule == j
        yn += rule and not j
        ny += j and not rule
    return JudgeStats(items=n, consulted=consulted, asked=consulted - cached, cache_hits=cached, decided=decided,
                      errors=errors, retryable_errors=retryable, undecided=undecided, both_decided=both,
                      agree=agree, rule_yes_judge_no=yn, rule_no_judge_yes=ny)


# ---------------------------------------------------------------- command line
# (parameter declarations, click.option keywords), in --help order (like commands/_options.SHARED)
JUDGE_OPTIONS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (("--judge",), dict(default=None, metavar="MODEL",
                        help="Grade with an LLM judge: its model id on --judge-base-url (where the protocol asks "
                             "for one or the rules cannot decide).")),
    (("--judge-base-url",), dict(default=None, metavar="URL",
                                 help="The judge server's OpenAI-compatible /v1 URL (e.g. a local `vllm serve`).")),
    (("--judge-cache",), dict(default=None, metavar="PATH",
                              help="Judge cache file (JSONL), e.g. one shared across runs. "
                                   "Default: judge_cache.jsonl in the run directory.")),
    (("--judge-prompt",), dict(default=None, type=click.Choice(list(PROMPTS)),
                               help="Judge prompt (default: the protocol's).")),
    (("--judge-api-key-env",), dict(default="JUDGE_API_KEY", show_default=True,
                                    help="Environment variable holding the judge server's key.")),
    (("--judge-max-tokens",), dict(type=int, default=2048, show_default=True, help="Judge reply length (recorded).")),
    (("--judge-concurrency",), dict(type=int, default=8, show_default=True, help="Parallel judge requests.")),
    (("--judge-timeout",), dict(type=float, default=60.0, show_default=True, help="Seconds per judge request.")),
    (("--judge-no-preflight",), dict(is_flag=True, help="Skip the check of the judge server's /models list.")),
)


def judge_options(f: F) -> F:
    """Decorator adding `JUDGE_OPTIONS` to a click command."""
    for decls, kw in reversed(JUDGE_OPTIONS):
        f = click.option(*decls, **kw)(f)
    return f


def judge_config_from_cli(kw: Mapping[str, Any], default_prompt: str = "generic") -> JudgeConfig | None:
    """The `JudgeConfig` of the `judge_options` values (None: no --judge given); `default_prompt` is the
    protocol's judge prompt. Bad values are a one-line `UserError`."""
    model, url = kw.get("judge"), kw.get("judge_base_url")
    if not model:
        if url or kw.get("judge_cache"):
            raise UserError("--judge-base-url/--judge-cache need --judge MODEL (the judge model's id on the server)")
        return None
    return JudgeConfig(model=model, base_url=url or "", prompt=kw.get("judge_prompt") or default_prompt,
                       api_key_env=kw.get("judge_api_key_env") or "JUDGE_API_KEY",
                       max_tokens=kw.get("judge_max_tokens", 2048), concurrency=kw.get("judge_concurrency", 8),
                       timeout=kw.get("judge_timeout", 60.0), cache=kw.get("judge_cache"),
                       preflight=not kw.get("judge_no_preflight"))
