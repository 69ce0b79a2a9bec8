"""The reference tiny model `vopd-tiny`: its build, pre-training, measurement, ceiling and shipped weights.

- `build`: the tiny Qwen2.5-VL (BPE tokenizer, config, processor, random weights), saved like a Hub folder;
- `data`: the synthetic task's scenes, prompts and views as examples (and grounding requests with their boxes);
- `encode`: the one place that turns examples into model inputs (the eval's prompt, plus the answer);
- `pretrain`: the pre-training loop that made the shipped checkpoint (a first stage, then a grounding stage);
- `measure`: greedy accuracy per view and grounding figures (pre-training's evaluation,
  `vopd-bench reference measure`);
- `ceiling`: the label-supervised ceiling of a distillation recipe (`vopd-bench reference ceiling`).

The shipped weights live in `vopd-tiny/` beside these modules (`vopd_bench.models.REFERENCE_DIR`).
"""

from __future__ import annotations

from pathlib import Path

from vopd_bench.models import REFERENCE_DIR
from vopd_bench.reference.build import TinyConfig
from vopd_bench.reference.ceiling import ceiling
from vopd_bench.reference.data import BOX_FORMAT, HOLDOUT_TASK, TASK, Example, TaskData, tokenizer_corpus
from vopd_bench.reference.encode import chat_prompt, encode_prompts, encode_training
from vopd_bench.reference.measure import (
    accuracy,
    box_scores,
    evaluate_views,
    generate,
    grounding_stats,
    measure,
    parse_letter,
    quick_measure,
)
from vopd_bench.reference.pretrain import (
    PRETRAIN_SCENES,
    RECIPES,
    PretrainConfig,
    pretrain,
    pretrain_example,
    pretrain_task,
    response_loss,
)


def reference_model_path() -> Path:
    """The shipped reference checkpoint folder (`vopd_bench/reference/vopd-tiny/`)."""
    return REFERENCE_DIR


__all__ = [
    "BOX_FORMAT",
    "HOLDOUT_TASK",
    "PRETRAIN_SCENES",
    "RECIPES",
    "TASK",
    "Example",
    "PretrainConfig",
    "TaskData",
    "TinyConfig",
    "accuracy",
    "box_scores",
    "ceiling",
    "chat_prompt",
    "encode_prompts",
    "encode_training",
    "evaluate_views",
    "generate",
    "grounding_stats",
    "measure",
    "parse_letter",
    "pretrain",
    "pretrain_example",
    "pretrain_task",
    "quick_measure",
    "reference_model_path",
    "response_loss",
    "tokenizer_corpus",
]
