"""lmms-eval interop, both directions.

- `export`: a vopd-bench task → an lmms-eval task folder (one YAML per view + utils.py) whose hooks
  call `bridge`, i.e. our loaders, views, prompts and scorer, so lmms-eval's numbers match ours.
- `importer`: lmms-eval sample logs of such tasks → a vopd-bench run directory (`vopd-bench gap`).
- `model`: an lmms-eval chat model (`vopd_hf`) running our HF backend, registered through the entry
  point group `lmms_eval.models` (payload: `manifests` below).

Nothing here imports lmms-eval at package import time; it is an optional dependency (`[lmms]`).
"""

from __future__ import annotations

from typing import Any

MODEL_ID = "vopd_hf"
MODEL_CLASS = "vopd_bench.lmms.model.VopdHF"


def manifests() -> list[Any]:
    """Model manifests for lmms-eval's registry (entry point group `lmms_eval.models`)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id=MODEL_ID, chat_class_path=MODEL_CLASS)]


def register() -> None:
    """Register `vopd_hf` with lmms-eval in this process (for installs without the entry point)."""
    from lmms_eval.models import MODEL_REGISTRY_V2

    for m in manifests():
        MODEL_REGISTRY_V2.register_manifest(m, overwrite=True)
