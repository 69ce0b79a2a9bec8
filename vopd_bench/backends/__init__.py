"""Backends turn requests (chat messages with images + generation kwargs) into text.

A backend is one module exposing `make_backend(cfg: BackendConfig) -> Backend` and `preflight(cfg)` (the
cheap checks alone), registered here with a `BackendSpec`: its name, default batch size and its own
command-line options (added to `eval` and `parity`, which take their `--backend` choices from the
registry). It may prepare batches ahead of generation by implementing `PreparingBackend`. `auto` (the
CLI's default) picks vLLM where it is installed and a GPU is present, HF transformers otherwise
(`resolve_backend`).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from vopd_bench.backends import openai as _openai
from vopd_bench.backends import vllm as _vllm
from vopd_bench.backends.base import (
    Backend,
    BackendConfig,
    GenerationKwargs,
    Prepared,
    PreparingBackend,
    Request,
    Response,
)
from vopd_bench.errors import UserError
from vopd_bench.runtime import cuda_available  # the device query `auto` asks (tests replace it here)

__all__ = ["Backend", "BackendConfig", "BackendSpec", "GenerationKwargs", "Prepared", "PreparingBackend",
           "Request", "Response", "backend_names", "backend_spec", "cli_options", "make_backend", "preflight", "register",
           "resolve_backend", "unregister"]


@dataclass(frozen=True)
class BackendSpec:
    """A registered backend. `module` is imported on first use only (hf and vllm engines import torch);
    `cli_options` are click options whose values `from_cli` turns into the backend's `(options, extra)`."""

    name: str
    module: str  # provides make_backend(cfg) and preflight(cfg)
    batch_size: int | Callable[[Any], int]  # default requests per call; a callable gets the backend's options
    cli_options: tuple[Any, ...] = ()  # click.Option objects
    from_cli: Callable[[Mapping[str, Any]], tuple[Any, dict[str, Any]]] | None = None

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)

    def configure(self, values: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
        """(options, extra) from the parsed command line (None and {} for a backend without options)."""
        return self.from_cli(values) if self.from_cli else (None, {})

    def default_batch_size(self, options: Any) -> int:
        return self.batch_size(options) if callable(self.batch_size) else self.batch_size


_REGISTRY: dict[str, BackendSpec] = {}


def register(spec: BackendSpec) -> BackendSpec:
    """Add (or replace, by name) a backend; its command-line options must not clash with another's."""
    mine = {o.name for o in spec.cli_options}
    for other in _REGISTRY.values():
        if other.name != spec.name and (clash := mine & {o.name for o in other.cli_options}):
            raise ValueError(f"backend {spec.name!r}: option(s) {sorted(clash)} already belong to {other.name!r}")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def backend_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def backend_spec(name: str) -> BackendSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(f"unknown backend {name!r}; choose from {', '.join(_REGISTRY)}") from None


def cli_options() -> list[Any]:
    """Every registered backend's command-line options, in registration order."""
    return [o for spec in _REGISTRY.values() for o in spec.cli_options]


register(BackendSpec("hf", "vopd_bench.backends.hf", batch_size=16))
register(BackendSpec("vllm", "vopd_bench.backends.vllm", batch_size=256, cli_options=_vllm.CLI_OPTIONS,
                     from_cli=_vllm.from_cli))
register(BackendSpec("openai", "vopd_bench.backends.openai", batch_size=_openai.default_batch_size,
                     cli_options=_openai.CLI_OPTIONS, from_cli=_openai.from_cli))


def resolve_backend(name: str) -> tuple[str, str]:
    """(backend, why): `auto` → vLLM where it is installed and a GPU is present, else HF; a named backend
    is taken as given."""
    if name != "auto":
        if name not in _REGISTRY:
            raise UserError(f"unknown backend {name!r}; choose from auto, {', '.join(_REGISTRY)}")
        return name, "named"
    if importlib.util.find_spec("vllm") is None:
        return "hf", "auto: vLLM is not installed"
    if not cuda_available():
        return "hf", "auto: no CUDA device"
    return "vllm", "auto: vLLM is installed and a CUDA device is present"


def preflight(cfg: BackendConfig) -> None:
    """The backend's cheap checks alone (model path, config, processor; the server's model list), without
    loading weights or starting an engine: a one-line `UserError` naming what is wrong."""
    backend_spec(cfg.backend).load().preflight(cfg)


def make_backend(cfg: BackendConfig) -> Backend:
    """Instantiate the backend named by `cfg.backend`."""
    return backend_spec(cfg.backend).load().make_backend(cfg)
