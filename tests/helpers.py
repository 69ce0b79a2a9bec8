"""Test helpers: a small boxed dataset in the project's JSONL layout, and in-process CLI calls."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from vopd_bench.cli import main

COLOURS = {"red": (220, 30, 30), "green": (30, 160, 50), "blue": (35, 70, 230), "yellow": (235, 200, 10)}

SPEC = """name: {name}
loader: jsonl
description: test fixture
prompt:
  template: "{{question}}\\n{{options}}"
crop: {{margin: 0.5, min_side: 48, resize_to: 224}}
generation: {{max_new_tokens: 6}}
"""


def make_dataset(root: Path, n: int = 12, seed: int = 0, name: str = "fx") -> tuple[Path, Path]:
    """n items (one coloured square on a grey 224px image, box known); returns (data dir, spec file)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    rows = []
    for i in range(n):
        arr = np.full((224, 224, 3), 235, np.uint8)
        x, y, s = int(rng.integers(10, 190)), int(rng.integers(10, 190)), int(rng.integers(12, 24))
        col = names[int(rng.integers(4))]
        arr[y : y + s, x : x + s] = COLOURS[col]
        Image.fromarray(arr).save(root / "images" / f"{i}.png")
        opts = list(names)
        rng.shuffle(opts)
        rows.append({"id": f"{name}-{i}", "image": f"images/{i}.png", "question": "What colour is the object?",
                     "options": opts, "answer": "ABCD"[opts.index(col)], "boxes": [[x, y, x + s, y + s]],
                     "category": "big" if s >= 18 else "small"})
    (root / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = root / f"{name}.yaml"
    spec.write_text(SPEC.format(name=name))
    return root, spec


def run_cli(args: list[str]) -> int:
    """Run `vopd-bench ARGS` in-process; returns the exit code."""
    try:
        main(args)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def records(run: Path, task: str, view: str) -> list[dict]:
    p = run / "samples" / task / f"{view}.jsonl"
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def free_port() -> int:
    """A TCP port nothing listens on now (for torchrun's rendezvous; a fixed port collides with other runs)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
