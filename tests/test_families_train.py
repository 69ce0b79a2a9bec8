"""Every model family through the training path, on tiny random checkpoints built offline
(`vopd_bench.reference.families`): build + load, the full image and its crop encoded with different numbers
of visual tokens, `pixel_values` split and re-assembled per image (each chunk = that image encoded alone; the
model's logits on a selected row = those of the row encoded alone), image budgets per processor (honoured or
refused in one line), sampling never emitting image tokens, and (slow) 2 training steps with full weights
and with LoRA (adapter-off teacher), ending with a checkpoint that reloads and is re-scored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vopd_bench import inputs
from vopd_bench.errors import UserError
from vopd_bench.reference.families import FAMILY_NAMES, SPECS, tiny_family

FAMILIES = list(FAMILY_NAMES)
FIXED_SIZE = {"gemma3"}  # every image becomes the same number of visual tokens
NO_PIXEL_BUDGET = {"gemma3", "lfm2_vl"}  # processors without a pixel knob: a budget is refused
SIGLIP = {"gemma3", "llava_onevision", "lfm2_vl"}  # vision towers saved as vision_tower.vision_model.* (the Hub layout)


# `VOPD_FAMILIES_REPORT=FILE`: the measured cells of this module (per family: training full / LoRA, step
# seconds, visual tokens of the full and crop views, the budget's outcome) are merged into FILE as JSON
REPORT: dict[str, dict] = {}


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    path = os.environ.get("VOPD_FAMILIES_REPORT")
    if path and REPORT:
        p = Path(path)
        old = json.loads(p.read_text()) if p.is_file() else {}
        for name, cells in REPORT.items():
            old.setdefault(name, {}).update(cells)
        p.write_text(json.dumps(old, indent=2, sort_keys=True) + "\n")


def _record(name: str, **cells) -> None:
    REPORT.setdefault(name, {}).update(cells)


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"


def _load(name: str) -> tuple[object, object]:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = tiny_family(name)
    return AutoModelForImageTextToText.from_pretrained(path).eval(), AutoProcessor.from_pretrained(path)


@pytest.fixture(scope="module")
def prompt(synth_small: Path):
    """One synthetic item as a training prompt: a 224-px full image and its (smaller, non-square) crop."""
    from vopd_bench.tasks import get_task
    from vopd_bench.train.data import render_prompt

    spec = get_task("synth")
    p = render_prompt(spec.load_items(synth_small)[0], spec)
    assert p.full.size != p.crop.size
    return p


def _encode(processor, prompt, images) -> dict:
    return inputs.encode(processor, [prompt.request(im) for im in images])


class _Scorer:
    def __init__(self, model, processor) -> None:
        self.model, self.processor = model, processor

    def forward(self, **kw):
        for m in self.model.modules():
            if hasattr(m, "rope_deltas"):
                m.rope_deltas = None
        return self.model(**kw)


# ----------------------------------------------------------------------------- build, load, encode
@pytest.mark.parametrize("name", FAMILIES)
def test_tiny_family_builds_once_and_loads(name: str) -> None:
    from safetensors import safe_open

    path = tiny_family(name)
    assert tiny_family(name) == path  # cached
    model, processor = _load(name)
    assert model.config.model_type == SPECS[name].model_type
    assert processor.chat_template and inputs.family(processor).name != "other"
    assert model.config.get_text_config().vocab_size % 64 == 0
    with safe_open(str(path / "model.safetensors"), "pt") as fh:
        tower = {k.split("vision_tower.")[1].split(".")[0] for k in fh.keys() if "vision_tower." in k}  # noqa: SIM118
    assert (tower == {"vision_model"}) == (name in SIGLIP)


@pytest.mark.parametrize("name", FAMILIES)
def test_full_and_crop_encode_and_split_per_image(name: str, prompt) -> None:
    """A batch [full, crop]: visual tokens per view; image_chunks gives each image's part exactly as encoding
    it alone does; select_images + the prompt rows give the model the same logits as the row alone."""
    from vopd_bench.train.rollout import row_inputs

    model, processor = _load(name)
    enc = _encode(processor, prompt, [prompt.full, prompt.crop])
    full_tokens, crop_tokens = inputs.count_visual_tokens(processor, enc["input_ids"])
    _record(name, visual_tokens_full=full_tokens, visual_tokens_crop=crop_tokens)
    cfg = model.config  # the model's own placeholder: one per image feature it scatters into the prompt
    placeholder = next(getattr(cfg, k) for k in ("image_token_id", "image_token_index") if hasattr(cfg, k))
    assert [full_tokens, crop_tokens] == (enc["input_ids"] == placeholder).sum(-1).tolist()
    assert crop_tokens > 0 and full_tokens > 0
    assert (full_tokens == crop_tokens) == (name in FIXED_SIZE)
    chunks = inputs.image_chunks(enc, processor)
    assert len(chunks) == 2
    fam = inputs.family(processor)
    if not fam.per_sample_pixels and fam.trim is None:
        assert sum(len(c) for c in chunks) == len(enc["pixel_values"])
    wants = []
    for i, im in enumerate([prompt.full, prompt.crop]):
        alone = _encode(processor, prompt, [im])
        torch.testing.assert_close(chunks[i], inputs.image_chunks(alone, processor)[0], rtol=0, atol=0)
        with torch.no_grad():
            wants.append(model(**alone).logits[0, -1])
            got = _Scorer(model, processor).forward(**row_inputs(_Scorer(model, processor), enc, 1, range(i, i + 1)))
        torch.testing.assert_close(got.logits[0, -1], wants[-1], rtol=1e-4, atol=1e-4)
    assert (wants[0] - wants[1]).abs().max() > 1e-3  # the image reaches the logits (no vacuous checkpoint)


@pytest.mark.parametrize("name", FAMILIES)
def test_repeat_encoding_keeps_each_prompt_with_its_image(name: str, prompt) -> None:
    """Rollout batches: [full, crop] each repeated twice; every row scores as its prompt encoded alone."""
    from vopd_bench.train.rollout import repeat_encoding

    model, processor = _load(name)
    enc = _encode(processor, prompt, [prompt.full, prompt.crop])
    rep = repeat_encoding(enc, 2, processor)
    assert len(rep["input_ids"]) == 4
    with torch.no_grad():
        logits = _Scorer(model, processor).forward(**rep).logits[:, -1]
        for i, im in enumerate([prompt.full, prompt.full, prompt.crop, prompt.crop]):
            want = model(**_encode(processor, prompt, [im])).logits[0, -1]
            torch.testing.assert_close(logits[i], want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", FAMILIES)
def test_image_marker_tokens_are_known(name: str) -> None:
    """Sampling suppresses every token that stands for or delimits an image (the family's named tokens)."""
    model, processor = _load(name)
    ids = set(inputs.image_marker_ids(processor, model.config))
    named = SPECS[name].tokens.named
    want = {processor.tokenizer.convert_tokens_to_ids(t) for a, t in named.items()
            if "image" in a or "video" in a or "vision" in a or a in ("boi_token", "eoi_token")}
    assert want and want <= ids
    assert inputs.image_token_id(processor) in ids
    assert processor.tokenizer.eos_token_id not in ids


def test_qwen3_5_template_honours_enable_thinking(prompt) -> None:
    if "qwen3_5" not in FAMILIES:
        pytest.skip("transformers without Qwen3.5")
    _, processor = _load("qwen3_5")
    req = [prompt.request(prompt.full)]
    think = processor.apply_chat_template(inputs.build_messages(req[0]), add_generation_prompt=True, tokenize=False)
    plain = processor.apply_chat_template(inputs.build_messages(req[0]), add_generation_prompt=True, tokenize=False,
                                          enable_thinking=False)
    assert think.endswith("<|im_start|>assistant\n<think>\n")
    assert plain.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    enc = inputs.encode(processor, req, chat_template_kwargs={"enable_thinking": False})
    assert processor.tokenizer.decode(enc["input_ids"][0]).endswith("</think>\n\n")


# ----------------------------------------------------------------------------- image budgets
BUDGET = 112 * 112  # a budget below the 224-px full image for every family


@pytest.mark.parametrize("name", FAMILIES)
def test_image_budget_per_processor(name: str, prompt) -> None:
    """--max-pixels either lowers the full image's visual tokens (and the model still runs on the budgeted
    encoding) or is refused with one line naming the processor; the budget in force is JSON."""
    model, processor = _load(name)
    before = inputs.count_visual_tokens(processor, _encode(processor, prompt, [prompt.full])["input_ids"])[0]
    if name in NO_PIXEL_BUDGET:
        with pytest.raises(UserError, match=type(processor).__name__) as e:
            inputs.set_image_budget(processor, None, BUDGET)
        assert "\n" not in str(e.value)
        assert inputs.set_image_budget(processor, None, None)  # no budget: the fixed size is recorded
        _record(name, budget=f"refused: {e.value}")
        return
    budget = inputs.set_image_budget(processor, None, BUDGET)
    assert json.loads(json.dumps(budget)) == budget and budget["max_pixels"] == BUDGET
    inputs.apply_image_budget(model, budget)
    enc = _encode(processor, prompt, [prompt.full])
    after = inputs.count_visual_tokens(processor, enc["input_ids"])[0]
    assert 0 < after < before
    with torch.no_grad():
        assert torch.isfinite(model(**enc).logits).all()
    _record(name, budget="honoured", budget_visual_tokens_full=[before, after],
            budget_in_force={k: v for k, v in budget.items() if k != "image_grid_pinpoints"})
    with pytest.raises(UserError) as e:  # a budget below the smallest image the processor can make
        inputs.set_image_budget(processor, None, 8)
    assert "\n" not in str(e.value) and "--max-pixels" in str(e.value)


# ----------------------------------------------------------------------------- 2 training steps
def _settings(name: str, synth_small: Path, out: Path) -> dict:
    return {
        "model": str(tiny_family(name)), "train_task": "synth", "train_data": str(synth_small),
        "eval_tasks": ["synth"], "holdout_tasks": [], "eval_data": {"synth": str(synth_small)}, "eval_limit": 2,
        "eval_max_new_tokens": 4, "steps": 2, "eval_every": 2, "prompts_per_step": 2, "rollouts_per_prompt": 2,
        "max_new_tokens": 6, "micro_batch_size": 2, "lr": 1e-3, "warmup_steps": 0, "top_k": 20, "threads": 1,
        "progress": False, "out": str(out),
    }


def step_seconds(out: Path) -> list[float]:
    """Seconds of each logged training step (the sum of its timed phases)."""
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines() if x.strip()]
    return [round(sum(r["time"].values()), 3) for r in log]


@pytest.mark.slow
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("name", FAMILIES)
def test_two_training_steps(name: str, lora: bool, synth_small: Path, tmp_path: Path, prompt) -> None:
    """2 steps (teacher on the crop, student on the full image), a checkpoint that loads with the Auto classes,
    differs from the base model, and is re-scored on both views."""
    from vopd_bench.train import run_training
    from vopd_bench.train.config import OPDConfig

    extra = {"lora": True, "lora_r": 4, "teacher": "frozen"} if lora else {"teacher": "ema"}
    cell = "train_lora" if lora else "train_full"
    try:
        out = run_training(OPDConfig(**_settings(name, synth_small, tmp_path / name), **extra))
        _check_run(name, lora, out)
        _rescore(out / "checkpoints" / "step-2", prompt)
    except BaseException as e:
        _record(name, **{cell: _first_line(e)})
        raise
    seconds = step_seconds(out)
    _record(name, **{cell: "ok", f"step_s_{cell.split('_')[1]}": round(sum(seconds) / len(seconds), 3)})


def _rescore(ckpt: Path, prompt) -> None:
    """The saved checkpoint, loaded from disk by the eval backend, answers both views without error."""
    from vopd_bench.backends.base import BackendConfig, GenerationKwargs
    from vopd_bench.backends.hf import HFBackend

    backend = HFBackend(BackendConfig(model=str(ckpt), device="cpu"))
    res = backend.generate([prompt.request(prompt.full), prompt.request(prompt.crop)], GenerationKwargs(max_new_tokens=3))
    assert all(r.error is None and r.visual_tokens for r in res), [r.error for r in res]


def _check_run(name: str, lora: bool, out: Path) -> None:
    from safetensors import safe_open
    from transformers import AutoModelForImageTextToText

    curve = [json.loads(x) for x in (out / "curve.jsonl").read_text().splitlines() if x.strip()]
    assert [p["step"] for p in curve] == [0, 2]
    views = curve[-1]["tasks"]["synth"]["views"]
    assert views["full"]["n"] == views["crop"]["n"] == 2
    assert len(step_seconds(out)) == 2
    ckpt = out / "checkpoints" / "step-2"
    base = AutoModelForImageTextToText.from_pretrained(tiny_family(name)).state_dict()
    after = AutoModelForImageTextToText.from_pretrained(ckpt).state_dict()
    assert set(after) == set(base)
    changed = [k for k in after if not torch.equal(base[k], after[k])]
    assert changed
    if lora:
        assert (ckpt / "adapter" / "adapter_model.safetensors").is_file()
        assert all("language_model" in k or "text_model" in k for k in changed)  # LoRA on the LM only
    with safe_open(str(ckpt / "model.safetensors"), "pt") as fh:
        tower = {k.split("vision_tower.")[1].split(".")[0] for k in fh.keys() if "vision_tower." in k}  # noqa: SIM118
    assert (tower == {"vision_model"}) == (name in SIGLIP)


def _cli_train(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "vopd_bench.cli", "train", *args], env=env, capture_output=True,
                          text=True, timeout=600)


def _cli_args(name: str, synth_small: Path, out: Path, **extra) -> list[str]:
    settings = {**_settings(name, synth_small, out), **extra}
    settings.pop("out")
    return ["--out", str(out), *(f"{k}={json.dumps(v)}" for k, v in settings.items())]


@pytest.mark.slow
def test_cli_reasoning_model_lora_with_template_kwargs(synth_small: Path, tmp_path: Path) -> None:
    """As a user types it: Qwen3.5 with the non-thinking template, LoRA, 2 steps; the kwargs are recorded."""
    name = "qwen3_5" if "qwen3_5" in FAMILIES else FAMILIES[0]
    out = tmp_path / "run"
    done = _cli_train(_cli_args(name, synth_small, out, lora=True, lora_r=4, teacher="frozen",
                                chat_template_kwargs={"enable_thinking": False}))
    assert done.returncode == 0, done.stderr[-2000:]
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["chat_template_kwargs"] == {"enable_thinking": False}
    assert (out / "checkpoints" / "step-2" / "adapter").is_dir()


@pytest.mark.slow
def test_cli_any_res_budget_trains(synth_small: Path, tmp_path: Path) -> None:
    """LLaVA-OneVision under --max-pixels: the processor keeps the grids that fit and the model the same
    ones (else its feature count would not match the image tokens); the checkpoint keeps them."""
    if "llava_onevision" not in FAMILIES:
        pytest.skip("transformers without LLaVA-OneVision")
    out = tmp_path / "run"
    done = _cli_train(_cli_args("llava_onevision", synth_small, out, max_pixels=112 * 224))
    assert done.returncode == 0, done.stderr[-2000:]
    saved = json.loads((out / "checkpoints" / "step-2" / "config.json").read_text())
    assert all(h * w <= 112 * 224 for h, w in saved["image_grid_pinpoints"])


def test_cli_refused_budget_is_one_line(synth_small: Path, tmp_path: Path) -> None:
    """Gemma 3 has no pixel budget: `train max_pixels=...` stops with one line naming the processor, exit 2,
    nothing trained."""
    if "gemma3" not in FAMILIES:
        pytest.skip("transformers without Gemma 3")
    out = tmp_path / "run"
    done = _cli_train(_cli_args("gemma3", synth_small, out, max_pixels=50000))
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [ln for ln in done.stderr.splitlines() if "Gemma3Processor" in ln]
    assert len(errors) == 1 and "Traceback" not in done.stderr
    assert not (out / "checkpoints").exists()


VLLM_GENERATE = """
import os, sys
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
from PIL import Image
from transformers import AutoProcessor
from vllm import LLM, SamplingParams
path = sys.argv[1]
llm = LLM(model=path, dtype="float32", max_model_len=2048, enforce_eager=True, limit_mm_per_prompt={"image": 1})
msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which?"}]}]
text = AutoProcessor.from_pretrained(path).apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
img = Image.new("RGB", (224, 160), (200, 40, 40))
out = llm.generate([{"prompt": text, "multi_modal_data": {"image": img}}], SamplingParams(max_tokens=2, temperature=0))
print("GENERATED", len(out[0].outputs[0].token_ids))
"""


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SIGLIP & set(FAMILIES)))
def test_trained_siglip_checkpoint_loads_in_vllm(name: str, synth_small: Path, tmp_path: Path) -> None:
    """A LoRA run's merged checkpoint of a SigLIP-tower family is saved in the Hub layout vLLM's loader expects
    (`vision_tower.vision_model.*`) and generates there."""
    pytest.importorskip("vllm")
    from vopd_bench.train import run_training
    from vopd_bench.train.config import OPDConfig

    out = run_training(OPDConfig(**_settings(name, synth_small, tmp_path / name), lora=True, lora_r=4,
                                 teacher="frozen"))
    done = subprocess.run([sys.executable, "-c", VLLM_GENERATE, str(out / "checkpoints" / "step-2")],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0 and "GENERATED 2" in done.stdout, done.stderr[-2000:]


VLLM_SYNC = """
import sys
import torch
from vopd_bench.train.config import OPDConfig
from vopd_bench.train.policy import Policy
from vopd_bench.train.vllm_rollout import VLLMSampler
model, data = sys.argv[1], sys.argv[2]
cfg = OPDConfig(model=model, train_task="synth", train_data=data, eval_tasks=["synth"], eval_data={"synth": data},
                rollout_backend="vllm", vllm_args={"max_model_len": 2048, "enforce_eager": True}, progress=False)
policy = Policy(cfg, "cpu")
sampler = VLLMSampler(policy, model, None, dict(cfg.vllm_args))
def probe(worker):
    return sorted(float(p.float().sum()) for k, p in worker.model_runner.model.named_parameters()
                  if "vision_tower" in k and "patch_embedding.weight" in k)
with torch.no_grad():
    live = [p.add_(1.0) for k, p in policy.model.named_parameters() if "vision_tower" in k and "patch_embedding.weight" in k]
sampler.sync(policy)
print("ENGINE", probe_result := sampler.llm.collective_rpc(probe)[0], "LIVE", sorted(float(p.sum()) for p in live))
assert abs(probe_result[0] - float(live[0].sum())) < 1e-2 * abs(float(live[0].sum()))
"""


@pytest.mark.vllm
@pytest.mark.slow
def test_vllm_rollout_weight_sync_reaches_a_siglip_tower(synth_small: Path) -> None:
    """vLLM rollouts: the live model's SigLIP tower (`model.vision_tower.*`) is loaded into the engine under the
    names its loader takes (else vLLM refuses `vision_tower.embeddings`): the engine then holds the new weights."""
    pytest.importorskip("vllm")
    if "llava_onevision" not in FAMILIES:
        pytest.skip("transformers without LLaVA-OneVision")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
           "VLLM_CPU_KVCACHE_SPACE": "1"}
    done = subprocess.run([sys.executable, "-c", VLLM_SYNC, str(tiny_family("llava_onevision")), str(synth_small)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0 and "ENGINE" in done.stdout, done.stderr[-2000:]


def test_remote_code_checkpoint_names_the_flag(synth_small: Path, tmp_path: Path) -> None:
    """A checkpoint whose architecture is its own Python code (e.g. the original InternVL-Chat) is refused in
    one line naming `trust_remote_code`, before anything is loaded or trained."""
    model = tmp_path / "internvl-chat"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({
        "model_type": "internvl_chat", "architectures": ["InternVLChatModel"],
        "auto_map": {"AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
                     "AutoModel": "modeling_internvl_chat.InternVLChatModel"}}))
    out = tmp_path / "run"
    done = _cli_train(["--out", str(out), f"model={model}", "train_task=synth", f"train_data={synth_small}",
                       "steps=1", "progress=false"])
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "trust_remote_code=true" in errors[0] and "Traceback" not in done.stderr
    assert not (out / "checkpoints").exists() and not (out / "config.json").exists()  # nothing written


def test_training_refuses_a_processor_without_a_family_rule() -> None:
    """A processor whose image layout training does not know is refused up front in one line (eval may still
    run it); every tiny family's processor has a rule."""
    from types import SimpleNamespace

    from vopd_bench.train.policy import check_family

    class PaliGemmaProcessor:  # a processor class none of the families names
        pass

    with pytest.raises(UserError, match="PaliGemmaProcessor.*known families: qwen_vl") as e:
        check_family(PaliGemmaProcessor(), SimpleNamespace(model="paligemma-tiny"))
    assert "\n" not in str(e.value)
    for name in FAMILIES:
        check_family(_load(name)[1], SimpleNamespace(model=name))
