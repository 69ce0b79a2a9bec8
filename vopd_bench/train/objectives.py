"""Training objectives: small registered classes that turn one micro-batch into `(loss, metrics)`.

The config's `objective:` picks the main objective (`distill`: Vision-OPD, label-free; `supervised`: the
label-supervised diagnostic); added terms (`anchor`) switch themselves on from the config. The trainer
sums the losses of the active objectives, runs one backward, and logs their metrics without knowing them:
a metric is summed over micro-batches and processes, and the names in `token_means` are token-weighted
sums divided by the step's response-token count. A new loss is one `@register`ed class and a test.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from vopd_bench.train.config import OPDConfig
from vopd_bench.train.importance import Correction, correction, sampling_log_probs
from vopd_bench.train.loss import generalized_jsd, mean_entropy, token_cross_entropy
from vopd_bench.train.rollout import Encoding, completion_logits, row_inputs
from vopd_bench.train.teacher import Teacher, initial_policy

OBJECTIVES: dict[str, type[Objective]] = {}


def register(cls: type[Objective]) -> type[Objective]:
    """Class decorator: make `cls` an objective (a value of `objective:` unless it is a `term`)."""
    OBJECTIVES[cls.name] = cls
    return cls


def objective_class(name: str) -> type[Objective]:
    return OBJECTIVES[name]


def main_objectives() -> tuple[str, ...]:
    """The values `objective:` accepts."""
    return tuple(name for name, cls in OBJECTIVES.items() if not cls.term)


@dataclass
class MicroBatch:
    """One chunk of a step's rollouts and the logits scored on it (each computed once, on first use).

    `full` / `crop`: the step's prompt encodings (one row per prompt); `n` rollouts per prompt; `rows`: this
    chunk's rollout rows; `tokens` / `mask`: their response tokens; `num_tokens`: the response-token count
    of the whole step over all processes (every loss's denominator).
    """

    policy: Any
    full: Encoding
    crop: Encoding
    n: int
    rows: range
    tokens: torch.Tensor
    mask: torch.Tensor
    num_tokens: float
    timer: Callable[[str], contextlib.AbstractContextManager] = lambda _: contextlib.nullcontext()
    # the importance correction (`importance.py`): the sampler's log-probabilities of `tokens` (NaN where
    # unknown: ratio 1), the truncation, and the sampling distribution's temperature and excluded ids
    sampler_logprobs: torch.Tensor | None = None
    is_clip: float | None = None
    temperature: float = 1.0
    banned: list[int] = field(default_factory=list)
    _logits: dict[tuple[int, str], torch.Tensor] = field(default_factory=dict)
    _correction: Correction | None = None

    @property
    def token_count(self) -> float:
        """Response tokens in this chunk."""
        return float(self.mask.sum())

    def importance(self) -> Correction | None:
        """The truncated importance weights of this chunk's tokens and their statistics (None when the
        correction is off), from the student's own full-image logits (computed once, shared with the loss)."""
        if self.sampler_logprobs is None or self.is_clip is None:
            return None
        if self._correction is None:
            learner = sampling_log_probs(self.student("full"), self.tokens, self.temperature, self.banned)
            sampler = self.sampler_logprobs.to(learner.device)
            sampler = torch.where(torch.isnan(sampler), learner, sampler)
            self._correction = correction(learner, sampler, self.mask, self.is_clip)
        return self._correction

    @property
    def weights(self) -> torch.Tensor | None:
        """Per-token loss factors of an on-policy objective (None: every token counts once)."""
        c = self.importance()
        return None if c is None else c.weights

    def encoding(self, view: str) -> Encoding:
        return self.full if view == "full" else self.crop

    def student(self, view: str) -> torch.Tensor:
        """The student's logits of the response tokens on `view` (with gradient)."""
        key = (id(self.policy), view)
        if key not in self._logits:
            self._logits[key] = self._score(self.policy, view)
        return self._logits[key]

    def scored(self, scorer: Teacher, view: str = "crop", phase: str = "teacher_forward") -> torch.Tensor:
        """`scorer`'s logits of the response tokens on `view`, without gradient (timed as `phase`)."""
        key = (id(scorer), view)
        if key not in self._logits:
            with self.timer(phase), scorer.scoring() as sp:
                self._logits[key] = self._score(sp, view)
        return self._logits[key]

    def _score(self, scorer: Any, view: str) -> torch.Tensor:
        return completion_logits(scorer, row_inputs(scorer, self.encoding(view), self.n, self.rows), self.tokens,
                                 self.mask)


class Objective:
    """One loss term. `prepare` runs the no-gradient scoring (teachers) of every active objective before any
    student forward; `loss` returns the term's loss (to be summed and back-propagated) and its metrics."""

    name: ClassVar[str]
    term: ClassVar[bool] = False  # True: an added term, switched on by `enabled`, not a value of `objective:`
    on_policy: ClassVar[bool] = True  # False: trains on the gold answers instead of the student's rollouts
    token_means: ClassVar[tuple[str, ...]] = ()  # metrics that are sums of (value x tokens): divided by tokens

    def __init__(self, cfg: OPDConfig, teacher: Teacher) -> None:
        self.cfg = cfg

    @classmethod
    def enabled(cls, cfg: OPDConfig) -> bool:
        return cfg.objective == cls.name

    def prepare(self, batch: MicroBatch) -> None:
        """No-gradient forwards (teacher scores) this objective will need."""

    def loss(self, batch: MicroBatch) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def student_entropy(self, batch: MicroBatch) -> float:
        """Token-weighted entropy of the student on the full image (a `token_means` metric)."""
        return mean_entropy(batch.student("full").detach(), batch.mask) * batch.token_count


@register
class Distill(Objective):
    """Vision-OPD: generalized JSD(β) between the teacher on the crop and the student on the full image."""

    name = "distill"
    token_means = ("teacher_entropy", "student_entropy")

    def __init__(self, cfg: OPDConfig, teacher: Teacher) -> None:
        super().__init__(cfg, teacher)
        self.teacher = teacher

    def prepare(self, batch: MicroBatch) -> None:
        batch.scored(self.teacher)

    def loss(self, batch: MicroBatch) -> tuple[torch.Tensor, dict[str, float]]:
        cfg, t_logits = self.cfg, batch.scored(self.teacher)
        jsd = generalized_jsd(batch.student("full"), t_logits, batch.mask, beta=cfg.beta,
                              temperature=cfg.loss_temperature, top_k=cfg.top_k, num_tokens=batch.num_tokens,
                              weights=batch.weights)
        return jsd, {
            "jsd": float(jsd.detach()),
            "teacher_entropy": mean_entropy(t_logits, batch.mask) * batch.token_count,
            "student_entropy": self.student_entropy(batch),
        }


@register
class Supervised(Objective):
    """Diagnostic: cross-entropy of the gold answers on the full image (the label-supervised ceiling)."""

    name = "supervised"
    on_policy = False
    token_means = ("student_entropy",)

    def loss(self, batch: MicroBatch) -> tuple[torch.Tensor, dict[str, float]]:
        ce = token_cross_entropy(batch.student("full"), batch.tokens, batch.mask, self.cfg.loss_temperature,
                                 batch.num_tokens)
        return ce, {"ce": float(ce.detach()), "student_entropy": self.student_entropy(batch)}


@register
class Anchor(Objective):
    """Label-free anchor: `anchor_weight` x KL(initial policy ‖ student), both on the crop inputs."""

    name = "anchor"
    term = True

    def __init__(self, cfg: OPDConfig, teacher: Teacher) -> None:
        super().__init__(cfg, teacher)
        self.reference = initial_policy(teacher, teacher.policy, cfg)

    @classmethod
    def enabled(cls, cfg: OPDConfig) -> bool:
        return cfg.anchor_weight > 0

    def prepare(self, batch: MicroBatch) -> None:
        batch.scored(self.reference, phase="reference_forward")

    def loss(self, batch: MicroBatch) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.cfg
        anchor = generalized_jsd(batch.student("crop"), batch.scored(self.reference), batch.mask, beta=0.0,
                                 temperature=cfg.loss_temperature, top_k=cfg.top_k, num_tokens=batch.num_tokens,
                                 weights=batch.weights)
        return cfg.anchor_weight * anchor, {"anchor": float(anchor.detach())}


def build_objectives(cfg: OPDConfig, teacher: Teacher) -> list[Objective]:
    """The run's objectives: the main one (`objective:`), then every enabled added term."""
    main = objective_class(cfg.objective)(cfg, teacher)
    return [main, *(cls(cfg, teacher) for cls in OBJECTIVES.values() if cls.term and cls.enabled(cfg))]
