"""The Vision-OPD training loop (on-policy self-distillation from the crop view).

Per step, on every rank: take this rank's prompts; sample n responses per prompt from the student on
the full image; in micro-batches, the active objectives (`objectives.py`: generalized JSD(β) against
the teacher on the crop view, + the optional anchor KL(initial ‖ student) on the crop inputs) score the
same tokens, each normalised by the global response-token count, and one backward takes their sum; sum
gradients over ranks; clip; AdamW; update the teacher. Every `eval_every` steps (and at step 0 = the base model, and at the end): an
atomic checkpoint, a harness evaluation, one `curve.jsonl` line and a redrawn gap curve (rank 0 writes).
Labels are never used for training; the one exception is the diagnostic `objective: supervised`
(cross-entropy on the gold answers of the same full-image prompts, same budget): the label-supervised
ceiling a distillation run is judged against.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from vopd_bench import __version__
from vopd_bench.errors import UserError
from vopd_bench.models import resolve_model
from vopd_bench.runtime import (
    append_jsonl,
    atomic_write_jsonl,
    package_versions,
    read_jsonl,
)
from vopd_bench.schema import TrainRunConfig
from vopd_bench.train import checkpoint, dist, fsdp, importance
from vopd_bench.train.config import RESUMABLE_CHANGES, OPDConfig, default_out
from vopd_bench.train.curve import (
    append_point,
    collapse_warnings,
    redraw,
    score_checkpoint,
    truncate_after,
)
from vopd_bench.train.data import Prompt, load_prompts, prompts_provenance, render_prompt, step_indices
from vopd_bench.train.logging_sinks import make_sinks
from vopd_bench.train.objectives import MicroBatch, build_objectives, objective_class
from vopd_bench.train.policy import Policy, check_family, pick_device, processor_and_budget
from vopd_bench.train.rollout import (
    Rollouts,
    answer_entropy,
    encode,
    gold_rollouts,
    multimodal_token_ids,
    sample_hf,
)
from vopd_bench.train.rundir import TrainRun
from vopd_bench.train.teacher import make_teacher

log = logging.getLogger(__name__)
TRAIN_LOG = "train_log.jsonl"
CURVE = "curve.jsonl"
CURVE_STEM = "gap_curve"


class Timer:
    """Accumulates wall time per phase."""

    def __init__(self) -> None:
        self.times: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] += time.perf_counter() - t0


def step_seed(seed: int, step: int, rank: int) -> int:
    """The sampling seed of (run seed, step, rank): resumed runs draw the same rollouts."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


def lr_factor(step: int, cfg: OPDConfig) -> float:
    """Linear warm-up over `warmup_steps`, then constant or cosine decay to 0 at `steps`."""
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    if cfg.lr_schedule == "cosine":
        frac = min(1.0, max(0, step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
        return warm * 0.5 * (1 + math.cos(math.pi * frac))
    return warm


class Trainer:
    """One training run in `cfg.out` (resumes from the newest committed checkpoint there)."""

    def __init__(self, cfg: OPDConfig) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out) if cfg.out else default_out(cfg)
        self.rank, self.world = dist.rank(), dist.world_size()
        if cfg.prompts_per_step % self.world:
            raise UserError(f"prompts_per_step={cfg.prompts_per_step} must divide by the {self.world} processes")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.spec, self.items = load_prompts(cfg)  # fails on missing boxes before any model is loaded
        _check_tasks(cfg)
        self.device = pick_device(cfg)
        dist.init(self.device)
        self.ckpt_root = self.out / "checkpoints"
        # the processor, remote code, family and image budget are checked before anything is written
        processor, self.image_budget = processor_and_budget(cfg)
        check_family(processor, cfg)
        del processor
        if dist.is_main():
            self._check_config()
            checkpoint.clean_partial(self.ckpt_root)
        dist.barrier()
        resume = checkpoint.latest(self.ckpt_root)
        torch.manual_seed(cfg.seed)  # a new LoRA adapter's initialisation: reproducible, the same on every rank
        self.policy = Policy(cfg, self.device, resume_from=resume)
        self.vllm = None
        on_policy = objective_class(cfg.objective).on_policy
        # the importance correction: on for engine rollouts (rollout_correction auto), never for gold answers
        self.correct = on_policy and importance.enabled(cfg.rollout_correction, cfg.rollout_backend)
        if cfg.rollout_backend == "vllm" and on_policy:
            from vopd_bench.train.vllm_rollout import VLLMSampler

            self.vllm = VLLMSampler(self.policy, resolve_model(cfg.model), cfg.max_pixels, cfg.vllm_args,
                                    logprobs=self.correct, gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
                                    sleep_level=cfg.vllm_sleep_level, dtype=cfg.vllm_dtype)
            if resume is not None:
                self.vllm.sync(self.policy)
        self.banned = multimodal_token_ids(self.policy) if self.correct else []
        if dist.is_main():
            self._write_config()  # once the model (LoRA targets) and the engine (its settings) are known
        self.teacher = make_teacher(cfg.teacher, self.policy, cfg)
        self.objectives = build_objectives(cfg, self.teacher)
        self.token_means = tuple(dict.fromkeys([*(k for o in self.objectives for k in o.token_means),
                                                *(importance.TOKEN_MEANS if self.correct else ())]))
        self.optimizer = torch.optim.AdamW(
            self.policy.trainable, lr=cfg.lr, betas=tuple(cfg.adam_betas), weight_decay=cfg.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, cfg))
        self.step = 0
        self.last_checkpoint = resolve_model(cfg.model)
        if resume is not None:
            self._load(resume)
        self.sinks = make_sinks(cfg.report_to, self.out, cfg.to_dict(), self.step, dist.is_main())  # report_to
        total, trainable = self.policy.num_parameters()
        log.info(
            "Vision-OPD: %s, %.2fM parameters (%.2fM trainable), teacher %s, %d process(es), out %s%s",
            cfg.model, total / 1e6, trainable / 1e6, cfg.teacher, self.world, self.out,
            f", resumed at step {self.step}" if resume else "",
        )

    # ------------------------------------------------------------------ run record
    def _config_record(self) -> TrainRunConfig:
        return TrainRunConfig(
            vopd_bench=__version__,
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            model=self.cfg.model,
            model_path=resolve_model(self.cfg.model),
            seed=self.cfg.seed,
            world_size=self.world,
            train_task={
                "name": self.spec.name,
                "n_prompts": len(self.items),
                "crop": self.spec.crop.to_dict(),
                "prompt_hash": self.spec.prompt.hash(),
                "options": self.spec.options,
                "provenance": prompts_provenance(self.items),  # sources, filters, train/eval overlap checked
            },
            config=self.cfg.to_dict(),
            versions=package_versions(),
            extra={"image_budget": self.image_budget, "lora_target_modules": self._lora_targets(),
                   "rollout_correction": self._correction_record(), "vllm": self._vllm_record()},
        )

    def _correction_record(self) -> dict[str, Any]:
        """The importance correction as resolved for this run (config.json `extra.rollout_correction`)."""
        on = bool(getattr(self, "correct", False))
        sampler = ("vllm processed_logprobs" if self.cfg.rollout_backend == "vllm" else "hf generate scores") \
            if on else None
        return {"enabled": on, "mode": self.cfg.rollout_correction, "level": "token" if on else None,
                "is_clip": self.cfg.is_clip if on else None, "sampler_logprobs": sampler,
                "temperature": self.cfg.temperature if on else None}

    def _vllm_record(self) -> dict[str, Any] | None:
        """The colocated engine's settings in force (None without one)."""
        sampler = getattr(self, "vllm", None)
        return sampler.settings() if sampler is not None else None

    def _lora_targets(self) -> list[str] | None:
        """The module names the LoRA adapter resolved to (None without LoRA)."""
        peft_config = getattr(getattr(getattr(self, "policy", None), "model", None), "peft_config", None)
        if not peft_config:
            return None
        targets = next(iter(peft_config.values())).target_modules
        return sorted(targets) if isinstance(targets, (set, list, tuple)) else targets

    def _check_config(self) -> None:
        """Refuse to continue a run directory that holds another configuration (before anything is loaded)."""
        self._write_config(check_only=True)

    def _write_config(self, check_only: bool = False) -> None:
        run, rec = TrainRun(self.out), self._config_record()
        try:
            prev = run.read_config()
        except UserError:  # an unreadable record of a run that never trained: written anew
            prev = None
        if prev is not None:
            rec.created, rec.resumed = prev.created or rec.created, time.strftime("%Y-%m-%dT%H:%M:%S%z")
            diff = [
                f"{k}: {prev.config.get(k)!r} -> {v!r}"
                for k, v in rec.config.items()
                if k not in RESUMABLE_CHANGES and k in prev.config and prev.config.get(k) != v
            ]
            if diff:
                raise UserError(
                    f"{self.out} holds a training run with another configuration ({'; '.join(diff[:3])}); "
                    "use another --out (or delete that folder)"
                )
        if not check_only:
            run.write_config(rec)

    # ------------------------------------------------------------------ checkpoints
    def _load(self, folder: Path) -> None:
        state, teacher_state = checkpoint.load_state(folder)
        if self.policy.sharded:
            fsdp.load_full_optimizer_state(self.policy.model, self.optimizer, state["optimizer"])
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if teacher_state is not None:
            self.teacher.load_state_dict(teacher_state)
        checkpoint.set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.last_checkpoint = str(folder)

    def save_checkpoint(self) -> Path:
        folder = self.ckpt_root / f"step-{self.step}"
        policy = self.policy
        if policy.sharded:  # gather the whole weights, optimizer and teacher state to rank 0 (collectives)
            weights = policy.full_state_dict()
            optim = fsdp.full_optimizer_state(policy.model, self.optimizer)
            teacher = self.teacher.state_dict()
        else:
            dist.check_in_sync(policy.trainable)
            weights, optim = None, self.optimizer.state_dict()
            teacher = self.teacher.state_dict() if dist.is_main() else {}
        if dist.is_main():
            state = {"optimizer": optim, "scheduler": self.scheduler.state_dict()}
            folder = checkpoint.save(
                self.ckpt_root, self.step, lambda f: policy.save(f, weights), state, teacher or None
            )
            checkpoint.prune(self.ckpt_root, self.cfg.keep_last)
        dist.barrier()
        self.last_checkpoint = str(folder)
        return folder

    # ------------------------------------------------------------------ one step
    def train_step(self, step: int) -> dict[str, Any]:
        """One rollout batch → one optimizer step; returns this step's statistics (global over ranks)."""
        cfg, policy, timer = self.cfg, self.policy, Timer()
        idx = step_indices(len(self.items), step, cfg.prompts_per_step, cfg.seed, self.rank, self.world)
        with timer("encode"):
            prompts = [render_prompt(self.items[i], self.spec) for i in idx]
            full = encode(policy, [p.full for p in prompts], prompts)
            crop = encode(policy, [p.crop for p in prompts], prompts)
        torch.manual_seed(step_seed(cfg.seed, step, self.rank))
        with timer("rollout"):
            if not self.objectives[0].on_policy:
                ro = gold_rollouts(policy, prompts)
            elif self.vllm is not None:
                ro = self.vllm.sample(prompts, cfg.rollouts_per_prompt, cfg.max_new_tokens, cfg.temperature,
                                      step_seed(cfg.seed, step, self.rank))
                ro.tokens, ro.mask = ro.tokens.to(self.device), ro.mask.to(self.device)
            else:
                ro = sample_hf(policy, full, cfg.rollouts_per_prompt, cfg.max_new_tokens, cfg.temperature,
                               synced=policy.sharded, logprobs=self.correct)
        if self.vllm is not None and self.vllm.sleep_level:
            with timer("engine_sleep"):
                self.vllm.sleep()  # vllm_sleep_level: free the engine's memory for the update
        global_tokens = dist.all_sum(ro.num_tokens)
        sums: dict[str, float] = {}
        policy.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        n_rows = ro.tokens.shape[0]
        for start in range(0, n_rows, cfg.micro_batch_size):
            rows = range(start, min(start + cfg.micro_batch_size, n_rows))
            batch = MicroBatch(policy, full, crop, ro.n, rows, ro.tokens[start : rows.stop],
                               ro.mask[start : rows.stop], global_tokens, timer)
            if self.correct and ro.logprobs is not None:
                batch.sampler_logprobs, batch.is_clip = ro.logprobs[start : rows.stop], cfg.is_clip
                batch.temperature, batch.banned = cfg.temperature, self.banned
            self._micro_step(batch, sums)
        lr = self.optimizer.param_groups[0]["lr"]
        with timer("optimizer"):
            if not policy.sharded:  # FSDP has already reduce-scattered (summed) the gradients
                dist.sum_gradients(policy.trainable)
            grad_norm = fsdp.full(
                torch.nn.utils.clip_grad_norm_(policy.trainable, cfg.max_grad_norm or float("inf"))
            )
            self.optimizer.step()
            self.scheduler.step()
            self.teacher.update()
        if self.vllm is not None:
            with timer("weight_sync"):
                self.vllm.sync(policy)
        return self._step_stats(step, sums, ro, prompts, global_tokens, float(grad_norm), lr, timer)

    def _micro_step(self, batch: MicroBatch, sums: dict[str, float]) -> None:
        """The objectives' teacher scores (no grad), then their losses on the student, summed; backward.
        Adds the loss and the objectives' metrics to `sums`."""
        for objective in self.objectives:
            objective.prepare(batch)
        with batch.timer("student_forward_backward"):
            loss, metrics = None, {}
            for objective in self.objectives:
                term, m = objective.loss(batch)
                loss = term if loss is None else loss + term
                metrics.update(m)
            loss.backward()
        for k, v in {"loss": float(loss.detach()), **metrics}.items():
            sums[k] = sums.get(k, 0.0) + v
        corr = batch.importance()
        if corr is not None:  # the mismatch statistics: token sums, and the running maximum
            for k, v in corr.metrics().items():
                sums[k] = max(sums.get(k, 0.0), v) if k in importance.MAXIMA else sums.get(k, 0.0) + v

    def _step_stats(
        self,
        step: int,
        sums: dict[str, float],
        ro: Rollouts,
        prompts: list[Prompt],
        global_tokens: float,
        grad_norm: float,
        lr: float,
        timer: Timer,
    ) -> dict[str, Any]:
        """The step's record for train_log.jsonl: the loss and the objectives' metrics summed over ranks (the
        losses first, then the token means), times of rank 0."""
        ans = answer_entropy(ro, [p.options for p in prompts])
        order = [k for k in sums if k not in self.token_means] + [k for k in sums if k in self.token_means]
        local = {k: sums[k] / max(global_tokens, 1.0) if k in self.token_means else sums[k] for k in order}
        tot = {k: max(dist.gather_objects(v)) if k in importance.MAXIMA else dist.all_sum(v) for k, v in local.items()}
        answer_ents = [a for a in dist.gather_objects(ans) if a is not None]
        rec: dict[str, Any] = {"step": step + 1}
        rec.update({k: round(v, 6) for k, v in tot.items()})
        rec["answer_entropy"] = round(float(np.mean(answer_ents)), 6) if answer_ents else None
        rec["response_tokens"] = round(global_tokens / (len(prompts) * ro.n * self.world), 2)
        rec["lr"] = lr
        rec["grad_norm"] = round(grad_norm, 6)
        rec["time"] = {k: round(v, 4) for k, v in timer.times.items()}
        rec["example"] = ro.texts[0][:120] if ro.texts else ""
        rec["prompt_ids"] = [i for ids in dist.gather_objects([p.id for p in prompts]) for i in ids]
        return rec

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> dict[str, Any] | None:
        """Score the current weights (recorded as `last_checkpoint`) and add the curve point (rank 0)."""
        rng = checkpoint.rng_state()  # scoring must not shift the training's random stream
        t0 = time.perf_counter()
        run = TrainRun(self.out)
        eval_dir = run.step_dir(self.step)
        tasks = score_checkpoint(self.cfg, self.policy, self.last_checkpoint, eval_dir)
        checkpoint.set_rng_state(rng)
        self.policy.model.train()
        point = None
        if dist.is_main():
            curve_path = self.out / CURVE
            point = {
                "step": self.step,
                "checkpoint": self.last_checkpoint,
                "eval_dir": str(eval_dir),
                "tasks": tasks,
                "roles": tasks.roles,
                "train": self._train_block(),
                "eval_s": round(time.perf_counter() - t0, 2),
            }
            warnings = collapse_warnings(run.curve(), point, self.cfg.collapse_warn_points)
            for w in warnings:
                log.warning("COLLAPSE WARNING at step %d: %s", self.step, w)
            if warnings:
                point["warnings"] = warnings
            append_point(curve_path, point)
            self.sinks.point(point)
            redraw(curve_path, self.out / CURVE_STEM)
            log.info("step %d: %s", self.step, _brief(tasks))
        dist.barrier()
        return point

    def _train_block(self) -> dict[str, Any]:
        """Mean training statistics since the previous curve point (read back from train_log.jsonl)."""
        prev = max((p.step for p in TrainRun(self.out).curve() if p.step < self.step), default=0)
        recs = [r for r in read_jsonl(self.out / TRAIN_LOG) if prev < r["step"] <= self.step]
        if not recs:
            return {}
        out: dict[str, Any] = {"steps": len(recs)}
        for k in dict.fromkeys(k for r in recs for k in r if k not in _NOT_AVERAGED):
            vals = [r[k] for r in recs if _is_number(r.get(k))]
            if vals:
                out[k] = round(float(np.mean(vals)), 6)
        out["lr"] = recs[-1]["lr"]
        out["step_s"] = round(float(np.mean([sum(r["time"].values()) for r in recs])), 4)
        return out

    # ------------------------------------------------------------------ the loop
    def run(self) -> Path:
        cfg, curve_path = self.cfg, self.out / CURVE
        if dist.is_main():
            truncate_after(curve_path, self.step)
            _truncate_log(self.out / TRAIN_LOG, self.step)
        dist.barrier()
        if all(p.step != self.step for p in TrainRun(self.out).curve()):
            self.evaluate()
        bar = tqdm(total=cfg.steps, initial=self.step, desc="vision-opd", unit="step", dynamic_ncols=True,
                   disable=not cfg.progress or not dist.is_main())
        while self.step < cfg.steps:
            rec = self.train_step(self.step)
            self.step += 1
            if dist.is_main():
                append_jsonl(self.out / TRAIN_LOG, [rec])
                self.sinks.step(rec)
            bar.update(1)
            bar.set_postfix({k: f"{rec[k]:.4f}" for k in ("loss", *self.token_means) if k in rec})
            if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                self.save_checkpoint()
                self.evaluate()
        bar.close()
        return self.out


_NOT_AVERAGED = ("step", "lr", "time", "example", "prompt_ids")  # train_log keys a curve point does not average


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _truncate_log(path: Path, step: int) -> None:
    """Drop per-step records after `step` (a resumed run redoes those steps) and duplicates."""
    recs = read_jsonl(path, repair=True)
    keep = {r["step"]: r for r in recs if r["step"] <= step}
    if len(keep) != len(recs):
        atomic_write_jsonl(path, [keep[s] for s in sorted(keep)])


def _check_tasks(cfg: OPDConfig) -> None:
    from vopd_bench.tasks import get_task

    for name in [*cfg.eval_tasks, *cfg.holdout_tasks]:
        get_task(name)


def _brief(tasks: dict[str, Any]) -> str:
    parts = []
    for t, res in tasks.items():
        accs = ", ".join(f"{v} {100 * s['accuracy']:.1f}" for v, s in res["views"].items() if s.get("accuracy") is not None)
        gap = res.get("gap", {}).get("value")
        parts.append(f"{t}: {accs}" + (f", gap {gap:+.1f}" if gap is not None else ""))
    return "; ".join(parts)


def run_training(cfg: OPDConfig) -> Path:
    """Train (or resume) the run described by `cfg`; returns the output directory (curve.jsonl inside)."""
    threads = torch.get_num_threads()
    trainer = None
    try:
        trainer = Trainer(cfg)
        return trainer.run()
    finally:
        if trainer is not None:
            trainer.sinks.close()
        if trainer is not None and trainer.vllm is not None:
            trainer.vllm.close()
        torch.set_num_threads(threads)  # `threads` applies to this run only (matters when called in-process)
        dist.shutdown()
