"""Resolving a model name to a loadable location, and fingerprinting what was loaded."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from vopd_bench.errors import UserError

REFERENCE_NAME = "vopd-tiny"


def resolve_model(name: str) -> str:
    """`vopd-tiny` → the shipped reference checkpoint; an existing folder → itself; else a Hub id."""
    if name == REFERENCE_NAME:
        from vopd_bench.reference import reference_model_path

        return str(reference_model_path())
    p = Path(name).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise UserError(f"model folder {name} has no config.json")
        return str(p.resolve())
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith("/")
    if looks_like_path or "/" not in name:
        raise UserError(f"model path not found: {name} (use {REFERENCE_NAME}, a local folder or a Hub id org/name)")
    return name


def fingerprint(path: str) -> str | None:
    """Cheap content fingerprint of a local checkpoint: config + each weight file's size, head and tail."""
    p = Path(path)
    if not p.is_dir():
        return None
    h = hashlib.sha256()
    cfg = p / "config.json"
    if cfg.is_file():
        h.update(json.dumps(json.loads(cfg.read_text()), sort_keys=True).encode())
    for f in sorted(p.glob("*.safetensors")) + sorted(p.glob("*.bin")):
        size = f.stat().st_size
        h.update(f"{f.name}:{size}".encode())
        with f.open("rb") as fh:
            h.update(fh.read(1 << 20))
            if size > 1 << 20:
                fh.seek(-(1 << 20), 2)
                h.update(fh.read())
    return h.hexdigest()[:16]
