"""Teachers: which weights score the student's tokens on the crop view (always without gradient).

- `ema`: θ_T ← (1 − rate)·θ_T + rate·θ_S after every optimizer step (the paper's, rate 0.05). Full
  training keeps a second copy of the model; LoRA keeps an EMA of the adapter only and swaps it in for
  the teacher's forward (no second copy of the base weights).
- `frozen`: the initial policy. Full training: a second copy loaded from the base model; LoRA: the
  same model with the adapter disabled (`with model.disable_adapter():`).
- `live`: the current student weights, stop-gradient.

Each kind is a `Teacher` subclass registered under its name (`@register_teacher`); `TEACHERS` is the list
the config's `teacher:` choices come from, and a new kind is one class + a test. The frozen teacher is also
the reference of the optional anchor term (`vopd_bench.train.objectives.Anchor`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any, ClassVar

import torch

from vopd_bench.train import dist
from vopd_bench.train.config import OPDConfig
from vopd_bench.train.fsdp import full, load_full_tensors, local, reshard
from vopd_bench.train.policy import Policy, load_base, shard

log = logging.getLogger(__name__)


class _ShadowPolicy:
    """A second model behind the Policy interface (forward with rope reset + autocast)."""

    def __init__(self, policy: Policy, model: Any) -> None:
        self.model = model.eval()
        self.processor = policy.processor
        self.device = policy.device
        self._owner = policy
        self._rope = [m for m in model.modules() if hasattr(m, "rope_deltas")]
        for p in model.parameters():
            p.requires_grad_(False)

    def autocast(self) -> contextlib.AbstractContextManager:
        return self._owner.autocast()

    def forward(self, **inputs: Any) -> Any:
        for m in self._rope:
            m.rope_deltas = None
        with self._owner.autocast():
            return self.model(**inputs)


TEACHERS: dict[str, type[Teacher]] = {}


def register_teacher(cls: type[Teacher]) -> type[Teacher]:
    """Class decorator: make `cls` a value of the config's `teacher:` (under `cls.name`)."""
    TEACHERS[cls.name] = cls
    return cls


class Teacher:
    """Scores response tokens under some weights; `scoring()` puts those weights in place.

    A teacher with its own model (`shadow`) scores with it; otherwise the policy's own model scores, in
    eval mode, inside `weights()` -- the hook a subclass overrides to swap its weights in (and back).
    Subclasses are built as `cls(policy, cfg)`.
    """

    name: ClassVar[str] = "base"
    shadow: _ShadowPolicy | None = None

    def __init__(self, policy: Policy, cfg: OPDConfig) -> None:
        self.policy = policy

    @contextlib.contextmanager
    def scoring(self) -> Iterator[Any]:
        """A policy-like object whose `forward` uses the teacher's weights (no grad inside)."""
        if self.shadow is not None:
            with torch.no_grad():
                yield self.shadow
            return
        model = self.policy.model
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), self.weights():
                yield self.policy
        finally:
            model.train(was_training)

    def weights(self) -> contextlib.AbstractContextManager:
        """The teacher's weights in the policy's model for the block (default: the policy's own)."""
        return contextlib.nullcontext()

    def update(self) -> None:
        """Called after every optimizer step."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        return None


@register_teacher
class LiveTeacher(Teacher):
    """The current student weights, stop-gradient."""

    name = "live"


@register_teacher
class FrozenTeacher(Teacher):
    """The initial policy: base model with the adapter off (LoRA), or a second copy of the base weights."""

    name = "frozen"

    def __init__(self, policy: Policy, cfg: OPDConfig) -> None:
        super().__init__(policy, cfg)
        self.shadow = None if policy.lora else _ShadowPolicy(policy, second_copy(cfg, policy))

    def weights(self) -> contextlib.AbstractContextManager:
        return self.policy.adapter_disabled()  # LoRA: the base model


@register_teacher
class EmaTeacher(Teacher):
    """Exponential moving average of the student's trainable weights."""

    name = "ema"

    def __init__(self, policy: Policy, cfg: OPDConfig) -> None:
        super().__init__(policy, cfg)
        self.rate = cfg.ema_rate
        self.names = [n for n, p in policy.model.named_parameters() if p.requires_grad]
        params = dict(policy.model.named_parameters())
        self.student = [params[n] for n in self.names]
        if policy.lora:  # EMA of the adapter only, swapped in for the teacher's forward
            self.shadow = None
            self.ema = [p.detach().clone() for p in self.student]
        else:
            if policy.sharded:  # a second sharded model (= the student at the start; a resume loads the EMA)
                model = second_copy(cfg, policy)
            else:
                import copy

                model = copy.deepcopy(policy.model)
            self.shadow = _ShadowPolicy(policy, model)
            tparams = dict(model.named_parameters())
            self.ema = [tparams[n].data for n in self.names]
        # the tensors the arithmetic runs on: this process's shards under FSDP, the whole tensors otherwise
        self._ema_local = [local(e) for e in self.ema]
        self._student_local = [local(p.data) for p in self.student]

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self._ema_local, self._student_local, self.rate)

    @contextlib.contextmanager
    def weights(self) -> Iterator[None]:
        """LoRA: the EMA adapter swapped in, the student's restored after (under FSDP with no gathered
        copy of the root's weights left on either side of the swap)."""
        backup = [p.clone() for p in self._student_local]
        reshard(self.policy.model)
        for p, e in zip(self._student_local, self._ema_local):
            p.copy_(e)
        try:
            yield
        finally:
            reshard(self.policy.model)
            for p, b in zip(self._student_local, backup):
                p.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The whole EMA tensors on CPU, kept by rank 0 (under FSDP a collective: every process calls it,
        one tensor gathered at a time)."""
        out = {}
        for n, e in zip(self.names, self.ema):
            t = full(e.detach())
            if dist.is_main():
                out[n] = t.cpu().contiguous()
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = [n for n in self.names if n not in state]
        if missing:
            raise ValueError(f"EMA teacher state lacks {len(missing)} tensor(s), e.g. {missing[0]}")
        load_full_tensors(self.ema, [state[n] for n in self.names])


def second_copy(cfg: OPDConfig, policy: Policy) -> Any:
    """The base model again, without gradients (sharded like the policy under FSDP)."""
    model = load_base(cfg, policy.device)
    for p in model.parameters():
        p.requires_grad_(False)
    return shard(cfg, model, policy.device, trained=False) if policy.sharded else model


def make_teacher(name: str, policy: Policy, cfg: OPDConfig) -> Teacher:
    """The registered teacher `name` (the config has checked it is one)."""
    return TEACHERS[name](policy, cfg)


def initial_policy(teacher: Teacher, policy: Policy, cfg: OPDConfig) -> Teacher:
    """The initial policy as a scorer: the frozen teacher itself when that is the teacher, else a new one."""
    return teacher if isinstance(teacher, FrozenTeacher) else FrozenTeacher(policy, cfg)
