"""The Vision-OPD loss: token-level generalized Jensen-Shannon divergence between the teacher's and
the student's next-token distributions over the student's own response tokens.

Convention (TRL's `GKDTrainer.generalized_jsd_loss`, GKD paper Eq. 1), with P_T the teacher and P_S the
student distribution at one position and M = β·P_T + (1 − β)·P_S:

    JSD_β = β·KL(P_T ‖ M) + (1 − β)·KL(P_S ‖ M)        for 0 < β < 1
    β = 0 → KL(P_T ‖ P_S)   the forward KL (mode-covering; the spike-4 recipe)
    β = 1 → KL(P_S ‖ P_T)   the reverse KL (mode-seeking)

(the end points are defined as these KLs, as TRL does, rather than as the vanishing limits of the
mixture formula). Both distributions are softmax(logits / temperature). The teacher is detached:
gradients reach the student only.

`top_k`: the released Vision-OPD code keeps the student's top-k logits plus one tail bucket. Both
distributions are reduced to k + 1 buckets -- the probabilities of the student's top-k token ids and
the remaining mass 1 − Σ top-k -- taken from the full-vocabulary softmax, so the student's gradient
still reaches every logit through the normaliser. With k = vocabulary size this equals the full loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

TAIL_FLOOR = 1e-12  # smallest tail mass kept (log of an exactly empty tail is -inf)
LOG_FLOOR = -1e4  # log-probabilities are floored here: exp() is exactly 0, differences stay finite


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) over the last dimension from log-probabilities (0·log 0 = 0, also for -inf entries)."""
    log_p, log_q = log_p.clamp_min(LOG_FLOOR), log_q.clamp_min(LOG_FLOOR)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def _tail_log_mass(topk_log_probs: torch.Tensor) -> torch.Tensor:
    """log(1 − Σ exp(topk)) per position, floored at TAIL_FLOOR."""
    mass = 1.0 - topk_log_probs.exp().sum(-1, keepdim=True)
    return mass.clamp_min(TAIL_FLOOR).log()


def bucket_log_probs(
    student_log_probs: torch.Tensor, teacher_log_probs: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both distributions over k + 1 buckets: the student's top-k token ids and the tail."""
    idx = student_log_probs.detach().topk(min(k, student_log_probs.shape[-1]), dim=-1).indices
    s = student_log_probs.gather(-1, idx)
    t = teacher_log_probs.gather(-1, idx)
    return torch.cat([s, _tail_log_mass(s)], -1), torch.cat([t, _tail_log_mass(t)], -1)


def jsd_per_token(student_log_probs: torch.Tensor, teacher_log_probs: torch.Tensor, beta: float) -> torch.Tensor:
    """Generalized JSD(β) at every position, from log-probabilities over the same support."""
    if beta == 0:
        return _kl(teacher_log_probs, student_log_probs)
    if beta == 1:
        return _kl(student_log_probs, teacher_log_probs)
    mix = torch.logsumexp(
        torch.stack([student_log_probs + math.log1p(-beta), teacher_log_probs + math.log(beta)]), dim=0
    )
    return beta * _kl(teacher_log_probs, mix) + (1 - beta) * _kl(student_log_probs, mix)


def generalized_jsd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    beta: float = 0.5,
    temperature: float = 1.0,
    top_k: int | None = None,
    reduction: str = "mean",
    num_tokens: float | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Generalized JSD(β) between teacher and student, per response token.

    student_logits, teacher_logits: (B, T, V); mask: (B, T), 1 on response tokens (None = all).
    top_k: None or 0 = full vocabulary, else the student's top-k plus a tail bucket.
    reduction: "mean" (over masked tokens, or divided by `num_tokens` when given -- the global token
    count under gradient accumulation / several processes), "sum", or "none" ((B, T), 0 off the mask).
    weights: (B, T) per-token factors (the importance correction's truncated ratios, no gradient); the
    denominator stays the token count.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    s = F.log_softmax(student_logits.float() / temperature, dim=-1).clamp_min(LOG_FLOOR)
    t = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1).clamp_min(LOG_FLOOR)
    if top_k:
        s, t = bucket_log_probs(s, t, top_k)
    per_token = jsd_per_token(s, t, beta)
    if mask is not None:
        per_token = per_token * mask.to(per_token.dtype)
    if weights is not None:
        per_token = per_token * weights.detach().to(per_token.dtype)
    if reduction == "none":
        return per_token
    total = per_token.sum()
    if reduction == "sum":
        return total
    if reduction != "mean":
        raise ValueError(f"reduction must be mean, sum or none, got {reduction!r}")
    if num_tokens is not None:
        return total / max(float(num_tokens), 1.0)
    n = mask.sum().clamp_min(1) if mask is not None else per_token.numel()
    return total / n


@torch.no_grad()
def mean_entropy(logits: torch.Tensor, mask: torch.Tensor | None = None, temperature: float = 1.0) -> float:
    """Mean next-token entropy (nats) over the masked positions."""
    lp = F.log_softmax(logits.float() / temperature, dim=-1)
    ent = -(lp.exp() * lp).sum(-1)
    if mask is None:
        return float(ent.mean())
    m = mask.to(ent.dtype)
    return float((ent * m).sum() / m.sum().clamp_min(1))


def token_cross_entropy(
    logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0,
    num_tokens: float | None = None,
) -> torch.Tensor:
    """Summed cross-entropy of `tokens` under softmax(logits / T) on the masked positions, divided by
    `num_tokens` (default: the mask's count). The label-supervised diagnostic's loss."""
    nll = F.cross_entropy((logits.float() / temperature).flatten(0, 1), tokens.flatten(), reduction="none")
    denom = float(mask.sum()) if num_tokens is None else num_tokens
    return (nll * mask.flatten().to(nll.dtype)).sum() / max(denom, 1.0)
