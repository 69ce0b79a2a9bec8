"""Hugging Face transformers backend: batched `generate` with left padding (CPU or CUDA)."""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from vopd_bench import runtime
from vopd_bench.backends.base import (
    BackendConfig,
    GenerationKwargs,
    Prepared,
    Request,
    Response,
    isolate_failures,
)
from vopd_bench.errors import UserError
from vopd_bench.inputs import (
    PROCESSOR_LOCK,
    apply_image_budget,
    count_visual_tokens,
    encode,
    set_image_budget,
)
from vopd_bench.models import (
    TRUST_FLAG,
    check_chat_template,
    fingerprint,
    first_line,
    load_config,
    load_processor,
    model_label,
    resolve_model,
    template_hash,
)

log = logging.getLogger(__name__)


def check_image_text_model(config: Any, path: str, name: str) -> None:
    """The HF backend loads `AutoModelForImageTextToText`: refuse a config of another kind (e.g. text-only, or
    a remote-code checkpoint whose `auto_map` has no image-text-to-text class)."""
    from transformers import __version__
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING

    if type(config) in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING:  # the check from_pretrained makes
        return
    auto_map = getattr(config, "auto_map", None) or {}
    if "AutoModelForImageTextToText" in auto_map:  # the checkpoint's own class (loaded with --trust-remote-code)
        return
    if auto_map:
        raise UserError(
            f"{model_label(name, path)}: its own code ({', '.join(sorted(auto_map))} in auto_map) has no "
            "AutoModelForImageTextToText class, which the hf backend loads: use the model's transformers-native "
            "version, or serve it (--backend openai)"
        )
    raise UserError(
        f"{model_label(name, path)} has model_type {config.model_type!r}, not an image-text-to-text model in "
        f"transformers {__version__}: vopd-bench needs a vision-language chat model (a newer transformers may "
        "know it; or serve it and use --backend openai)"
    )


def preflight(cfg: BackendConfig) -> None:
    """What the constructor checks before it reads any weight: the model path resolves, it needs no remote code
    unless `--trust-remote-code` is given, transformers loads its config as an image-text-to-text model, and its
    processor has a chat template. A failure is a one-line `UserError` naming the path."""
    path = resolve_model(cfg.model)
    trust = cfg.trust_remote_code
    check_image_text_model(load_config(path, cfg.model, cfg.revision, trust), path, cfg.model)
    load_processor(path, cfg.model, cfg.revision, trust)


class HFBackend:
    """Makes the `preflight` checks (those that apply to what it is not handed) before loading the weights."""

    name = "hf"

    def __init__(self, cfg: BackendConfig, model: Any = None, processor: Any = None) -> None:
        from transformers import AutoModelForImageTextToText

        self.cfg = cfg
        self.path = resolve_model(cfg.model)
        self.device = runtime.pick_device(cfg.device)  # auto: one GPU per rank under torchrun/accelerate
        self.dtype = runtime.torch_dtype(cfg.dtype, self.device)  # auto: bfloat16 on CUDA, float32 elsewhere
        trust = cfg.trust_remote_code
        if model is None:
            check_image_text_model(load_config(self.path, cfg.model, cfg.revision, trust), self.path, cfg.model)
        if processor is None:
            processor = load_processor(self.path, cfg.model, cfg.revision, trust)
        else:
            check_chat_template(processor, self.path, cfg.model)
        self.processor = processor
        self.budget = set_image_budget(processor, cfg.min_pixels, cfg.max_pixels)  # per family; refused before loading
        try:
            self.model = model or AutoModelForImageTextToText.from_pretrained(
                self.path, revision=cfg.revision, dtype=self.dtype, trust_remote_code=trust
            )
        except (OSError, ValueError, KeyError) as e:
            if "trust_remote_code" in str(e):
                raise UserError(f"{model_label(cfg.model, self.path)} needs its own Python code: pass {TRUST_FLAG} "
                                "to run it (only for a checkpoint you trust)") from None
            raise UserError(f"cannot load {model_label(cfg.model, self.path)}: {first_line(e)}") from None
        self.model.to(self.device).eval()
        tok = self.processor.tokenizer
        tok.padding_side = "left"
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        apply_image_budget(self.model, self.budget)  # what the model shares with its processor (any-res grids)

    def describe(self) -> dict[str, Any]:
        import transformers

        return {
            "backend": self.name,
            "model": self.cfg.model,
            "model_path": self.path,
            "revision": self.cfg.revision or getattr(self.model.config, "_commit_hash", None),
            "fingerprint": fingerprint(self.path),
            "architecture": type(self.model).__name__,
            "dtype": str(self.dtype).replace("torch.", ""),
            "device": self.device,
            "image_budget": self.budget,
            "chat_template_hash": template_hash(getattr(self.processor, "chat_template", None),
                                                self.cfg.chat_template_kwargs),
            "chat_template_kwargs": dict(self.cfg.chat_template_kwargs),
            "trust_remote_code": self.cfg.trust_remote_code,
            "transformers": transformers.__version__,
        }

    def _encode(self, reqs: list[Request]) -> dict[str, Any]:
        """The processor's CPU tensors for a batch (`inputs.encode`, with the run's chat-template variables)."""
        return encode(self.processor, reqs, chat_template_kwargs=self.cfg.chat_template_kwargs)

    def _to_device(self, enc: Any) -> dict[str, Any]:
        return {k: v.to(self.device) if hasattr(v, "to") else v for k, v in enc.items()}

    @torch.no_grad()
    def _run(self, reqs: list[Request], enc: Any, gen: GenerationKwargs, t_prep: float) -> list[Response]:
        """Generate from encoded inputs; latency per request includes the `t_prep` seconds of encoding."""
        t0 = time.perf_counter()
        visual = count_visual_tokens(self.processor, enc["input_ids"]) or [None] * len(reqs)
        inputs = self._to_device(enc)
        kw: dict[str, Any] = {"max_new_tokens": gen.max_new_tokens, "pad_token_id": self.pad_id}
        if gen.greedy:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            torch.manual_seed(gen.seed)
            kw.update(do_sample=True, temperature=gen.temperature, top_p=gen.top_p, top_k=None)
        out = self.model.generate(**inputs, **kw)
        new = out[:, inputs["input_ids"].shape[1] :]
        with PROCESSOR_LOCK:
            texts = self.processor.batch_decode(new, skip_special_tokens=True)
        dt = (t_prep + time.perf_counter() - t0) / len(reqs)
        lens = (new != self.pad_id).sum(dim=1).tolist()
        return [Response(text=t.strip(), latency=dt, n_tokens=int(n), visual_tokens=v)
                for t, n, v in zip(texts, lens, visual)]

    def _generate(self, reqs: list[Request], gen: GenerationKwargs) -> list[Response]:
        t0 = time.perf_counter()
        enc = self._encode(reqs)
        return self._run(reqs, enc, gen, time.perf_counter() - t0)

    def generate(self, requests: list[Request], gen: GenerationKwargs) -> list[Response]:
        return isolate_failures(self._generate, requests, gen)

    def prepare(self, requests: list[Request]) -> Prepared:
        """Encode a batch ahead of `generate_prepared` (thread-safe; keeps the error instead of raising)."""
        t0 = time.perf_counter()
        try:
            enc = self._encode(requests)
        except Exception as e:
            return Prepared(requests, error=e, seconds=time.perf_counter() - t0)
        return Prepared(requests, enc, seconds=time.perf_counter() - t0)

    def generate_prepared(self, prepared: Prepared, gen: GenerationKwargs) -> list[Response]:
        """As `generate(prepared.requests, gen)`: a failed batch is retried request by request."""

        def run(reqs: list[Request], gen: GenerationKwargs) -> list[Response]:
            if reqs is not prepared.requests:  # a single request, retried after the batch failed
                return self._generate(reqs, gen)
            if prepared.error is not None:
                raise prepared.error
            return self._run(reqs, prepared.inputs, gen, prepared.seconds)

        return isolate_failures(run, prepared.requests, gen)


def make_backend(cfg: BackendConfig) -> HFBackend:
    return HFBackend(cfg)
