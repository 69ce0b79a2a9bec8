"""A backend is one file against one interface: this module is one (a toy that always gives the same
answer), registered here, and the CLI runs `eval` and `parity` on it with its own option. Also: the
built-in backends' registrations and the recorded form of their settings."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import click
import pytest
from helpers import make_dataset, run_cli

from vopd_bench import backends
from vopd_bench.backends import (
    BackendConfig,
    BackendSpec,
    GenerationKwargs,
    Prepared,
    PreparingBackend,
    Request,
    Response,
)
from vopd_bench.backends.openai import OpenAIOptions
from vopd_bench.errors import UserError

CALLS: list[int] = []  # batch sizes the toy was asked


# ---------------------------------------------------------------- the toy backend: this much is a backend
@dataclass(frozen=True)
class ToyOptions:
    answer: str = "A"


TOY_CLI = (click.Option(["--toy-answer"], default="A", show_default=True, help="toy backend: the letter it answers."),)


def toy_from_cli(kw: dict[str, Any]) -> tuple[ToyOptions, dict[str, Any]]:
    return ToyOptions(answer=kw["toy_answer"]), {}


class ToyBackend:
    name = "toy"

    def __init__(self, cfg: BackendConfig) -> None:
        self.cfg, self.opts = cfg, cfg.options or ToyOptions()

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.cfg.model, "model_path": None, "dtype": None,
                "image_budget": None, "answer": self.opts.answer}

    def generate(self, requests: list[Request], gen: GenerationKwargs) -> list[Response]:
        return self.generate_prepared(self.prepare(requests), gen)

    def prepare(self, requests: list[Request]) -> Prepared:
        return Prepared(requests=requests, inputs=[f"Answer: {self.opts.answer}"] * len(requests))

    def generate_prepared(self, prepared: Prepared, gen: GenerationKwargs) -> list[Response]:
        CALLS.append(len(prepared.requests))
        return [Response(text=t) for t in prepared.inputs]


def make_backend(cfg: BackendConfig) -> ToyBackend:
    return ToyBackend(cfg)


def preflight(cfg: BackendConfig) -> None:
    if cfg.model == "broken":
        raise UserError("toy: model 'broken' is broken")


TOY = BackendSpec("toy", __name__, batch_size=3, cli_options=TOY_CLI, from_cli=toy_from_cli)


# ---------------------------------------------------------------- tests
@pytest.fixture
def toy():
    backends.register(TOY)
    CALLS.clear()
    yield TOY
    backends.unregister("toy")


@pytest.fixture
def fx(tmp_path):
    return make_dataset(tmp_path / "fx", n=7)


def share(data, letter: str) -> float:
    rows = [json.loads(x) for x in (data / "items.jsonl").read_text().splitlines()]
    return sum(r["answer"] == letter for r in rows) / len(rows)


def test_a_registered_backend_runs_eval_through_the_cli(toy, fx, tmp_path, capsys):
    data, spec = fx
    out = tmp_path / "run"
    assert run_cli(["eval", "--backend", "toy", "--toy-answer", "B", "--task", str(spec), "--data", str(data),
                    "--out", str(out), "-q"]) == 0
    assert "backend: toy (named)" in capsys.readouterr().out
    assert CALLS == [3, 3, 1, 3, 3, 1]  # its default batch size, over both views
    res = json.loads((out / "results.json").read_text())
    assert res["tasks"]["fx"]["views"]["full"]["accuracy"] == pytest.approx(share(data, "B"))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["backend"]["answer"] == "B" and cfg["backend_config"]["answer"] == "B"  # its options, recorded
    assert cfg["backend_config"]["batch_size"] == 3 and "base_url" not in cfg["backend_config"]


def test_a_registered_backend_in_parity_and_help(toy, fx, tmp_path, capsys):
    data, spec = fx
    out = tmp_path / "parity"
    assert run_cli(["parity", "--a", "toy", "--b", "toy", "--task", str(spec), "--data", str(data), "--views", "full",
                    "--batch-size", "4", "--out", str(out), "-q"]) == 0
    assert CALLS == [4, 3, 4, 3]
    report = json.loads((out / "parity.json").read_text())
    assert report["tasks"]["fx"]["views"]["full"]["answer_agreement"] == 1.0
    for cmd in ("eval", "parity"):
        capsys.readouterr()
        assert run_cli([cmd, "--help"]) == 0
        text = capsys.readouterr().out
        assert "--toy-answer" in text and "toy backend: the letter it answers." in text and "toy" in text
        assert "--base-url" in text and "--tp" in text


def test_preflight_and_prepare_are_declared(toy):
    with pytest.raises(UserError, match="broken"):
        backends.preflight(BackendConfig(backend="toy", model="broken"))
    assert isinstance(backends.make_backend(BackendConfig(backend="toy")), PreparingBackend)


def test_unregistered_backend_is_refused(fx, tmp_path, capsys):
    data, spec = fx
    assert run_cli(["eval", "--backend", "toy", "--task", str(spec), "--data", str(data)]) == 2
    assert "'toy' is not one of 'auto', 'hf', 'vllm', 'openai'" in capsys.readouterr().err
    with pytest.raises(UserError, match="unknown backend 'toy'; choose from hf, vllm, openai"):
        backends.make_backend(BackendConfig(backend="toy"))


def test_option_names_belong_to_one_backend(toy):
    with pytest.raises(ValueError, match="already belong to 'toy'"):
        backends.register(BackendSpec("toy2", __name__, batch_size=1, cli_options=TOY_CLI))
    assert "toy2" not in backends.backend_names()


def test_builtin_registrations():
    assert backends.backend_names()[:3] == ("hf", "vllm", "openai")
    spec = backends.backend_spec
    assert spec("hf").default_batch_size(None) == 16 and spec("vllm").default_batch_size(None) == 256
    assert spec("openai").default_batch_size(OpenAIOptions(concurrency=3)) == 12
    kw = {"tensor_parallel": 2, "vllm_args": ("max_model_len=8192", "enforce_eager=true")}
    assert spec("vllm").configure(kw) == (None, {"max_model_len": 8192, "enforce_eager": True, "tensor_parallel_size": 2})
    kw = {"base_url": "http://x/v1", "api_key_env": "K", "concurrency": 2, "timeout": 5.0, "max_retries": 1,
          "no_preflight": True}
    assert spec("openai").configure(kw) == (OpenAIOptions("http://x/v1", "K", 2, 5.0, 1), {"preflight": False})
    assert spec("hf").configure({}) == (None, {})


def test_openai_settings_keep_their_recorded_form():
    """config.json's backend_config of an openai run holds the keys it held when these settings were fields
    of BackendConfig (and the invocation key hashes the same settings), so earlier runs still resume."""
    cfg = BackendConfig(backend="openai", model="m", batch_size=32, options=OpenAIOptions(base_url="http://x/v1"))
    assert list(cfg.to_dict()) == ["backend", "model", "revision", "dtype", "device", "max_pixels", "min_pixels",
                                   "batch_size", "trust_remote_code", "chat_template_kwargs", "base_url", "api_key_env",
                                   "concurrency", "timeout", "max_retries", "extra", "chosen_by"]
    # speed-only settings, and the two added later at their defaults (so earlier runs' invocation keys hold)
    assert set(cfg.to_dict()) - set(cfg.settings()) == {"batch_size", "concurrency", "timeout", "max_retries",
                                                        "trust_remote_code", "chat_template_kwargs"}
    kw = BackendConfig(backend="openai", model="m", chat_template_kwargs={"enable_thinking": False})
    assert kw.settings()["chat_template_kwargs"] == {"enable_thinking": False}
    with pytest.raises(TypeError):
        BackendConfig(options={"base_url": "http://x/v1"})
