"""Rollouts and teacher forcing: encode prompts exactly as the eval does, sample the student's responses
on the full image (HF `generate`, temperature T, n per prompt, no top-k/top-p/penalties: the samples
come from the policy itself; only the image/video placeholder tokens are suppressed, since a response
containing one could not be teacher-forced), and score a batch of responses under any prompt encoding
(the full image for the student, the crop for the teacher), encoding each prompt's image once for its
n rollouts where the model accepts precomputed image features.

Teacher-forced logits over prompt + response equal `generate()`'s own logits with left padding
(probes/check_alignment.py), so the student's scores are those of the distribution it sampled from.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from vopd_bench import inputs
from vopd_bench.inputs import Encoding
from vopd_bench.scoring import extract_choice
from vopd_bench.train.data import Prompt
from vopd_bench.train.policy import Policy

log = logging.getLogger(__name__)
# Sampling exactly from softmax(logits / T): override any top-k/top-p/penalty in the model's generation_config.
NEUTRAL_SAMPLING = {
    "top_k": 0,
    "top_p": 1.0,
    "min_p": 0.0,
    "typical_p": 1.0,
    "repetition_penalty": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "no_repeat_ngram_size": 0,
}


@dataclass
class Rollouts:
    """n sampled responses per prompt, prompt-major: row i belongs to prompt i // n."""

    tokens: torch.Tensor  # (N, C) response token ids, pad after the end
    mask: torch.Tensor  # (N, C) 1 on response tokens (up to and including the first EOS)
    texts: list[str]
    n: int
    # (N, C) the sampler's log-probability of each response token under the distribution it sampled from
    # (NaN where unknown); None when not recorded (the importance correction is off)
    logprobs: torch.Tensor | None = None

    @property
    def num_tokens(self) -> int:
        return int(self.mask.sum())


def encode(policy: Policy, images: list[Image.Image], prompts: list[Prompt]) -> Encoding:
    """The eval's model inputs (`inputs.encode`, with the run's chat-template variables) for each prompt shown
    as its image, on the policy's device."""
    kwargs = dict(getattr(getattr(policy, "cfg", None), "chat_template_kwargs", None) or {})
    return inputs.encode(policy.processor, [p.request(im) for p, im in zip(prompts, images)], device=policy.device,
                         chat_template_kwargs=kwargs)


def repeat_encoding(enc: Encoding, n: int, processor: Any = None) -> Encoding:
    """Each prompt (and its image) repeated n times in place: rows [p0]*n + [p1]*n + ... (the image tensors
    laid out per the family of `processor`: `inputs.select_images`)."""
    if n == 1:
        return dict(enc)
    images = inputs.select_images(enc, [i for i in range(len(enc["input_ids"])) for _ in range(n)], processor)
    out: Encoding = {}
    for k, v in enc.items():
        if k in images:
            out[k] = images[k]
        elif torch.is_tensor(v):
            out[k] = v.repeat_interleave(n, dim=0)
        else:
            out[k] = v
    return out


def eos_ids(policy: Policy) -> list[int]:
    eos = policy.model.generation_config.eos_token_id
    if eos is None:
        eos = policy.processor.tokenizer.eos_token_id
    return [eos] if isinstance(eos, int) else list(eos)


def pad_id(policy: Policy) -> int:
    tok = policy.processor.tokenizer
    return tok.pad_token_id if tok.pad_token_id is not None else eos_ids(policy)[0]


def multimodal_token_ids(policy: Policy) -> list[int]:
    """Image/video placeholder, begin/end and break ids of the policy's family: a response must never contain
    them (teacher forcing would treat them as image slots), so sampling suppresses them."""
    return inputs.image_marker_ids(policy.processor, _hf_model(policy.model).config)


def response_mask(tokens: torch.Tensor, eos: list[int]) -> torch.Tensor:
    """1 on tokens up to and including the first EOS, 0 after it."""
    is_eos = torch.isin(tokens, torch.tensor(eos, device=tokens.device))
    after = (is_eos.long().cumsum(1) - is_eos.long()) > 0
    return (~after).long()


@torch.no_grad()
def sample_hf(
    policy: Policy, enc: Encoding, n: int, max_new_tokens: int, temperature: float, synced: bool = False,
    logprobs: bool = False,
) -> Rollouts:
    """n responses per prompt from HF generate (`enc` is the unrepeated full-image encoding). `synced`:
    the model is sharded, so every process keeps stepping (forwards are collectives) until all are done.
    `logprobs`: also record each sampled token's log-probability under the processed scores generate sampled
    from (temperature and the suppressed ids applied), for `rollout_correction: token`."""
    rep = repeat_encoding(enc, n, policy.processor)
    policy.model.eval()
    policy.reset_rope()
    with policy.autocast():
        out = policy.model.generate(
            **rep,
            do_sample=True,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            pad_token_id=pad_id(policy),
            eos_token_id=eos_ids(policy),
            suppress_tokens=multimodal_token_ids(policy) or None,
            synced_gpus=synced,
            output_scores=logprobs,
            return_dict_in_generate=logprobs,
            **NEUTRAL_SAMPLING,
        )
    seqs = out.sequences if logprobs else out
    tokens = seqs[:, rep["input_ids"].shape[1] :]
    lps = None
    if logprobs:  # one (N, V) score tensor per generated position, already divided by the temperature
        lps = torch.stack([torch.log_softmax(sc.float(), -1).gather(-1, tokens[:, i : i + 1]).squeeze(-1)
                           for i, sc in enumerate(out.scores)], 1)
    mask = response_mask(tokens, eos_ids(policy))
    tokens = tokens.masked_fill(mask == 0, pad_id(policy))
    texts = policy.processor.batch_decode(tokens, skip_special_tokens=True)
    return Rollouts(tokens=tokens, mask=mask, texts=[t.strip() for t in texts], n=n, logprobs=lps)


def gold_rollouts(policy: Policy, prompts: list[Prompt]) -> Rollouts:
    """The prompts' gold responses (+ EOS) as one "rollout" each, for the label-supervised diagnostic."""
    tok = policy.processor.tokenizer
    eos = eos_ids(policy)[0]
    seqs = [inputs.completion_ids(tok, p.target, eos) for p in prompts]
    width = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), width), pad_id(policy), dtype=torch.long)
    mask = torch.zeros_like(tokens)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return Rollouts(tokens=tokens.to(policy.device), mask=mask.to(policy.device),
                    texts=[p.target for p in prompts], n=1)


def _hf_model(model: Any) -> Any:
    """The transformers model under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def shares_image_features(model: Any, processor: Any = None) -> bool:
    """Whether each prompt's image can be encoded once for its n rollouts: the model accepts precomputed
    image features (`mm_encoder_outputs`) and they come per image (the grid families: Qwen-VL, GLM-4.1V;
    Qwen3-VL's deepstack features included). Other families get their pixels once per row."""
    hf = _hf_model(model)
    if processor is not None and not inputs.family(processor).shares_features:
        return False
    return hasattr(hf, "get_image_features") and "mm_encoder_outputs" in inspect.signature(hf.forward).parameters


def _select_features(feats: Any, pos: list[int]) -> Any:
    """The per-image image-encoder output `feats` (pooler_output, and Qwen3-VL's per-layer deepstack
    features: tuples with one entry per image) for images `pos`, in that order."""
    fields = {"pooler_output": [feats.pooler_output[p] for p in pos]}
    deep = getattr(feats, "deepstack_features", None)
    if deep is not None:
        fields["deepstack_features"] = [[layer[p] for p in pos] for layer in deep]
    return type(feats)(**fields)


def row_inputs(scorer: Any, enc: Encoding, n: int, rows: range) -> Encoding:
    """Model inputs for rollout rows `rows` (row r belongs to prompt r // n of the unrepeated `enc`),
    left padding trimmed; image features computed here (under the caller's grad mode) once per prompt
    where the family allows (`shares_image_features`), else the prompt's pixels per row."""
    processor = getattr(scorer, "processor", None)
    idx = [r // n for r in rows]
    index = torch.tensor(idx, device=enc["input_ids"].device)
    out: Encoding = {k: enc[k][index] for k in ("input_ids", "attention_mask", *inputs.TOKEN_TYPE_KEYS) if k in enc}
    keep = int(out["attention_mask"].sum(1).max())
    out = {k: v[:, -keep:] for k, v in out.items()}
    if not shares_image_features(scorer.model, processor):
        return {**out, **inputs.select_images(enc, idx, processor)}
    uniq = sorted(set(idx))
    images = inputs.select_images(enc, uniq, processor)
    for k in inputs.per_image_keys(enc, processor):  # one image per prompt: image i is prompt i's
        out[k] = enc[k][index.to(enc[k].device)]
    with scorer.autocast() if hasattr(scorer, "autocast") else contextlib.nullcontext():
        feats = _hf_model(scorer.model).get_image_features(
            images["pixel_values"], images["image_grid_thw"], return_dict=True
        )
    pos = {p: j for j, p in enumerate(uniq)}
    out["mm_encoder_outputs"] = {"image": _select_features(feats, [pos[i] for i in idx])}
    return out


def completion_logits(scorer: Any, prompt: Encoding, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Logits (B, C, V) predicting each response token given the left-padded `prompt` inputs
    (from `row_inputs`, or an encoding with pixel values); `scorer` has `forward` (Policy or teacher)."""
    c = tokens.shape[1]
    out = scorer.forward(**inputs.append_completion(prompt, tokens, mask), logits_to_keep=c + 1)
    return out.logits[:, :c]


def answer_entropy(rollouts: Rollouts, options: list[list[str] | None]) -> float | None:
    """Mean over prompts of the entropy (nats) of the chosen option letters among the n rollouts
    (an unparsed response counts as its own outcome); None when no prompt has options."""
    import math
    from collections import Counter

    ents = []
    for i, opts in enumerate(options):
        if not opts:
            continue
        picks = Counter(extract_choice(t, opts) for t in rollouts.texts[i * rollouts.n : (i + 1) * rollouts.n])
        total = sum(picks.values())
        ents.append(-sum(c / total * math.log(c / total) for c in picks.values()))
    return sum(ents) / len(ents) if ents else None
