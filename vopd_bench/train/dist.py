"""Collective helpers of the trainer; rank, world size, the barrier and joining the process group come from
`vopd_bench.runtime` (re-exported here under the trainer's names).

Data parallel (`distributed: ddp`): each rank samples its own prompts; after backward the gradients are
summed across ranks (the loss is already normalised by the global token count), so every rank takes the
same optimizer step and the weights stay identical. This is DDP's arithmetic done explicitly: a step runs
generate and several forwards before one backward, which DDP's reducer handles awkwardly.
`distributed: fsdp` shards instead (`vopd_bench/train/fsdp.py`): same prompts per rank, same sums.

CPU: `torchrun --nproc_per_node N -m vopd_bench.cli train ...` (gloo; tested with 2 processes, DDP and
FSDP). GPU: the same command on N GPUs uses nccl (cuda:LOCAL_RANK). DDP keeps a full replica per GPU
(fp32 weights + AdamW + the EMA copy: up to ~2B parameters on 80 GB, LoRA beyond); FSDP divides that by N.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from vopd_bench.runtime import barrier, is_main, local_rank, rank, world_size  # noqa: F401 (the trainer's names)
from vopd_bench.runtime import init_process_group as init  # noqa: F401


def _device() -> torch.device:
    """Where collective buffers live: the current GPU under nccl, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_sum(value: float) -> float:
    """Sum of a number over ranks."""
    if not dist.is_initialized():
        return value
    t = torch.tensor([float(value)], dtype=torch.float64, device=_device())
    dist.all_reduce(t)
    return float(t.item())


def sum_gradients(params: list[torch.nn.Parameter]) -> None:
    """Sum the gradients of `params` over ranks in one flat all-reduce."""
    if not dist.is_initialized():
        return
    for p in params:  # every rank must contribute the same tensors, even for an unused parameter
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


def check_in_sync(params: list[torch.nn.Parameter]) -> None:
    """Raise if the ranks' weights differ (they must: same start, same summed gradients, same step)."""
    if not dist.is_initialized():
        return
    with torch.no_grad():
        local = torch.stack([torch.stack([p.double().sum(), p.double().abs().sum()]) for p in params]).to(_device())
    lo, hi = local.clone(), local.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    if not torch.allclose(lo, hi, rtol=1e-6, atol=1e-8):
        raise RuntimeError("the processes' weights have diverged (gradients were not summed identically)")


def gather_objects(obj: Any) -> list[Any]:
    """`obj` of every rank (in rank order) on every rank."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj` on every rank."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
