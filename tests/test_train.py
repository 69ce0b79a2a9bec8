"""The Vision-OPD trainer on the tiny model: each teacher kind and LoRA for 2 steps, on-policy
alignment, resume after SIGKILL, 2 processes (gloo), and config errors (one line, exit 2)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import free_port

from vopd_bench.train.config import OPDConfig, load_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def holdout_small() -> Path:
    from vopd_bench.synth import ensure_dataset

    return Path(ensure_dataset(kind="holdout", n=4, seed=778))


@pytest.fixture(scope="session")
def tiny_settings(tiny_model: str, synth_small: Path, holdout_small: Path) -> dict:
    """A run small enough for a test: 2 prompts x 2 rollouts of <= 6 tokens; eval on 2 items."""
    return {
        "model": tiny_model,
        "train_task": "synth",
        "train_data": str(synth_small),
        "eval_tasks": ["synth"],
        "holdout_tasks": ["synth_holdout"],
        "eval_data": {"synth": str(synth_small), "synth_holdout": str(holdout_small)},
        "eval_limit": 2,
        "eval_max_new_tokens": 4,
        "steps": 2,
        "eval_every": 2,
        "prompts_per_step": 2,
        "rollouts_per_prompt": 2,
        "max_new_tokens": 6,
        "micro_batch_size": 2,
        "lr": 1e-3,
        "warmup_steps": 0,
        "top_k": 20,
        "threads": 1,
        "progress": False,
    }


def _overrides(settings: dict) -> list[str]:
    return [f"{k}={json.dumps(v)}" for k, v in settings.items()]


def _curve(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "curve.jsonl").read_text().splitlines() if line.strip()]


def _weights(folder: Path | str) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(folder).state_dict()


# ----------------------------------------------------------------------------- config
def test_shipped_recipes_load_and_validate() -> None:
    demo = load_config("demo")
    assert demo.model == "vopd-tiny" and demo.train_task == "synth"
    paper = load_config("trainers/paper_qwen3.5_4b.yaml")
    assert (paper.lr, paper.prompts_per_step, paper.rollouts_per_prompt) == (2e-6, 96, 8)
    assert (paper.beta, paper.teacher, paper.ema_rate, paper.top_k) == (0.5, "ema", 0.05, 100)
    assert (paper.max_new_tokens, paper.warmup_steps) == (1024, 10)
    cfg = load_config("demo", ["crop.margin=1.0", "lr=1e-4", "eval_tasks=[synth]", "top_k=null"])
    assert cfg.crop == {"margin": 1.0} and cfg.lr == 1e-4 and cfg.top_k is None
    assert all(help_ for _, _, help_ in OPDConfig.help_table())


@pytest.mark.parametrize(
    "override, message",
    [
        ("bogus_key=1", "unknown config key 'bogus_key'"),
        ("beta=1.5", "'beta': must be [0.0, 1.0]"),
        ("beta=-0.1", "'beta': must be [0.0, 1.0]"),
        ("steps=abc", "'steps': expected int"),
        ("teacher=oracle", "'teacher': must be one of ema, frozen, live"),
        ("crop.zoom=2", "'crop': unknown field(s) zoom"),
        ("rollout_backend=sglang", "'rollout_backend': must be one of hf, vllm"),
        ("objective=rl", "'objective': must be one of distill, supervised"),
        ("distributed=zero3", "'distributed': must be one of ddp, fsdp"),
    ],
)
def test_bad_config_is_one_line_error(override: str, message: str, capsys: pytest.CaptureFixture) -> None:
    from vopd_bench.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", "--recipe", "demo", override])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_missing_boxes_stop_before_training(tmp_path: Path, synth_small: Path, tiny_model: str) -> None:
    rows = [json.loads(x) for x in (synth_small / "items.jsonl").read_text().splitlines()[:4]]
    for r in rows:
        r["image"] = str(synth_small / r["image"])
    rows[1]["boxes"], rows[3]["boxes"] = [], None
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "vopd_bench.cli", "train", "--out", str(out), f"model={tiny_model}",
         "train_task=null", f"train_data={data}"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert "2 of 4 item(s) have no boxes" in proc.stderr and rows[1]["id"] in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (out / "checkpoints").exists() and not (out / "curve.jsonl").exists()


# ----------------------------------------------------------------------------- on-policy alignment
def test_teacher_forced_logits_equal_generate_logits(tiny_settings: dict, synth_small: Path) -> None:
    """The student's scores of its own rollouts are the distribution it sampled from (left padding)."""
    from vopd_bench.train.data import load_prompts, render_prompt
    from vopd_bench.train.policy import Policy
    from vopd_bench.train.rollout import (
        completion_logits,
        encode,
        repeat_encoding,
        response_mask,
        row_inputs,
        shares_image_features,
    )

    cfg = OPDConfig(**tiny_settings)
    spec, items = load_prompts(cfg)
    policy = Policy(cfg, "cpu")
    prompts = [render_prompt(it, spec) for it in items[:2]]
    once = encode(policy, [p.full for p in prompts], prompts)
    enc = repeat_encoding(once, 2)
    policy.model.eval()
    policy.reset_rope()
    torch.manual_seed(0)
    with torch.no_grad():
        g = policy.model.generate(**enc, do_sample=True, top_k=0, max_new_tokens=6, min_new_tokens=6,
                                  output_logits=True, return_dict_in_generate=True)
        tokens = g.sequences[:, enc["input_ids"].shape[1]:]
        mask = torch.ones_like(tokens)
        forced = completion_logits(policy, enc, tokens, mask)
        shared = [completion_logits(policy, row_inputs(policy, once, 2, rows), tokens[rows.start : rows.stop],
                                    mask[rows.start : rows.stop]) for rows in (range(0, 3), range(3, 4))]
    generated = torch.stack(g.logits, 1)
    torch.testing.assert_close(forced, generated, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.cat(shared), generated, atol=1e-4, rtol=1e-4)  # image encoded once per prompt
    assert shares_image_features(policy.model)
    eos = torch.tensor([[5, 2, 7, 2], [2, 1, 1, 1]])
    assert response_mask(eos, [2]).tolist() == [[1, 1, 0, 0], [1, 0, 0, 0]]


# ----------------------------------------------------------------------------- 2-step runs
@pytest.mark.parametrize("teacher", ["ema", "frozen", "live"])
def test_two_steps_per_teacher_kind(teacher: str, tiny_settings: dict, tmp_path: Path) -> None:
    from vopd_bench.train import run_training

    cfg = OPDConfig(**tiny_settings, teacher=teacher, beta=0.5, anchor_weight=0.5 if teacher == "ema" else 0.0,
                    gradient_checkpointing=teacher == "live", out=str(tmp_path / teacher))
    out = run_training(cfg)
    curve = _curve(out)
    assert [p["step"] for p in curve] == [0, 2]
    last = curve[-1]
    assert set(last["tasks"]) == {"synth", "synth_holdout"}
    assert set(last["tasks"]["synth"]["views"]) == {"full", "crop"} and "gap" in last["tasks"]["synth"]
    assert set(last["tasks"]["synth_holdout"]["views"]) == {"full"}
    assert {"n", "accuracy", "ci_low", "ci_high"} <= set(last["tasks"]["synth"]["views"]["crop"])
    for key in ("loss", "teacher_entropy", "student_entropy", "lr", "grad_norm"):
        assert key in last["train"]
    assert Path(last["checkpoint"]).name == "step-2" and Path(last["eval_dir"]).is_dir()
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "train" and config["seed"] == 0 and "torch" in config["versions"]
    assert config["config"]["teacher"] == teacher
    ckpt = out / "checkpoints" / "step-2"
    assert (ckpt / "teacher.safetensors").is_file() == (teacher == "ema")
    before, after = _weights(tiny_settings["model"]), _weights(ckpt)
    assert any(not torch.equal(before[k], after[k]) for k in after)
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and all(len(r["prompt_ids"]) == 2 for r in log)
    assert ("anchor" in log[0]) == (teacher == "ema")


def test_supervised_objective_trains_on_the_gold_answers(tiny_settings: dict, tmp_path: Path) -> None:
    """The label-supervised ceiling: the "rollouts" are the gold responses and the loss is their
    cross-entropy on the full image; a few steps at a high rate lower it."""
    from vopd_bench.tasks import get_task
    from vopd_bench.train import run_training
    from vopd_bench.train.data import render_prompt
    from vopd_bench.train.policy import Policy
    from vopd_bench.train.rollout import eos_ids, gold_rollouts

    cfg = OPDConfig(**{**tiny_settings, "steps": 6, "eval_every": 6, "lr": 3e-3}, objective="supervised",
                    anchor_weight=0.5, out=str(tmp_path / "sft"))
    spec = get_task("synth")
    prompts = [render_prompt(it, spec) for it in spec.load_items(Path(tiny_settings["train_data"]))[:3]]
    policy = Policy(cfg, "cpu")
    ro = gold_rollouts(policy, prompts)
    assert ro.texts == [p.target for p in prompts] and all(t.startswith("It is ") for t in ro.texts)
    decoded = policy.processor.batch_decode(ro.tokens * ro.mask, skip_special_tokens=True)
    assert [d.strip() for d in decoded] == ro.texts
    ends = ro.mask.sum(1) - 1
    assert all(int(ro.tokens[i, e]) in eos_ids(policy) for i, e in enumerate(ends.tolist()))
    out = run_training(cfg)
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 7)) and all("anchor" in r for r in log)
    assert all(r["example"] in {p.target for p in prompts} or r["example"].startswith("It is ") for r in log)
    assert log[-1]["ce"] < log[0]["ce"] and all("jsd" not in r and "teacher_entropy" not in r for r in log)
    assert [p["step"] for p in _curve(out)] == [0, 6]


def test_ema_teacher_update_rule(tiny_settings: dict) -> None:
    from vopd_bench.train.policy import Policy
    from vopd_bench.train.teacher import EmaTeacher

    cfg = OPDConfig(**tiny_settings, teacher="ema", ema_rate=0.25)
    policy = Policy(cfg, "cpu")
    teacher = EmaTeacher(policy, cfg)
    p, e = policy.trainable[0], teacher.ema[0]
    e0 = e.clone()
    with torch.no_grad():
        p.add_(1.0)
    teacher.update()
    torch.testing.assert_close(e, 0.75 * e0 + 0.25 * p.detach())


def test_lora_two_steps(tiny_settings: dict, tmp_path: Path) -> None:
    pytest.importorskip("peft")
    from transformers import AutoModelForImageTextToText

    from vopd_bench.train import run_training

    cfg = OPDConfig(**tiny_settings, lora=True, lora_r=4, teacher="frozen", anchor_weight=0.5, out=str(tmp_path / "lora"))
    out = run_training(cfg)
    assert [p["step"] for p in _curve(out)] == [0, 2]
    ckpt = out / "checkpoints" / "step-2"
    assert (ckpt / "adapter" / "adapter_model.safetensors").is_file()
    merged = AutoModelForImageTextToText.from_pretrained(ckpt).state_dict()  # a plain loadable model
    base = _weights(tiny_settings["model"])
    assert set(merged) == set(base)
    changed = [k for k, v in merged.items() if not torch.equal(base[k], v)]
    assert changed and all(k.endswith("weight") and "norm" not in k and "embed" not in k for k in changed)


def test_lora_merged_weights_equal_peft_merge(tiny_settings: dict) -> None:
    """The checkpoint's merged weights (computed from a state dict, as under FSDP) = peft's own merge."""
    pytest.importorskip("peft")
    import copy

    from vopd_bench.train.policy import Policy, merged_state_dict

    cfg = OPDConfig(**{**tiny_settings, "lora": True, "lora_r": 4})
    policy = Policy(cfg, "cpu")
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)  # lora_B starts at 0: make the delta non-zero
    reference = copy.deepcopy(policy.model).merge_and_unload().state_dict()
    for merged in (merged_state_dict(policy.model), merged_state_dict(policy.model, policy.model.state_dict())):
        assert set(merged) == set(reference)  # live weights; a full state dict (as gathered under FSDP)
        assert max(float((merged[k] - reference[k]).abs().max()) for k in merged) < 1e-6
    unmerged = {k.removeprefix("base_model.model.").replace(".base_layer.", "."): v
                for k, v in policy.model.state_dict().items() if "lora_" not in k}
    assert sum(not torch.equal(merged[k], unmerged[k]) for k in merged) >= 10  # the deltas were added


def test_lora_frozen_teacher_is_the_base_model(tiny_settings: dict) -> None:
    """With LoRA the frozen teacher is the adapter-disabled model: no second copy of the weights."""
    pytest.importorskip("peft")
    from vopd_bench.train.policy import Policy
    from vopd_bench.train.teacher import FrozenTeacher

    cfg = OPDConfig(**tiny_settings, lora=True, lora_r=4, teacher="frozen")
    policy = Policy(cfg, "cpu")
    teacher = FrozenTeacher(policy, cfg)
    assert teacher.shadow is None
    ids = torch.tensor([[10, 20, 30, 40]])
    with torch.no_grad():
        for p in policy.trainable:
            p.add_(0.5)
        with teacher.scoring() as tp:
            t = tp.forward(input_ids=ids).logits
        s = policy.forward(input_ids=ids).logits
    from transformers import AutoModelForImageTextToText

    base = AutoModelForImageTextToText.from_pretrained(tiny_settings["model"]).eval()
    with torch.no_grad():
        b = base(input_ids=ids).logits
    torch.testing.assert_close(t, b, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(s, b)


# ----------------------------------------------------------------------------- resume / processes
def _cli(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "vopd_bench.cli", "train", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_resume_after_kill(tiny_settings: dict, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["--out", str(out), *_overrides({**tiny_settings, "steps": 3, "eval_every": 1, "holdout_tasks": []})]
    proc = _cli(args)
    deadline = time.time() + 120
    while not (out / "checkpoints" / "step-1").is_dir():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() < deadline, "no checkpoint within 120 s"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = subprocess.run([sys.executable, "-m", "vopd_bench.cli", "train", *args], capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed at step" in done.stderr
    assert [p["step"] for p in _curve(out)] == [0, 1, 2, 3]
    log = [json.loads(x)["step"] for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-1", "step-2", "step-3"]


def _torchrun(out: Path, settings: dict) -> None:
    """`vopd-bench train` in 2 CPU processes (gloo); asserts it succeeded."""
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "--master_port", str(free_port()), "-m", "vopd_bench.cli", "train",
         "--out", str(out), *_overrides(settings)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def two_process(tiny_settings: dict) -> dict:
    """2 steps with an EMA teacher + the anchor (reference model) in 2 processes, as DDP."""
    return {**tiny_settings, "steps": 2, "eval_every": 2, "prompts_per_step": 4, "threads": 1, "teacher": "ema",
            "anchor_weight": 0.5, "holdout_tasks": []}


@pytest.fixture(scope="module")
def ddp_run(two_process: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "run"
    _torchrun(out, two_process)
    return out


def test_two_processes_gloo(ddp_run: Path) -> None:
    assert [p["step"] for p in _curve(ddp_run)] == [0, 2]
    rec = json.loads((ddp_run / "train_log.jsonl").read_text().splitlines()[0])
    assert len(rec["prompt_ids"]) == 4 and len(set(rec["prompt_ids"])) == 4  # each rank its own prompts
    samples = ddp_run / "evals" / "step-2" / "samples" / "synth"
    assert sorted(p.name for p in samples.iterdir()) == ["crop.jsonl", "full.jsonl"]  # rank files merged
    assert (ddp_run / "checkpoints" / "step-2" / "model.safetensors").is_file()


def _log(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]


def _assert_same_steps(a_run: Path, b_run: Path) -> None:
    """Same prompts, rollouts, losses and entropies, step by step (the teacher and reference score alike)."""
    a_log, b_log = _log(a_run), _log(b_run)
    assert len(a_log) == len(b_log)
    for a, b in zip(a_log, b_log):
        for k in ("loss", "jsd", "anchor", "teacher_entropy", "student_entropy"):
            assert a[k] == pytest.approx(b[k], abs=2e-6), (a["step"], k)
        assert a["prompt_ids"] == b["prompt_ids"] and a["example"] == b["example"]


def _max_diff(a: Path, b: Path, name: str) -> float:
    from safetensors.torch import load_file

    x, y = load_file(str(a / name)), load_file(str(b / name))
    assert x.keys() == y.keys()
    return max(float((x[k] - y[k]).abs().max()) for k in x)


def test_fsdp_equals_ddp_and_resumes_exactly(two_process: dict, ddp_run: Path, tmp_path: Path) -> None:
    """FSDP (sharded weights, gradients, Adam and EMA state) trains the same model as DDP, writes the same
    ordinary checkpoint, and a run resumed from its step-1 checkpoint ends where the uninterrupted one does."""
    fsdp = {**two_process, "distributed": "fsdp"}
    _torchrun(tmp_path / "fsdp", fsdp)
    _assert_same_steps(ddp_run, tmp_path / "fsdp")
    ddp_ck, fsdp_ck = ddp_run / "checkpoints" / "step-2", tmp_path / "fsdp" / "checkpoints" / "step-2"
    assert _max_diff(ddp_ck, fsdp_ck, "model.safetensors") < 1e-4  # two Adam steps amplify float-order noise
    assert _max_diff(ddp_ck, fsdp_ck, "teacher.safetensors") < 1e-5
    cfg = json.loads((fsdp_ck / "config.json").read_text())
    assert cfg["architectures"] == json.loads((ddp_ck / "config.json").read_text())["architectures"]
    assert [p["step"] for p in _curve(tmp_path / "fsdp")] == [0, 2]  # scored from the saved checkpoint

    resumed = tmp_path / "resumed"
    _torchrun(resumed, {**fsdp, "steps": 1, "eval_every": 1})
    _torchrun(resumed, {**fsdp, "eval_every": 1})
    assert [p["step"] for p in _curve(resumed)] == [0, 1, 2]
    end = resumed / "checkpoints" / "step-2"
    assert _max_diff(end, fsdp_ck, "model.safetensors") < 1e-6
    assert _max_diff(end, fsdp_ck, "teacher.safetensors") < 1e-6


def test_lora_fsdp_equals_lora_ddp(two_process: dict, tmp_path: Path) -> None:
    """LoRA in 2 processes: the adapter starts identical on both ranks and FSDP trains what DDP trains."""
    lora = {**two_process, "lora": True, "lora_r": 4}
    _torchrun(tmp_path / "ddp", lora)  # DDP checks that the ranks' weights stay identical
    _torchrun(tmp_path / "fsdp", {**lora, "distributed": "fsdp"})
    _assert_same_steps(tmp_path / "ddp", tmp_path / "fsdp")
    a, b = tmp_path / "ddp" / "checkpoints" / "step-2", tmp_path / "fsdp" / "checkpoints" / "step-2"
    assert _max_diff(a, b, "adapter/adapter_model.safetensors") < 1e-4
    assert _max_diff(a, b, "model.safetensors") < 1e-4  # the merged weights
    assert _max_diff(a, b, "teacher.safetensors") < 1e-5


# ----------------------------------------------------------------------------- curve bookkeeping
def _point(step: int, crop: float, full: float = 0.4) -> dict:
    """A curve line as the trainer writes one (every view has its n)."""
    views = {"full": {"n": 10, "accuracy": full}, "crop": {"n": 10, "accuracy": crop}}
    return {"step": step, "tasks": {"synth": {"views": views, "gap": {"value": 100 * (crop - full)}},
                                    "synth_holdout": {"views": {"full": {"n": 10, "accuracy": 0.9}}}}}


def test_curve_dedupes_truncates_and_warns_on_collapse(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from vopd_bench.runtime import append_jsonl
    from vopd_bench.train.curve import append_point, collapse_warnings, truncate_after
    from vopd_bench.train.rundir import read_curve

    path = tmp_path / "curve.jsonl"
    assert append_point(path, _point(0, 0.9)) and append_point(path, _point(20, 0.88))
    assert not append_point(path, _point(20, 0.1))  # a step is never written twice
    append_jsonl(path, [_point(40, 0.5), _point(40, 0.5)])  # e.g. left by a crash after the checkpoint
    assert [p.step for p in read_curve(path)] == [0, 20, 40]
    truncate_after(path, 20)
    assert [p.step for p in read_curve(path)] == [0, 20] and len(path.read_text().splitlines()) == 2
    points = read_curve(path)
    assert collapse_warnings(points, _point(40, 0.85), threshold=10) == []
    warns = collapse_warnings(points, _point(40, 0.6), threshold=10)
    assert len(warns) == 1 and "synth/crop" in warns[0] and "30.0 points" in warns[0]
    assert collapse_warnings(points, _point(40, 0.9, full=0.0), threshold=10) == []  # full may move either way


def test_prompt_stream_is_stateless_and_split_by_rank() -> None:
    from vopd_bench.train.data import step_indices

    one = [step_indices(10, s, 4, seed=3, rank=0, world=1) for s in range(5)]
    two = [step_indices(10, s, 4, seed=3, rank=0, world=2) + step_indices(10, s, 4, seed=3, rank=1, world=2)
           for s in range(5)]
    assert one == two  # the global batch does not depend on the number of processes
    flat = [i for s in one for i in s]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))  # epochs
    assert flat[:10] != flat[10:20]  # reshuffled per epoch


def test_half_written_checkpoint_is_never_picked_up(tmp_path: Path) -> None:
    from vopd_bench.train import checkpoint

    root = tmp_path / "checkpoints"

    def write_model(folder: Path) -> None:
        (folder / "model.safetensors").write_bytes(b"x")

    checkpoint.save(root, 5, write_model, {"optimizer": {}})
    (root / ".tmp-step-10").mkdir()  # a kill during the save of step 10
    (root / ".tmp-step-10" / "model.safetensors").write_bytes(b"partial")
    (root / "step-15").mkdir()  # a folder without the commit marker is not a checkpoint either
    assert checkpoint.latest(root) == root / "step-5"
    checkpoint.clean_partial(root)
    assert not (root / ".tmp-step-10").exists()
    state, teacher = checkpoint.load_state(root / "step-5")
    assert state["step"] == 5 and "rng" in state and teacher is None
    checkpoint.save(root, 20, write_model, {"optimizer": {}})
    checkpoint.save(root, 25, write_model, {"optimizer": {}})
    checkpoint.prune(root, keep_last=2)
    assert checkpoint.steps(root) == [20, 25]
