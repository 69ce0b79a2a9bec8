"""Task specs (one YAML per task in `vopd_bench/specs/tasks/`, linked as `tasks/` at the repo root)
and the loader registry: a loader is one module `vopd_bench/loaders/<name>.py` with a
`load(spec, data) -> list[Item]` function."""

from __future__ import annotations

import copy
import functools
import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vopd_bench.errors import UserError
from vopd_bench.items import Item
from vopd_bench.prompts import PromptTemplate
from vopd_bench.views import CropParams

log = logging.getLogger(__name__)
SPEC_DIR = Path(__file__).parent / "specs" / "tasks"
SCORERS = ("choice", "exact", "yesno")


@dataclass
class TaskSpec:
    """A benchmark as data: where its items come from, how they are asked and scored."""

    name: str
    loader: str
    description: str = ""
    hub_id: str | None = None
    source: str = ""
    options: dict[str, Any] = field(default_factory=dict)  # loader-specific settings
    prompt: PromptTemplate = field(default_factory=PromptTemplate)
    scorer: str = "choice"
    views: list[str] = field(default_factory=lambda: ["full", "crop"])
    box_source: str = "none"  # e.g. "benchmark", "shipped crop image", "none"
    crop: CropParams = field(default_factory=CropParams)
    generation: dict[str, Any] = field(default_factory=lambda: {"max_new_tokens": 32})
    size: int | None = None
    path: Path | None = None

    @classmethod
    def from_yaml(cls, path: Path) -> TaskSpec:
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise UserError(f"{path}: not valid YAML ({e})") from None
        if not isinstance(raw, dict):
            raise UserError(f"{path}: a task spec must be a mapping")
        known = set(cls.__dataclass_fields__) - {"path"}
        unknown = set(raw) - known
        if unknown:
            raise UserError(f"{path}: unknown field(s) {', '.join(sorted(unknown))}")
        for req in ("name", "loader"):
            if req not in raw:
                raise UserError(f"{path}: missing field '{req}'")
        try:
            raw["prompt"] = PromptTemplate(**(raw.get("prompt") or {}))
            raw["crop"] = CropParams(**(raw.get("crop") or {}))
        except (TypeError, ValueError) as e:
            raise UserError(f"{path}: {e}") from None
        spec = cls(**raw, path=path)
        if spec.scorer not in SCORERS:
            raise UserError(f"{path}: scorer must be one of {', '.join(SCORERS)}, got {spec.scorer!r}")
        return spec

    def load_items(self, data: str | Path | None = None) -> list[Item]:
        """Items of this task from `data` (the benchmark's published files on disk) or the default source."""
        try:
            mod = importlib.import_module(f"vopd_bench.loaders.{self.loader}")
        except ModuleNotFoundError as e:
            raise UserError(f"task {self.name}: no loader named {self.loader!r} ({e})") from None
        items = mod.load(self, Path(data) if data is not None else None)
        if not items:
            raise UserError(f"task {self.name}: no items loaded from {data or self.hub_id or 'default source'}")
        return items


@functools.lru_cache(maxsize=1)
def _shipped_specs() -> dict[str, TaskSpec]:
    specs = {}
    for p in sorted(SPEC_DIR.glob("*.yaml")):
        s = TaskSpec.from_yaml(p)
        specs[s.name] = s
    return specs


def all_specs() -> dict[str, TaskSpec]:
    """Every task spec shipped with the package, by name (fresh copies: callers may modify them)."""
    return copy.deepcopy(_shipped_specs())


def get_task(name: str) -> TaskSpec:
    """A task by name, or a path to a user's own YAML spec."""
    if name.endswith((".yaml", ".yml")):
        p = Path(name)
        if not p.is_file():
            raise UserError(f"task spec file not found: {name}")
        return TaskSpec.from_yaml(p)
    specs = _shipped_specs()
    if name not in specs:
        raise UserError(f"unknown task {name!r}; known tasks: {', '.join(sorted(specs))} (see `vopd-bench tasks`)")
    return copy.deepcopy(specs[name])
