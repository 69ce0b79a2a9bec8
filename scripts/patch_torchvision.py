"""Make PyPI's CUDA-built torchvision importable beside the CPU torch wheel.

Environment set-up only (never imported by the package). On this machine kind the only
torchvision reachable is a CUDA build whose C++ extension cannot load next to torch 2.13.0+cpu;
importing it raises ``operator torchvision::nms does not exist``. Transformers' Qwen-VL processors
and vLLM import torchvision, but use only its pure-torch transforms, so we skip the C++ op
registrations. Idempotent; a no-op when torchvision loads cleanly.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

OLD = """from torchvision import (
    _autograd_registrations,
    _meta_registrations,
    datasets,"""
NEW = """try:
    from torchvision import _autograd_registrations, _meta_registrations  # noqa: F401
except RuntimeError:  # vopd-bench setup: C++ ops unavailable (CUDA build beside CPU torch)
    pass
from torchvision import (
    datasets,"""


def main() -> int:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        print("torchvision not installed; nothing to patch")
        return 0
    path = pathlib.Path(spec.origin)
    text = path.read_text()
    if NEW in text:
        print(f"already patched: {path}")
    elif OLD in text:
        path.write_text(text.replace(OLD, NEW))
        print(f"patched: {path}")
    else:
        print(f"unknown torchvision layout, not patched: {path}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
