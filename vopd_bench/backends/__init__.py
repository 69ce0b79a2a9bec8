"""Backends turn requests (chat messages with images + generation kwargs) into text.

A backend is one module `vopd_bench/backends/<name>.py` exposing `make_backend(cfg: BackendConfig)`
that returns an object implementing `Backend`."""

from __future__ import annotations

import importlib

from vopd_bench.backends.base import Backend, BackendConfig, GenerationKwargs, Request, Response
from vopd_bench.errors import UserError

__all__ = ["Backend", "BackendConfig", "GenerationKwargs", "Request", "Response", "make_backend", "BACKENDS"]
BACKENDS = ("hf", "vllm", "openai")


def make_backend(cfg: BackendConfig) -> Backend:
    """Instantiate the backend named by `cfg.backend`."""
    if cfg.backend not in BACKENDS:
        raise UserError(f"unknown backend {cfg.backend!r}; choose from {', '.join(BACKENDS)}")
    mod = importlib.import_module(f"vopd_bench.backends.{cfg.backend}")
    return mod.make_backend(cfg)
