"""Step-time breakdown and peak memory of Vision-OPD training on the tiny model, full vs LoRA, and
full training in 2 processes as DDP vs FSDP; with vLLM installed also rollouts from a colocated vLLM
engine (`vllm`: full weights, `vllm_lora`: LoRA with merged-weight sync), the importance correction on.

    python benchmarks/train_step.py [--model DIR] [--steps 4] [--prompts 8] [--rollouts 4]
                                    [--max-new-tokens 16] [--threads 2] [--modes full,lora,ddp2,fsdp2]
                                    [--vllm-sleep-level 0] [--vllm-gpu-memory-utilization 0.3]

Each mode runs in its own process (so peak RSS is that mode's; ddp2/fsdp2: 2 processes under torchrun
with threads/2 each, the same global batch; figures of rank 0, peak RSS the larger of the two):
`--steps` optimizer steps after one warm-up step; prints the mean seconds per phase -- encode (render +
processor), rollout (HF generate), teacher forward (crop view), reference forward (initial policy for the
anchor, when it is a separate model), student forward/backward (full view, + crop view with the anchor),
optimizer (+ teacher update), and for the vLLM modes the engine's weight sync and sleep -- then the
sampler/learner mismatch of the vLLM modes (mean |log ratio|, fraction clipped at is_clip, max ratio),
the time to re-score one checkpoint with the harness (per eval item and view), peak RSS, and the training state one process holds (weights, gradients, AdamW state, teacher
and reference copies: the part FSDP shards).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PHASES = ("encode", "rollout", "teacher_forward", "reference_forward", "student_forward_backward", "optimizer",
          "engine_sleep", "weight_sync")
MISMATCH = ("is_abs_log_ratio", "is_clipped_frac", "is_ratio_max")  # the importance correction's statistics


def default_model() -> str:
    if os.environ.get("VOPD_TEST_MODEL"):
        return os.environ["VOPD_TEST_MODEL"]
    from vopd_bench.reference import reference_model_path

    return str(reference_model_path())


def worker(a: argparse.Namespace) -> dict:
    """Run one mode in this process; returns mean phase times, eval time and peak RSS."""
    import torch

    torch.set_num_threads(a.threads)
    from vopd_bench.synth import ensure_dataset
    from vopd_bench.train.config import OPDConfig
    from vopd_bench.train.curve import score_checkpoint
    from vopd_bench.train.trainer import Trainer

    threads = max(1, a.threads // int(os.environ.get("WORLD_SIZE", 1)))
    data = ensure_dataset(kind="clutter", n=max(64, a.prompts * (a.steps + 1)), seed=4242)
    out = Path(a.out_dir)
    cfg = OPDConfig(
        model=a.model, train_task="synth", train_data=str(data), eval_tasks=["synth"], holdout_tasks=[],
        eval_data={"synth": str(data)}, eval_limit=a.eval_items, prompts_per_step=a.prompts,
        rollouts_per_prompt=a.rollouts, max_new_tokens=a.max_new_tokens, micro_batch_size=a.prompts * a.rollouts,
        steps=a.steps + 1, teacher=a.teacher, anchor_weight=a.anchor, beta=0.5, top_k=a.top_k,
        lora=a.worker in ("lora", "vllm_lora"), lr=1e-4, warmup_steps=0, threads=threads, progress=False,
        out=str(out), distributed="fsdp" if a.worker == "fsdp2" else "ddp",
        rollout_backend="vllm" if a.worker.startswith("vllm") else "hf", rollout_correction="auto",
        vllm_sleep_level=a.vllm_sleep_level, vllm_gpu_memory_utilization=a.vllm_gpu_memory_utilization,
    )
    trainer = Trainer(cfg)
    rank = trainer.rank
    recs = []
    for step in range(a.steps + 1):
        t0 = time.perf_counter()
        rec = trainer.train_step(step)
        rec["wall"] = time.perf_counter() - t0
        recs.append(rec)
    timed = recs[1:]  # the first step warms up kernels and caches
    mean = {p: sum(r["time"].get(p, 0.0) for r in timed) / len(timed) for p in PHASES}
    t0 = time.perf_counter()
    score_checkpoint(cfg, trainer.policy, trainer.last_checkpoint, out / "eval")
    eval_s = time.perf_counter() - t0
    total, trainable = trainer.policy.num_parameters()
    engine_dtype = getattr(trainer.vllm, "dtype", None)
    if trainer.vllm is not None:
        trainer.vllm.close()
    rss = [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]
    if trainer.world > 1:
        from vopd_bench.train import dist

        rss = dist.gather_objects(rss[0])
    return {
        "mode": a.worker,
        "phases": mean,
        "step_s": sum(r["wall"] for r in timed) / len(timed),
        "response_tokens": sum(r["response_tokens"] for r in timed) / len(timed),
        "mismatch": {k: max(r[k] for r in recs) if k == "is_ratio_max" else sum(r[k] for r in recs) / len(recs)
                     for k in MISMATCH if all(k in r for r in recs)},
        "engine_dtype": engine_dtype,
        "eval_s_per_item_view": eval_s / (2 * a.eval_items),
        "peak_rss_mb": max(rss),
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0,
        "state_mb": state_bytes(trainer) / 2**20,
        "rank": rank,
        "params_m": total / 1e6,
        "trainable_m": trainable / 1e6,
    }


def state_bytes(trainer: Any) -> int:
    """Bytes of training state held by this process: its (shards of the) weights and gradients, AdamW
    state, and the teacher's / reference's own weights or EMA tensors (each storage counted once)."""
    import torch

    from vopd_bench.train.fsdp import local

    tensors = []
    for p in trainer.policy.model.parameters():
        tensors += [local(p.data)] + ([local(p.grad)] if p.grad is not None else [])
    for st in trainer.optimizer.state.values():
        tensors += [local(v) for v in st.values() if torch.is_tensor(v)]
    scorers = [trainer.teacher] + [getattr(o, "reference", None) for o in trainer.objectives]  # + the anchor's
    for t in {id(t): t for t in scorers if t is not None}.values():
        if t.shadow is not None:
            tensors += [local(p.data) for p in t.shadow.model.parameters()]
        tensors += [local(e) for e in getattr(t, "ema", [])]
    seen = {}
    for x in tensors:
        seen[x.untyped_storage().data_ptr()] = x.untyped_storage().nbytes()
    return sum(seen.values())


def print_table(rows: list[dict], a: argparse.Namespace) -> None:
    dtypes = {r["mode"]: r["engine_dtype"] for r in rows if r.get("engine_dtype")}
    if dtypes:
        print("vLLM engine dtype: " + ", ".join(f"{m} {d}" for m, d in dtypes.items())
              + f"; sleep level {a.vllm_sleep_level}, gpu_memory_utilization {a.vllm_gpu_memory_utilization}")
    print(f"model {a.model}; {a.prompts} prompts x {a.rollouts} rollouts, <= {a.max_new_tokens} new tokens, "
          f"teacher {a.teacher}, anchor {a.anchor}, top_k {a.top_k}, {a.threads} threads; mean of {a.steps} steps")
    head = f"{'phase (s/step)':28s}" + "".join(f"{r['mode']:>12s}" for r in rows)
    print(head)
    print("-" * len(head))
    for p in PHASES:
        if p in ("engine_sleep", "weight_sync") and not any(r["phases"][p] for r in rows):
            continue  # HF rollouts only
        print(f"{p:28s}" + "".join(f"{r['phases'][p]:12.3f}" for r in rows))
    print(f"{'step total (wall)':28s}" + "".join(f"{r['step_s']:12.3f}" for r in rows))
    print(f"{'mean response tokens':28s}" + "".join(f"{r['response_tokens']:12.1f}" for r in rows))
    for k in MISMATCH:
        if any(k in r.get("mismatch", {}) for r in rows):
            print(f"{k:28s}" + "".join(f"{r['mismatch'][k]:12.4g}" if k in r.get("mismatch", {}) else f"{'-':>12s}"
                                       for r in rows))
    print(f"{'re-scoring s / item-view':28s}" + "".join(f"{r['eval_s_per_item_view']:12.3f}" for r in rows))
    print(f"{'peak RSS (MB)':28s}" + "".join(f"{r['peak_rss_mb']:12.0f}" for r in rows))
    if any(r.get("peak_gpu_mb") for r in rows):
        print(f"{'peak GPU memory (MB)':28s}" + "".join(f"{r.get('peak_gpu_mb', 0):12.0f}" for r in rows))
    print(f"{'training state / proc (MB)':28s}" + "".join(f"{r['state_mb']:12.1f}" for r in rows))
    print(f"{'params / trainable (M)':28s}" + "".join(f"{r['params_m']:6.2f}/{r['trainable_m']:5.2f}" for r in rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--rollouts", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--teacher", default="ema", choices=["ema", "frozen", "live"])
    p.add_argument("--anchor", type=float, default=0.5)
    p.add_argument("--top-k", type=int, default=100)
    p.add_argument("--eval-items", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--modes", default="full,lora,ddp2,fsdp2", help="also vllm, vllm_lora (vLLM rollouts)")
    p.add_argument("--vllm-sleep-level", type=int, default=0, help="vllm modes: engine sleep between rollout and update")
    p.add_argument("--vllm-gpu-memory-utilization", type=float, default=0.3, help="vllm modes: the engine's GPU share")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out-dir", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    a.model = a.model or default_model()
    if a.worker:
        row = worker(a)
        if row["rank"] == 0:
            print(json.dumps(row))
        return
    rows = []
    for mode in a.modes.split(","):
        args = [a for a in sys.argv[1:]] + ["--worker", mode, "--model", a.model]
        launch = [sys.executable]
        if mode in ("ddp2", "fsdp2"):
            launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29650"]
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, a.threads // 2))} if len(launch) > 1 else None
        with tempfile.TemporaryDirectory(prefix=f"vopd-bench-{mode}-") as d:
            proc = subprocess.run([*launch, __file__, *args, "--out-dir", d], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            sys.exit(f"{mode} failed:\n{proc.stderr[-3000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print_table(rows, a)


if __name__ == "__main__":
    main()
