"""The policy being trained: an HF image-text-to-text model and its processor, optionally a LoRA
adapter over it; loading (base, or a checkpoint to resume), device/dtype, autocast and saving."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from vopd_bench import runtime
from vopd_bench.errors import UserError
from vopd_bench.models import resolve_model
from vopd_bench.train import dist
from vopd_bench.train.config import OPDConfig

log = logging.getLogger(__name__)
ADAPTER_DIR = "adapter"


def pick_device(cfg: OPDConfig) -> str:
    """The config's device; `auto`: this rank's GPU (cuda:LOCAL_RANK) where there is one, else the CPU."""
    return runtime.pick_device(cfg.device)


def sharded(cfg: OPDConfig) -> bool:
    """Whether models of this run are FSDP-sharded (`distributed: fsdp` with more than one process)."""
    return cfg.distributed == "fsdp" and dist.world_size() > 1


def check_remote_code(cfg: OPDConfig) -> None:
    """A local checkpoint whose architecture exists only as its own Python code (config.json `auto_map`, a
    model_type transformers does not know) needs `trust_remote_code: true`: say so in one line, up front."""
    import json

    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if cfg.trust_remote_code:
        return
    try:
        conf = json.loads((Path(resolve_model(cfg.model)) / "config.json").read_text())
    except (OSError, ValueError):
        return
    if isinstance(conf, dict) and conf.get("auto_map") and conf.get("model_type") not in CONFIG_MAPPING_NAMES:
        raise UserError(f"model {cfg.model!r} (model_type {conf.get('model_type')!r}) runs its own Python code: "
                        "pass trust_remote_code=true to run it (only for a checkpoint you trust)")


def check_family(processor: Any, cfg: OPDConfig) -> None:
    """Training splits each prompt's image out of a batch, by the family's rule (`inputs.FAMILIES`): refuse
    a processor with no known rule before anything is loaded, not at the first rollout."""
    from vopd_bench import inputs

    if inputs.family(processor).name == inputs.OTHER.name:
        known = ", ".join(f.name for f in inputs.FAMILIES)
        raise UserError(f"model {cfg.model!r}: training does not know how {type(processor).__name__} lays out "
                        f"images per prompt (known families: {known}); evaluate it with vopd-bench eval instead")


def load_base(cfg: OPDConfig, device: str, path: str | None = None) -> Any:
    """The model at `path` (default: the config's model) on `device`, in the parameter dtype; under FSDP
    loaded on the CPU and sharded onto `device` (each process keeps its shard)."""
    from transformers import AutoModelForImageTextToText

    src = path or resolve_model(cfg.model)
    # the trainer's auto: float32 weights on every device (bf16 autocast on CUDA, see Policy.autocast_dtype)
    dtype = runtime.torch_dtype(cfg.dtype, device, auto="float32")
    try:
        model = AutoModelForImageTextToText.from_pretrained(
            src, revision=None if path else cfg.revision, dtype=dtype, trust_remote_code=cfg.trust_remote_code
        )
    except (OSError, ValueError) as e:
        hint = " (pass trust_remote_code: true for a checkpoint with its own code)" if "trust_remote_code" in str(e) \
            else ""
        raise UserError(f"cannot load model {src!r}: {str(e).splitlines()[0]}{hint}") from None
    if cfg.max_pixels is not None and path is None:  # settings the model shares with its processor's budget
        from vopd_bench.inputs import apply_image_budget

        apply_image_budget(model, processor_and_budget(cfg)[1])
    if sharded(cfg):
        return model  # the caller shards it (after adding a LoRA adapter, if any)
    return model.to(device)


def shard(cfg: OPDConfig, model: Any, device: str, trained: bool = True) -> Any:
    """`model` sharded across the processes (bf16 compute on CUDA with dtype auto); `trained=False` for a
    teacher (forward only)."""
    from vopd_bench.train import fsdp

    return fsdp.shard(model, device, bf16=device.startswith("cuda") and cfg.dtype == "auto", trained=trained)


def load_processor(cfg: OPDConfig) -> Any:
    """The model's processor with the run's image budget applied."""
    return processor_and_budget(cfg)[0]


def processor_and_budget(cfg: OPDConfig) -> tuple[Any, dict[str, Any]]:
    """The model's processor with the run's image budget (`max_pixels`) applied, and the budget in force
    (`inputs.set_image_budget`: JSON values; a processor with no such knob refuses with a `UserError`)."""
    from transformers import AutoProcessor

    from vopd_bench.inputs import set_image_budget

    check_remote_code(cfg)
    try:
        proc = AutoProcessor.from_pretrained(resolve_model(cfg.model), revision=cfg.revision,
                                             trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load the processor of {cfg.model!r}: {str(e).splitlines()[0]}") from None
    proc.tokenizer.padding_side = "left"
    return proc, set_image_budget(proc, None, cfg.max_pixels)


# module names (the last part) of a language model's linear layers that a LoRA adapter never targets: MoE routers
NOT_LORA = ("gate", "router", "lm_head")


def lora_targets(model: Any, requested: Any) -> Any:
    """peft `target_modules`: "all-linear" becomes the language model's linear layers only (peft's own
    all-linear also adapts the vision tower and projector, whose layers differ per family); anything else as
    given. Falls back to "all-linear" for a model with no recognisable language model."""
    if requested != "all-linear":
        return requested
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
             and any(part in ("language_model", "text_model") for part in n.split("."))
             and n.rsplit(".", 1)[-1] not in NOT_LORA]
    if not names:
        log.warning("lora: no language_model/text_model linear layers in %s; using peft's all-linear",
                    type(model).__name__)
        return requested
    suffixes = sorted({n.rsplit(".", 1)[-1] for n in names})
    return rf"^(?:.*\.)?(?:language_model|text_model)\..*\.(?:{'|'.join(suffixes)})$"


class Policy:
    """The student: `model` (a PeftModel when `lora`), `processor`, `device`; forwards go through
    `forward()` (resets cached M-RoPE offsets, applies autocast)."""

    def __init__(self, cfg: OPDConfig, device: str, resume_from: Path | None = None) -> None:
        self.cfg = cfg
        self.device = device
        self.processor, self.image_budget = processor_and_budget(cfg)
        check_family(self.processor, cfg)
        self.lora = cfg.lora
        if cfg.lora:
            self.model = self._lora_model(resume_from)
        else:
            self.model = load_base(cfg, device, str(resume_from) if resume_from else None)
        if cfg.gradient_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.sharded = sharded(cfg)
        if self.sharded:
            self.model = shard(cfg, self.model, device)
        self._rope_modules = [m for m in self.model.modules() if hasattr(m, "rope_deltas")]
        # CUDA + dtype auto: float32 master weights, bf16 compute (autocast; under FSDP also its bf16 gathers)
        self.autocast_dtype = torch.bfloat16 if device.startswith("cuda") and cfg.dtype == "auto" else None

    def _lora_model(self, resume_from: Path | None) -> Any:
        try:
            from peft import LoraConfig, PeftModel, get_peft_model
        except ImportError:
            raise UserError("lora: true needs peft (pip install 'vopd-bench[train]')") from None
        base = load_base(self.cfg, self.device)
        if resume_from is not None:
            adapter = resume_from / ADAPTER_DIR
            model = PeftModel.from_pretrained(base, str(adapter), is_trainable=True)
            return model if sharded(self.cfg) else model.to(self.device)
        lcfg = LoraConfig(
            r=self.cfg.lora_r,
            lora_alpha=self.cfg.lora_alpha,
            lora_dropout=self.cfg.lora_dropout,
            target_modules=lora_targets(base, self.cfg.lora_target_modules),
            bias="none",
        )
        try:
            return get_peft_model(base, lcfg)
        except ValueError as e:
            raise UserError(f"lora_target_modules: {e}") from None

    # ------------------------------------------------------------------ forward helpers
    @property
    def trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def reset_rope(self) -> None:
        """Qwen-VL caches M-RoPE offsets per batch; never let one batch reuse another's."""
        for m in self._rope_modules:
            m.rope_deltas = None

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.autocast_dtype)

    def forward(self, **inputs: Any) -> Any:
        self.reset_rope()
        with self.autocast():
            return self.model(**inputs)

    @contextlib.contextmanager
    def adapter_disabled(self) -> Iterator[None]:
        """The base model (LoRA adapter off): the initial policy, without a second copy of the weights."""
        if not self.lora:
            raise RuntimeError("adapter_disabled() needs a LoRA policy")
        with self.model.disable_adapter():
            yield

    def num_parameters(self) -> tuple[int, int]:
        total = sum(p.numel() for p in self.model.parameters())
        return total, sum(p.numel() for p in self.trainable)

    # ------------------------------------------------------------------ saving
    def save(self, folder: Path, state: dict[str, torch.Tensor] | None = None) -> None:
        """Weights + processor, loadable by AutoModelForImageTextToText.from_pretrained(folder) (and vLLM).

        With LoRA the folder holds the merged weights (base + adapter delta, computed without touching
        the live weights) and the adapter itself in `adapter/` (what a resumed run loads). `state`: the
        model's full state dict when the live one is sharded (`full_state_dict()`, gathered by all ranks).
        """
        from vopd_bench.train.checkpoint import to_hub_layout

        folder.mkdir(parents=True, exist_ok=True)
        self.processor.save_pretrained(folder)
        if not self.lora:
            self.model.save_pretrained(folder, state_dict=state)
        else:
            self.model.save_pretrained(folder / ADAPTER_DIR, state_dict=state)
            self.model.get_base_model().save_pretrained(folder, state_dict=merged_state_dict(self.model, state))
        to_hub_layout(folder)

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """Under FSDP: the whole state dict on rank 0 (a collective: every rank calls it); else None."""
        if not self.sharded:
            return None
        from vopd_bench.train import fsdp

        return fsdp.full_state_dict(self.model)


def merged_state_dict(peft_model: Any, state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The base model's state dict with every LoRA delta added, the adapter's own tensors left out.
    `state`: the peft model's full state dict gathered from the shards (FSDP); default: the live weights."""
    from peft.tuners.lora import LoraLayer

    prefix = "base_model.model."
    deltas: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, mod in peft_model.named_modules():
            if isinstance(mod, LoraLayer):
                for ad in mod.active_adapters:
                    d = _lora_delta(mod, name, ad, state)
                    if d is not None:
                        key = f"{name.removeprefix(prefix)}.weight"
                        deltas[key] = deltas.get(key, 0) + d
        out = {}
        for key, value in (peft_model.state_dict() if state is None else state).items():
            if "lora_" in key:
                continue
            key = key.removeprefix(prefix).replace(".base_layer.", ".")
            out[key] = (value + deltas[key].to(value.device, value.dtype)) if key in deltas else value
    return out


def _lora_delta(mod: Any, name: str, ad: str, state: dict[str, torch.Tensor] | None) -> torch.Tensor | None:
    """B·A·scaling of adapter `ad` of the LoRA layer `name`: peft's own formula on live weights, the same
    formula on the gathered tensors of `state` (linear and embedding layers)."""
    from peft.utils import transpose

    if state is None:
        return mod.get_delta_weight(ad) if ad in mod.lora_A or ad in getattr(mod, "lora_embedding_A", {}) else None
    if ad in mod.lora_A:
        a, b = state[f"{name}.lora_A.{ad}.weight"], state[f"{name}.lora_B.{ad}.weight"]
        fan_in_fan_out = mod.fan_in_fan_out
    elif ad in getattr(mod, "lora_embedding_A", {}):
        a, b = state[f"{name}.lora_embedding_A.{ad}"], state[f"{name}.lora_embedding_B.{ad}"]
        fan_in_fan_out = True
    else:
        return None
    if a.dim() != 2:
        raise UserError(f"LoRA on {type(mod).__name__} ({name}) cannot be merged from a sharded model; "
                        "target linear layers (lora_target_modules) or use distributed=ddp")
    return transpose(b.float() @ a.float(), fan_in_fan_out) * mod.scaling[ad]
