"""Vision-OPD step breakdown and peak RSS: full fine-tuning and LoRA, and LoRA with the adapter-off teacher
against a plain LoRA SFT step on the same prompts; optionally step time vs rollouts per prompt.

    python benchmarks/step_breakdown.py [--modes full_ema,lora_frozen,lora_sft] [--steps 3] [--prompts 8]
                                        [--rollouts 4] [--max-new-tokens 16] [--rollout-sweep 2,4,8]

Modes (each in its own process, so its peak RSS is its own):
- `full_ema`    all weights trained, EMA teacher (the paper's recipe: a second copy of the weights);
- `full_frozen` all weights trained, frozen teacher (a second copy of the initial weights);
- `lora_frozen` a LoRA adapter trained, frozen teacher = the same model with the adapter off (no copy);
- `lora_ema`    a LoRA adapter trained, EMA of the adapter swapped in for the teacher;
- `lora_sft`    a LoRA adapter trained by cross-entropy on gold answers (objective `supervised`: no rollout, no
                teacher): the plain LoRA SFT step, on a batch of the same size as the distillation step's
                (prompts x rollouts sequences: that many prompts, one gold answer each).

Each mode runs one warm-up step, then `--steps` timed steps; the phases (encode, rollout, teacher forward,
reference forward, student forward/backward, optimizer) are medians over the timed steps, then one
re-scoring of the checkpoint with the harness (per item-view). Peak RSS is `getrusage` (the process's
maximum); "peak above load" is that peak minus the resident size right after the trainer was built (what
the step itself adds, the part a ratio of whole-process peaks hides on a tiny model).

The last lines are the figures: the LoRA adapter-off / LoRA SFT peak-RSS ratio (goal <= 1.1x), the teacher
forward share of a step (goal <= 15%), and, with --rollout-sweep, step seconds per rollouts-per-prompt.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHASES = ("encode", "rollout", "teacher_forward", "reference_forward", "student_forward_backward", "optimizer")
MODES = {
    "full_ema": dict(lora=False, teacher="ema", objective="distill"),
    "full_frozen": dict(lora=False, teacher="frozen", objective="distill"),
    "lora_frozen": dict(lora=True, teacher="frozen", objective="distill"),
    "lora_ema": dict(lora=True, teacher="ema", objective="distill"),
    "lora_sft": dict(lora=True, teacher="frozen", objective="supervised"),
}


def rss_now_mb() -> float:
    """Resident set size of this process now (Linux /proc; 0 where unknown)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(a: argparse.Namespace) -> dict:
    """One mode in this process: median phase seconds, re-scoring time, peak RSS."""
    import torch

    torch.set_num_threads(a.threads)
    from vopd_bench.synth import ensure_dataset
    from vopd_bench.train.config import OPDConfig
    from vopd_bench.train.curve import score_checkpoint
    from vopd_bench.train.trainer import Trainer

    mode = MODES[a.worker]
    # SFT has no rollouts: it takes prompts x rollouts prompts, so both steps hold the same number of sequences
    prompts, rollouts = (a.prompts * a.rollouts, 1) if mode["objective"] == "supervised" else (a.prompts, a.rollouts)
    data = ensure_dataset(kind="clutter", n=max(64, prompts * (a.steps + 1)), seed=4242)
    out = Path(a.out_dir)
    cfg = OPDConfig(
        model=a.model, train_task="synth", train_data=str(data), eval_tasks=["synth"], holdout_tasks=[],
        eval_data={"synth": str(data)}, eval_limit=a.eval_items, prompts_per_step=prompts,
        rollouts_per_prompt=rollouts, max_new_tokens=a.max_new_tokens, micro_batch_size=prompts * rollouts,
        steps=a.steps + 1, anchor_weight=0.0, beta=0.5, top_k=100, lr=1e-4, warmup_steps=0, threads=a.threads,
        progress=False, out=str(out), **mode,
    )
    trainer = Trainer(cfg)
    loaded = rss_now_mb()
    recs = []
    for step in range(a.steps + 1):
        t0 = time.perf_counter()
        rec = trainer.train_step(step)
        rec["wall"] = time.perf_counter() - t0
        recs.append(rec)
    timed = recs[1:]  # the first step warms up kernels and caches
    phases = {p: statistics.median(r["time"].get(p, 0.0) for r in timed) for p in PHASES}
    peak = peak_rss_mb()
    t0 = time.perf_counter()
    score_checkpoint(cfg, trainer.policy, trainer.last_checkpoint, out / "eval")
    eval_s = time.perf_counter() - t0
    total, trainable = trainer.policy.num_parameters()
    return {
        "mode": a.worker, "rollouts": a.rollouts, "sequences": prompts * rollouts, "phases": phases,
        "step_s": statistics.median(r["wall"] for r in timed),
        "step_runs": [r["wall"] for r in timed],
        "response_tokens": statistics.median(r["response_tokens"] for r in timed),
        "eval_s_per_item_view": eval_s / (2 * a.eval_items),
        "peak_rss_mb": peak, "loaded_rss_mb": loaded, "peak_above_load_mb": peak - loaded,
        "params_m": total / 1e6, "trainable_m": trainable / 1e6,
    }


def spawn(a: argparse.Namespace, mode: str, rollouts: int) -> dict:
    """Run one mode in a fresh process; its JSON row."""
    args = [sys.executable, __file__, "--worker", mode, "--model", a.model, "--steps", str(a.steps),
            "--prompts", str(a.prompts), "--rollouts", str(rollouts), "--max-new-tokens", str(a.max_new_tokens),
            "--eval-items", str(a.eval_items), "--threads", str(a.threads)]
    with tempfile.TemporaryDirectory(prefix=f"vopd-step-{mode}-") as d:
        p = subprocess.run([*args, "--out-dir", d], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{mode} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="checkpoint folder (default: the reference vopd-tiny)")
    p.add_argument("--modes", default="full_ema,lora_frozen,lora_sft", help=f"of {', '.join(MODES)}")
    p.add_argument("--steps", type=int, default=3, help="timed steps per mode (after one warm-up step)")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--rollouts", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--eval-items", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rollout-sweep", default="", help="rollouts per prompt to time step seconds at (full_ema), e.g. 2,4,8")
    p.add_argument("--json", default=None, help="also write the figures here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out-dir", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.model is None:
        from vopd_bench.models import REFERENCE_DIR

        a.model = str(REFERENCE_DIR)
    if a.worker:
        print(json.dumps(worker(a)))
        return
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad:
        sys.exit(f"--modes: unknown mode {bad[0]!r}; choose from {', '.join(MODES)}")
    rows = [spawn(a, m, a.rollouts) for m in modes]
    sweep = [spawn(a, "full_ema", int(r)) for r in a.rollout_sweep.split(",") if r.strip()]
    print(f"model {a.model}; {a.prompts} prompts x {a.rollouts} rollouts, <= {a.max_new_tokens} new tokens, "
          f"{a.threads} threads; medians of {a.steps} steps after one warm-up")
    head = f"{'phase (s/step)':28s}" + "".join(f"{r['mode']:>13s}" for r in rows)
    print(head)
    print("-" * len(head))
    for ph in PHASES:
        print(f"{ph:28s}" + "".join(f"{r['phases'][ph]:13.3f}" for r in rows))
    lines = [("sequences per step", "sequences", "{:13d}"), ("step total (wall)", "step_s", "{:13.3f}"),
             ("mean response tokens", "response_tokens", "{:13.1f}"),
             ("re-scoring s / item-view", "eval_s_per_item_view", "{:13.3f}"), ("peak RSS (MB)", "peak_rss_mb", "{:13.0f}"),
             ("peak above load (MB)", "peak_above_load_mb", "{:13.0f}"), ("trainable params (M)", "trainable_m", "{:13.2f}")]
    for label, key, fmt in lines:
        print(f"{label:28s}" + "".join(fmt.format(r[key]) for r in rows))
    for r in sweep:
        print(f"rollouts/prompt {r['rollouts']:3d}: step {r['step_s']:.3f} s (rollout {r['phases']['rollout']:.3f} s, "
              f"student fwd/bwd {r['phases']['student_forward_backward']:.3f} s), "
              f"{r['step_s'] / (a.prompts * r['rollouts']):.4f} s per rollout")
    by = {r["mode"]: r for r in rows}
    if "lora_frozen" in by and "lora_sft" in by:
        lo, sft = by["lora_frozen"], by["lora_sft"]
        ratio = lo["peak_rss_mb"] / sft["peak_rss_mb"]
        above = lo["peak_above_load_mb"] / max(sft["peak_above_load_mb"], 1.0)
        print(f"peak RSS, LoRA adapter-off teacher / LoRA SFT: {ratio:.3f}x (goal <= 1.1x: "
              f"{'met' if ratio <= 1.1 else 'not met'}); above load: {above:.2f}x")
    for r in rows:
        if r["phases"]["teacher_forward"] > 0:
            share = 100 * r["phases"]["teacher_forward"] / r["step_s"]
            print(f"teacher forward share of a step, {r['mode']}: {share:.1f}% (goal <= 15%: "
                  f"{'met' if share <= 15 else 'not met'})")
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "modes": rows, "rollout_sweep": sweep}, indent=2))


if __name__ == "__main__":
    main()
