"""`vopd_hf`: an lmms-eval chat model that runs vopd-bench's HF backend (Qwen-VL-style checkpoints).

lmms-eval hands it chat messages (from a task's `doc_to_messages`); they become our `Request`s and go
through `HFBackend.generate` in task order and in batches of `batch_size`, exactly as `vopd-bench eval`
batches a view, so the same checkpoint gives the same responses either way.

    lmms-eval --model vopd_hf --model_args pretrained=vopd-tiny,batch_size=16 --tasks vopd_synth ...
    lmms-eval --model vopd_hf --model_args pretrained=vopd-tiny --batch_size 16 --tasks vopd_synth ...
"""

from __future__ import annotations

import logging
from typing import Any

from lmms_eval.api.instance import GenerationResult, Instance, TokenCounts
from lmms_eval.api.model import lmms
from PIL import Image

from vopd_bench.backends.base import BackendConfig, GenerationKwargs, Request
from vopd_bench.lmms.bridge import ERROR_PREFIX

log = logging.getLogger(__name__)


def _opt_int(v: Any) -> int | None:
    return None if v in (None, "", "None") else int(v)


def _batch_size(v: Any) -> int:
    """A positive integer (lmms-eval's `auto` batch-size search is not supported)."""
    try:
        n = int(v)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise ValueError(f"vopd_hf: batch_size must be a positive integer, got {v!r}")
    return n


def to_request(key: str, messages: list[dict[str, Any]]) -> Request:
    """lmms-eval chat messages (one user turn, optional system turn) → our Request (images first)."""
    images: list[Image.Image] = []
    texts: list[str] = []
    system: list[str] = []
    for msg in messages:
        for part in msg.get("content") or []:
            kind = part.get("type")
            if msg.get("role") == "system" and kind == "text":
                system.append(part["text"])
            elif kind == "text":
                texts.append(part["text"])
            elif kind == "image":
                url = part.get("url")
                images.append(url if isinstance(url, Image.Image) else Image.open(url).convert("RGB"))
            else:
                raise ValueError(f"vopd_hf: unsupported content type {kind!r} (images and text only)")
    return Request(key=key, images=images, prompt="\n".join(texts), system="\n".join(system) or None)


def to_gen_kwargs(g: dict[str, Any]) -> GenerationKwargs:
    """lmms-eval generation kwargs → ours (greedy unless temperature > 0; stop strings are not used)."""
    temp = float(g.get("temperature") or 0.0)
    if not g.get("do_sample", temp > 0):
        temp = 0.0
    return GenerationKwargs(max_new_tokens=int(g.get("max_new_tokens", 32)), temperature=temp,
                            top_p=float(g.get("top_p") or 1.0), seed=int(g.get("seed", 0)))


class VopdHF(lmms):
    """lmms-eval chat model over `vopd_bench.backends.hf.HFBackend`."""

    is_simple = False

    def __init__(self, pretrained: str = "vopd-tiny", batch_size: int | str = 16, device: str | None = "auto",
                 dtype: str = "auto", revision: str | None = None, max_pixels: int | str | None = None,
                 min_pixels: int | str | None = None, backend: Any = None, **kwargs: Any) -> None:
        super().__init__()
        from vopd_bench.backends.hf import HFBackend

        if kwargs:
            log.debug("vopd_hf: ignoring model args %s", sorted(kwargs))
        self.cfg = BackendConfig(backend="hf", model=pretrained, revision=revision, dtype=dtype,
                                 device=device or "auto", max_pixels=_opt_int(max_pixels),
                                 min_pixels=_opt_int(min_pixels), batch_size=_batch_size(batch_size))
        self.backend = backend or HFBackend(self.cfg)
        self.batch_size_per_gpu = self.cfg.batch_size

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict[str, Any] | None = None) -> VopdHF:
        """The model from `--model_args` plus lmms-eval's own options (`--batch_size`, `--device`).

        lmms-eval's default would call `cls(**model_args, **options)`, which fails when a key is in both;
        it always passes `--batch_size` (1 unless given), so `batch_size=N` in `--model_args` would never
        work. A key given in both is taken from `--model_args`, with a warning where an explicitly set
        option disagrees.
        """
        from lmms_eval.utils import simple_parse_args_string

        args = simple_parse_args_string(arg_string)
        for key, value in (additional_config or {}).items():
            if value is None:
                continue
            if key not in args:
                args[key] = value
            elif str(value) != str(args[key]) and (key, str(value)) != ("batch_size", "1"):
                log.warning("vopd_hf: %s=%s from --model_args overrides --%s %s", key, args[key], key, value)
        return cls(**args)

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def config(self) -> Any:
        """The HF model config (lmms-eval names an instance's run by its `_name_or_path`)."""
        return getattr(getattr(self.backend, "model", None), "config", None)

    def _request(self, inst: Instance) -> tuple[Request, GenerationKwargs]:
        _ctx, doc_to_messages, gen, doc_id, task, split = inst.args
        messages = doc_to_messages(self.task_dict[task][split][doc_id])
        return to_request(f"{task}/{doc_id}", messages), to_gen_kwargs(gen or {})

    def batches(self, requests: list[Instance]) -> list[list[int]]:
        """Request indices grouped as our eval batches a view: per task, in doc order, `batch_size` at a time."""
        tasks: dict[str, list[int]] = {}
        for i, inst in enumerate(requests):
            tasks.setdefault(inst.args[4], []).append(i)
        out = []
        for idx in tasks.values():
            idx.sort(key=lambda i: requests[i].args[3])
            out += [idx[j : j + self.batch_size] for j in range(0, len(idx), self.batch_size)]
        return out

    def generate_until(self, requests: list[Instance]) -> list[GenerationResult]:
        """One response per request, in request order."""
        out: list[GenerationResult] = [GenerationResult(text="")] * len(requests)
        for batch in self.batches(requests):
            built = [self._request(requests[i]) for i in batch]
            gen = built[0][1]
            if any(g != gen for _, g in built):
                raise ValueError("vopd_hf: one task's requests carry different generation kwargs")
            for i, (req, _), r in zip(batch, built, self.backend.generate([b[0] for b in built], gen)):
                if r.error:  # our exported tasks record it as an error (never a wrong answer): see bridge.ERROR_PREFIX
                    log.warning("vopd_hf: %s failed: %s", req.key, r.error)
                text = f"{ERROR_PREFIX}{r.error}" if r.error else r.text
                out[i] = GenerationResult(text=text, token_counts=TokenCounts(output_tokens=r.n_tokens))
        return out

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError("vopd_hf generates only (vopd-bench tasks are generate_until)")

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("vopd_hf does not do multi-round generation")
