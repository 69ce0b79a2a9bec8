"""Rollout importance correction: the sampler (a vLLM engine in bf16, say) and the learner (the trainer's
forward) are not the same numbers, so a token the engine sampled is weighted by how much more or less
likely the learner finds it -- the released Vision-OPD recipe's token-level rollout correction
(verl `rollout_is: token`, `rollout_is_threshold: 2.0`; its `is_clip: 2.0` is the same truncation of the
same ratio when, as here, every rollout batch makes one optimizer step).

Per response token t sampled by the engine:

    log r_t = clamp(log π_learner(t) − log π_sampler(t), −20, 20)
    w_t     = min(exp(log r_t), is_clip)                     (detached: a change of measure, no gradient)

and each token's loss is multiplied by w_t (the sum is still divided by the step's token count). Both
log-probabilities are of the *sampling* distribution: softmax(logits / temperature) over the tokens the
sampler may draw (the image placeholder ids are excluded from both). vLLM returns that distribution's
log-probabilities with the engine argument `logprobs_mode: processed_logprobs` (its default,
`raw_logprobs`, is the model's log-softmax before temperature and before the allowed-token mask).

Per step the trainer logs the mismatch (token-weighted over all processes): `is_abs_log_ratio` (mean
|log r|), `is_clipped_frac` (the fraction of tokens with r > is_clip, counted before truncation, as
verl's `rollout_is_ratio_fraction_high`), `is_weight_mean` (mean w) and `is_ratio_max` (max r).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

SAFETY_BOUND = 20.0  # |log r| is clamped here before exp (verl's SAFETY_BOUND)
MODES = ("auto", "token", "off")
# the per-step statistics: token sums (divided by the step's token count) and the one maximum
TOKEN_MEANS = ("is_abs_log_ratio", "is_clipped_frac", "is_weight_mean")
MAXIMA = ("is_ratio_max",)


def enabled(mode: str, rollout_backend: str) -> bool:
    """Whether the correction is on: `token` always, `off` never, `auto` for engine (vLLM) rollouts only --
    HF `generate` samples with the learner itself (ratio ≡ 1)."""
    return mode == "token" or (mode == "auto" and rollout_backend == "vllm")


def sampling_log_probs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float,
                       banned: list[int] | None = None) -> torch.Tensor:
    """log π(token) under softmax(logits / temperature) with the `banned` ids removed (the distribution
    rollouts are drawn from). logits (B, C, V), tokens (B, C) → (B, C), float32, no gradient."""
    with torch.no_grad():
        z = logits.detach().float() / temperature
        if banned:
            z = z.index_fill(-1, torch.tensor(banned, device=z.device), float("-inf"))
        return F.log_softmax(z, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


@dataclass
class Correction:
    """One micro-batch's weights and its statistics (sums, to be divided by the step's token count)."""

    weights: torch.Tensor  # (B, C) truncated ratios, 0 off the mask
    abs_log_ratio: float  # Σ |log r| over masked tokens
    clipped: float  # tokens with r > clip
    weight_sum: float  # Σ w
    ratio_max: float  # max r over masked tokens (0 when there are none)

    def metrics(self) -> dict[str, float]:
        return {"is_abs_log_ratio": self.abs_log_ratio, "is_clipped_frac": self.clipped,
                "is_weight_mean": self.weight_sum, "is_ratio_max": self.ratio_max}


def correction(learner: torch.Tensor, sampler: torch.Tensor, mask: torch.Tensor, clip: float) -> Correction:
    """Truncated token-level importance weights min(π_learner / π_sampler, clip) from per-token
    log-probabilities (B, C); `mask` 1 on response tokens."""
    m = mask.to(torch.float32)
    log_ratio = (learner.float() - sampler.to(learner.device).float()).clamp(-SAFETY_BOUND, SAFETY_BOUND) * m
    ratio = log_ratio.exp() * m
    weights = ratio.clamp(max=clip).detach()
    on = m > 0
    return Correction(
        weights=weights,
        abs_log_ratio=float(log_ratio.abs().sum()),
        clipped=float(((ratio > clip) & on).sum()),
        weight_sum=float(weights.sum()),
        ratio_max=float(ratio[on].max()) if bool(on.any()) else 0.0,
    )
