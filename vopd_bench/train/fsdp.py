"""Fully sharded data parallel (FSDP2, `torch.distributed.fsdp.fully_shard`) for `distributed: fsdp`.

Every rank holds 1/world of each parameter, gradient and AdamW state; a layer's full weights exist only
while it runs. Units: each decoder layer and vision block (the model's `_no_split_modules`), the vision
tower itself (the trainer calls it directly to encode a prompt's image once for its n rollouts), then the
root (embeddings, final norm, LM head). Gradients are reduce-scattered as a SUM over ranks (the loss is
already normalised by the global token count, as in the DDP path). On CUDA with `dtype: auto` the weights
are gathered and computed in bfloat16 and gradients reduced in float32 (`MixedPrecisionPolicy`).

State that leaves the trainer is always full: `full_state_dict` (model) and `full_optimizer_state` gather
to rank 0 for checkpoints, which stay ordinary Hugging Face folders; `load_full_optimizer_state` puts a full
optimizer state back into the shards on resume. Every function here is a collective: all ranks call it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import torch

from vopd_bench.train import dist

log = logging.getLogger(__name__)


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (a view: in-place ops change the parameter), or `t` itself."""
    return t.to_local() if hasattr(t, "to_local") else t


def full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor behind a DTensor (a collective), or `t` itself."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _units(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The sub-modules that become FSDP units, innermost first (fully_shard must be applied bottom-up)."""
    hf = _root(model)
    names = set(getattr(hf, "_no_split_modules", None) or [])
    units = [(n, m) for n, m in model.named_modules()
             if type(m).__name__ in names or n.split(".")[-1] in ("visual", "vision_tower", "vision_model")]
    if not any(type(m).__name__ in names for _, m in units):
        log.warning("%s declares no _no_split_modules: FSDP shards its layers as one unit", type(hf).__name__)
    return [m for _, m in sorted(units, key=lambda u: -u[0].count("."))]  # deepest first


def shard(model: torch.nn.Module, device: str, bf16: bool = False, trained: bool = True) -> torch.nn.Module:
    """Shard `model` (in place) across all ranks on `device`'s kind; returns it.

    `trained=False` (a teacher: forwards only, weights changed in place between them) frees every unit's
    gathered weights after each forward, the root's too: FSDP keeps the root's gathered until the next
    backward, and a model that never runs backward would keep scoring with stale copies."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

    kind = "cuda" if device.startswith("cuda") else "cpu"
    mesh = init_device_mesh(kind, (dist.world_size(),))
    kw: dict[str, Any] = {"mesh": mesh}
    if bf16:
        kw["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for unit in _units(model):
        fully_shard(unit, **kw)
    root = _root(model)
    fully_shard(root, **kw, **({} if trained else {"reshard_after_forward": True}))
    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.set_gradient_divide_factor(1.0)  # sum over ranks, not the mean ...
            m.set_force_sum_reduction_for_comms(True)  # ... as a plain SUM (gloo has no PREMUL_SUM)
    # Fix the root now: the trainer may call the vision tower before any forward of the whole model, and
    # FSDP2 would otherwise take the first unit to run as the root.
    root._get_fsdp_state()._lazy_init()  # type: ignore[attr-defined]
    return model


def _root(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model (under a peft wrapper, whose generate() bypasses the wrapper's forward)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def reshard(model: torch.nn.Module) -> None:
    """Drop the gathered copy of the root's weights (before changing the shards in place)."""
    from torch.distributed.fsdp import FSDPModule

    root = _root(model)
    if isinstance(root, FSDPModule):
        root.reshard()


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's state dict on CPU on rank 0 (empty on the other ranks)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not dist.is_main():
        return {}
    tied = defaultdict(list)  # gathered copies of a tied parameter (embeddings = LM head) are one tensor again,
    for name, p in model.named_parameters(remove_duplicate=False):  # so save_pretrained drops the alias
        tied[id(p)].append(name)
    for names in tied.values():
        present = [n for n in names if n in sd]
        for n in present[1:]:
            sd[n] = sd[present[0]]
    return sd


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's whole state (keyed by parameter name) on CPU on rank 0 (empty elsewhere)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    sd = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return sd if dist.is_main() else {}


def load_full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Put a full optimizer state (from `full_optimizer_state`, read by every rank) into the shards."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, optim_state_dict=state, options=StateDictOptions(full_state_dict=True))


def load_full_tensors(params: list[torch.Tensor], tensors: list[torch.Tensor]) -> None:
    """Copy whole tensors into (possibly sharded) parameters: each rank keeps its own shard."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    with torch.no_grad():
        for p, t in zip(params, tensors):
            if isinstance(p, DTensor):
                t = distribute_tensor(t.to(p.device, p.dtype), p.device_mesh, p.placements, src_data_rank=None)
            local(p).copy_(local(t).to(p.device, p.dtype))
