"""Backends turn requests (chat messages with images + generation kwargs) into text.

A backend is one module `vopd_bench/backends/<name>.py` exposing `make_backend(cfg: BackendConfig)`
that returns an object implementing `Backend`. `auto` (the CLI's default) picks vLLM where it is
installed and a GPU is present, HF transformers otherwise (`resolve_backend`)."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from vopd_bench.backends.base import Backend, BackendConfig, GenerationKwargs, Request, Response
from vopd_bench.errors import UserError

__all__ = ["Backend", "BackendConfig", "GenerationKwargs", "Request", "Response", "make_backend", "resolve_backend",
           "BACKENDS"]
BACKENDS = ("hf", "vllm", "openai")


def cuda_available() -> bool:
    """The device query: whether torch sees a CUDA (or ROCm) device. Without a GPU driver on the machine it
    answers False without importing torch (keeps a finished re-run fast)."""
    if not any(Path(p).exists() for p in ("/proc/driver/nvidia/gpus", "/dev/nvidia0", "/dev/kfd")):
        return False
    import torch

    return torch.cuda.is_available()


def resolve_backend(name: str) -> tuple[str, str]:
    """(backend, why): `auto` → vLLM where it is installed and a GPU is present, else HF; a named backend
    is taken as given."""
    if name != "auto":
        if name not in BACKENDS:
            raise UserError(f"unknown backend {name!r}; choose from auto, {', '.join(BACKENDS)}")
        return name, "named"
    if importlib.util.find_spec("vllm") is None:
        return "hf", "auto: vLLM is not installed"
    if not cuda_available():
        return "hf", "auto: no CUDA device"
    return "vllm", "auto: vLLM is installed and a CUDA device is present"


def preflight(cfg: BackendConfig) -> None:
    """The backend's cheap checks alone (model path, config, processor; the server's model list), without
    loading weights or starting an engine: a one-line `UserError` naming what is wrong."""
    importlib.import_module(f"vopd_bench.backends.{cfg.backend}").preflight(cfg)


def make_backend(cfg: BackendConfig) -> Backend:
    """Instantiate the backend named by `cfg.backend`."""
    if cfg.backend not in BACKENDS:
        raise UserError(f"unknown backend {cfg.backend!r}; choose from {', '.join(BACKENDS)}")
    mod = importlib.import_module(f"vopd_bench.backends.{cfg.backend}")
    return mod.make_backend(cfg)
