"""Atomic checkpoints: `checkpoints/.tmp-step-N` is written in full, then renamed to `checkpoints/step-N`.

A checkpoint holds the student (weights or LoRA adapter + processor, loadable by the Auto classes),
`trainer_state.pt` (optimizer, LR scheduler, RNG states, step), `teacher.safetensors` (the EMA teacher,
when there is one) and `checkpoint.json` (its step and its training run's base model and objective, so a
checkpoint scored on its own is named by its run: `identity`). The rename is the commit: a half-written
folder never has the `step-N` name, so `latest()` never picks one up; stale `.tmp-*` folders are removed
on the next start.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
STEP_RE = re.compile(r"^step-(\d+)$")
STATE_FILE = "trainer_state.pt"
TEACHER_FILE = "teacher.safetensors"
DONE_FILE = "checkpoint.json"


def rng_state() -> dict[str, Any]:
    import torch

    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# vision towers whose Hub checkpoints nest the tower's weights under `vision_tower.vision_model.`: vLLM's
# loaders expect that layout, while transformers 5 saves `vision_tower.*` (and loads either)
NESTED_VISION_TOWERS = ("siglip_vision_model", "siglip2_vision_model", "clip_vision_model")


def nests_vision_tower(config: Any) -> bool:
    """Whether a model config's vision tower is saved nested (`vision_tower.vision_model.*`) on the Hub."""
    vision = config.get("vision_config") if isinstance(config, dict) else getattr(config, "vision_config", None)
    kind = vision.get("model_type") if isinstance(vision, dict) else getattr(vision, "model_type", None)
    return kind in NESTED_VISION_TOWERS


def hub_key(key: str) -> str:
    """A weight name with a SigLIP/CLIP tower's `vision_tower.` prefix nested as on the Hub (whether the name
    starts with it, as saved, or has it under `model.`, as in the live model)."""
    for head in ("vision_tower.", "model.vision_tower."):
        if key.startswith(head) and not key.startswith(head + "vision_model."):
            return head + "vision_model." + key[len(head):]
    return key


def to_hub_layout(folder: Path) -> bool:
    """Rename a saved model's SigLIP/CLIP vision-tower weights `vision_tower.X` -> `vision_tower.vision_model.X`
    (the Hub layout vLLM loads; transformers loads both), in place; True when something was renamed."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    folder = Path(folder)
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    if not nests_vision_tower(cfg):
        return False
    rename = hub_key
    changed = False
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), "pt") as fh:
            keys = list(fh.keys())
            if all(rename(k) == k for k in keys):
                continue
            meta = fh.metadata() or {"format": "pt"}
            tensors = {rename(k): fh.get_tensor(k) for k in keys}
        save_file(tensors, str(f), metadata=meta)
        changed = True
    index = folder / "model.safetensors.index.json"
    if changed and index.is_file():
        data = json.loads(index.read_text())
        data["weight_map"] = {rename(k): v for k, v in data.get("weight_map", {}).items()}
        index.write_text(json.dumps(data, indent=2) + "\n")
    return changed


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(
    root: Path,
    step: int,
    save_model: Callable[[Path], None],
    trainer_state: dict[str, Any],
    teacher_state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write checkpoint `step` atomically under `root`; returns `root/step-N`."""
    import torch
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    tmp, final = root / f".tmp-step-{step}", root / f"step-{step}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_model(tmp)
    torch.save({**trainer_state, "step": step, "rng": rng_state()}, tmp / STATE_FILE)
    if teacher_state:
        save_file(teacher_state, str(tmp / TEACHER_FILE))
    done = {"step": step, "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **_run_record(root.parent)}
    (tmp / DONE_FILE).write_text(json.dumps(done) + "\n")
    for f in tmp.rglob("*"):
        if f.is_file():
            with f.open("rb") as fh:
                os.fsync(fh.fileno())
    if final.exists():  # re-saving a step (resumed after a crash between rename and curve): replace it
        old = root / f".old-step-{step}"
        final.rename(old)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(tmp, final)
    _fsync_dir(root)
    return final


def _run_record(train_dir: Path) -> dict[str, Any]:
    """The base model and objective of the training run in `train_dir` (from its config.json), {} if none."""
    from vopd_bench.errors import UserError
    from vopd_bench.train.rundir import TrainRun

    try:
        cfg = TrainRun(train_dir).read_config()
    except UserError:
        return {}
    return {} if cfg is None else {"model": cfg.model, "objective": cfg.config.get("objective", "distill")}


def identity(folder: Path) -> dict[str, Any] | None:
    """{step, model, objective} of a checkpoint folder; the base model from its training run's config.json for a
    checkpoint saved before `checkpoint.json` recorded it. None when `folder` is not a checkpoint."""
    try:
        done = json.loads((Path(folder) / DONE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(done, dict) or not isinstance(done.get("step"), int):
        return None
    rec = {**_run_record(Path(folder).parent.parent), **{k: done[k] for k in ("model", "objective") if done.get(k)}}
    return {"step": done["step"], "model": rec.get("model"), "objective": rec.get("objective")}


def steps(root: Path) -> list[int]:
    """Committed checkpoint steps under `root`, ascending."""
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = STEP_RE.match(p.name)
        if m and p.is_dir() and (p / DONE_FILE).is_file() and (p / STATE_FILE).is_file():
            out.append(int(m.group(1)))
    return sorted(out)


def latest(root: Path) -> Path | None:
    s = steps(root)
    return root / f"step-{s[-1]}" if s else None


def clean_partial(root: Path) -> None:
    """Remove half-written `.tmp-step-*` / `.old-step-*` folders left by a killed run."""
    if not root.is_dir():
        return
    for p in root.iterdir():
        if p.name.startswith((".tmp-step-", ".old-step-")):
            log.info("removing incomplete checkpoint %s", p)
            shutil.rmtree(p, ignore_errors=True)


def load_state(folder: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """(trainer state, EMA teacher tensors or None) of a checkpoint."""
    import torch
    from safetensors.torch import load_file

    # mmap: the processes of a multi-process run share one page-cached copy of the (full) optimizer state
    state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=False, mmap=True)
    teacher = load_file(str(folder / TEACHER_FILE)) if (folder / TEACHER_FILE).is_file() else None
    return state, teacher


def prune(root: Path, keep_last: int) -> None:
    """Keep only the newest `keep_last` checkpoints (0 = keep all)."""
    if keep_last <= 0:
        return
    for s in steps(root)[:-keep_last]:
        shutil.rmtree(root / f"step-{s}", ignore_errors=True)
