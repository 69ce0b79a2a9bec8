"""The synthetic fine-detail tasks: `vopd-bench synth` output, generated on first use when no --data."""

from __future__ import annotations

from pathlib import Path

from vopd_bench.loaders.jsonl import read_items, resolve


def load(spec, data: Path | None):
    if data is None:
        from vopd_bench.synth import ensure_dataset

        data = ensure_dataset(**spec.options)
    return read_items(resolve(data), spec.name)
