"""The rollout importance correction (`train/importance.py`): the formula on a hand-checked batch, the
sampling distribution's log-probabilities, the weighted loss, and HF rollouts (the learner samples itself:
ratio 1) through the trainer, with the mismatch statistics in train_log.jsonl, curve.jsonl and config.json.
The vLLM engine's side (its log-probabilities, a mismatched sampler, LoRA sync) is in test_vllm_rollout.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import run_cli

from vopd_bench.errors import UserError
from vopd_bench.train import load_config
from vopd_bench.train.importance import correction, enabled, sampling_log_probs
from vopd_bench.train.loss import generalized_jsd


def test_correction_on_a_hand_checked_batch() -> None:
    # ratios:          e^0 = 1   e^1 = 2.718 (clipped)   e^-1   e^0.5 = 1.649   pad     | 2 (not > 2)  e^3 (clipped)
    learner = torch.tensor([[-1.0, -0.5, -3.0, -0.2, -9.0], [-1.0 + math.log(2), -0.1, 0.0, 0.0, 0.0]])
    sampler = torch.tensor([[-1.0, -1.5, -2.0, -0.7, -0.1], [-1.0, -3.1, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
    c = correction(learner, sampler, mask, clip=2.0)
    expected = torch.tensor([[1.0, 2.0, math.exp(-1), math.exp(0.5), 0.0], [2.0, 2.0, 0, 0, 0]])
    torch.testing.assert_close(c.weights, expected)
    assert c.clipped == 2  # e^1 and e^3; exactly 2 is not over the threshold
    assert c.abs_log_ratio == pytest.approx(0 + 1 + 1 + 0.5 + math.log(2) + 3, rel=1e-6)
    assert c.ratio_max == pytest.approx(math.exp(3), rel=1e-5)
    assert c.weight_sum == pytest.approx(float(expected.sum()), rel=1e-6)
    assert not c.weights.requires_grad
    # a huge mismatch is bounded before exp (no inf), then truncated
    far = correction(torch.tensor([[0.0]]), torch.tensor([[-100.0]]), torch.tensor([[1]]), clip=2.0)
    assert far.weights.item() == 2.0 and far.ratio_max == pytest.approx(math.exp(20), rel=1e-5)


def test_sampling_log_probs_is_the_tempered_masked_softmax() -> None:
    torch.manual_seed(0)
    logits, tokens = torch.randn(2, 3, 11), torch.randint(0, 9, (2, 3))
    got = sampling_log_probs(logits, tokens, 1.7, banned=[9, 10])
    z = logits / 1.7
    z[..., 9:] = float("-inf")
    want = F.log_softmax(z, -1).gather(-1, tokens[..., None])[..., 0]
    torch.testing.assert_close(got, want)
    assert not torch.allclose(sampling_log_probs(logits, tokens, 1.0), got)


def test_weighted_loss_is_the_weighted_token_mean() -> None:
    torch.manual_seed(1)
    s, t = torch.randn(2, 4, 13, requires_grad=True), torch.randn(2, 4, 13)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    w = torch.tensor([[1.0, 2.0, 0.5, 7.0], [0.25, 1.0, 3.0, 3.0]])
    per = generalized_jsd(s, t, mask, beta=0.5, top_k=5, reduction="none")
    got = generalized_jsd(s, t, mask, beta=0.5, top_k=5, num_tokens=5, weights=w)
    torch.testing.assert_close(got, (per * w).sum() / 5)
    ones = generalized_jsd(s, t, mask, beta=0.5, top_k=5, weights=torch.ones(2, 4))
    torch.testing.assert_close(ones, generalized_jsd(s, t, mask, beta=0.5, top_k=5))


def test_modes_and_config_keys() -> None:
    assert enabled("auto", "vllm") and not enabled("auto", "hf")
    assert enabled("token", "hf") and not enabled("off", "vllm")
    cfg = load_config(None)
    assert (cfg.rollout_correction, cfg.is_clip, cfg.vllm_sleep_level) == ("auto", 2.0, 0)
    for override, message in [
        ("rollout_correction=sequence", "'rollout_correction': must be one of auto, token, off"),
        ("is_clip=0.5", "'is_clip': must be >= 1.0"),
        ("vllm_gpu_memory_utilization=1.5", "'vllm_gpu_memory_utilization': must be [0.01, 1.0]"),
        ("vllm_sleep_level=3", "'vllm_sleep_level': must be [0, 2]"),
        ("vllm_args={gpu_memory_utilization: 0.5}", "use the config key 'vllm_gpu_memory_utilization'"),
    ]:
        with pytest.raises(UserError) as e:
            load_config(None, [override])
        assert message in str(e.value) and "\n" not in str(e.value)


def test_hf_rollouts_are_their_own_sampler(tiny_model: str, synth_small: Path) -> None:
    """HF generate samples with the learner: its recorded log-probabilities equal the teacher-forced ones
    (ratio 1 up to float error), and they are the tempered distribution with the image ids suppressed."""
    from vopd_bench.tasks import get_task
    from vopd_bench.train.data import render_prompt
    from vopd_bench.train.policy import Policy
    from vopd_bench.train.rollout import (
        completion_logits,
        encode,
        multimodal_token_ids,
        row_inputs,
        sample_hf,
    )

    cfg = load_config("demo", [f"model={tiny_model}", "device=cpu", "threads=1"])
    spec = get_task("synth")
    prompts = [render_prompt(it, spec) for it in spec.load_items(synth_small)[:2]]
    policy = Policy(cfg, "cpu")
    full = encode(policy, [p.full for p in prompts], prompts)
    torch.manual_seed(0)
    ro = sample_hf(policy, full, 3, 8, 1.3, logprobs=True)
    assert ro.logprobs is not None and ro.logprobs.shape == ro.tokens.shape
    with torch.no_grad():
        logits = completion_logits(policy, row_inputs(policy, full, 3, range(6)), ro.tokens, ro.mask)
    learner = sampling_log_probs(logits, ro.tokens, 1.3, multimodal_token_ids(policy))
    on = ro.mask.bool()
    assert (learner - ro.logprobs)[on].abs().max() < 1e-4
    c = correction(learner, ro.logprobs, ro.mask, 2.0)
    assert c.clipped == 0 and abs(c.ratio_max - 1) < 1e-4
    wrong_t = sampling_log_probs(logits, ro.tokens, 1.0, multimodal_token_ids(policy))
    assert (wrong_t - ro.logprobs)[on].abs().max() > 1e-2  # the number depends on the temperature


def test_hf_run_with_the_correction_logs_the_mismatch(tiny_model: str, synth_small: Path, tmp_path: Path) -> None:
    from vopd_bench.train import run_training

    out = tmp_path / "run"
    cfg = load_config(None, [f"model={tiny_model}", f"train_data={synth_small}", "eval_tasks=[synth]",
                             "holdout_tasks=[]", f"eval_data={{synth: {synth_small}}}", "eval_limit=2",
                             "eval_max_new_tokens=4", "steps=1", "eval_every=1", "prompts_per_step=2",
                             "rollouts_per_prompt=2", "max_new_tokens=6", "micro_batch_size=2", "warmup_steps=0",
                             "top_k=20", "threads=1", "progress=false", "rollout_correction=token"], out=str(out))
    run_training(cfg)
    rec = json.loads((out / "train_log.jsonl").read_text().splitlines()[0])
    assert rec["is_abs_log_ratio"] < 1e-4 and rec["is_clipped_frac"] == 0
    assert rec["is_weight_mean"] == pytest.approx(1.0, abs=1e-4) and rec["is_ratio_max"] == pytest.approx(1, abs=1e-4)
    curve = [json.loads(x) for x in (out / "curve.jsonl").read_text().splitlines()]
    assert "is_abs_log_ratio" in curve[-1]["train"] and "is_ratio_max" in curve[-1]["train"]
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["rollout_correction"] == "token" and config["config"]["is_clip"] == 2.0
    rc = config["rollout_correction"]  # as resolved for the run
    assert rc["enabled"] and rc["is_clip"] == 2.0 and rc["sampler_logprobs"] == "hf generate scores"


def test_recipes_and_options_carry_the_settings(capsys: pytest.CaptureFixture) -> None:
    paper = load_config("paper_qwen3.5_4b")
    assert (paper.rollout_backend, paper.rollout_correction, paper.is_clip, paper.vllm_sleep_level) == \
        ("vllm", "auto", 2.0, 1)
    one = load_config("paper_qwen3.5_4b_1gpu")
    assert one.lora and one.rollout_backend == "vllm" and one.distributed == "ddp" and one.micro_batch_size == 2
    assert run_cli(["train", "--options", "is_clip", "vllm_sleep"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == ["is_clip", "vllm_sleep_level"]
    assert "rollout_is_threshold 2.0" in out[0] and "sleep mode" in out[1]
    assert run_cli(["train", "--options", "no_such_key"]) == 2
