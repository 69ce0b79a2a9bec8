"""Vision-OPD: on-policy self-distillation from the crop view (arXiv 2605.18740).

`run_training(cfg) -> Path` trains (or resumes) a run and returns its output directory; `load_config`
builds an `OPDConfig` from a recipe (`vopd_bench/specs/trainers/*.yaml`) plus `key=value` overrides.
Modules: config (settings; defaults = the paper's method), data (prompts), policy (model/LoRA), rollout
(sampling + teacher forcing), loss (generalized JSD, cross-entropy), objectives (registered loss terms:
distill, supervised, anchor), teacher (registered teachers: ema, frozen, live), checkpoint (atomic
save/resume), curve (scoring + curve.jsonl), dist (multi-process), trainer (the loop).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["OPDConfig", "load_config", "run_training"]

if TYPE_CHECKING:
    from vopd_bench.train.config import OPDConfig, load_config
    from vopd_bench.train.trainer import run_training


def __getattr__(name: str) -> Any:  # lazy: `import vopd_bench.train` stays cheap (no torch models)
    if name in ("OPDConfig", "load_config"):
        from vopd_bench.train import config

        return getattr(config, name)
    if name == "run_training":
        from vopd_bench.train.trainer import run_training

        return run_training
    raise AttributeError(name)
