"""Scoring protocols: how a published harness asks and scores a benchmark, as one small YAML preset each
(`vopd_bench/specs/protocols/<name>.yaml`) plus the grader code it names (`vopd_bench/grading/`).

A preset says: the prompt per task (template, option format), the system prompt, decoding overrides, the
extractor and aggregation (grader modules), and the judge policy (`never`; `undecided`: where its rules
cannot decide, as the harness's own code calls a judge; `always`). `load(name)` returns a `Protocol`;
`Protocol.apply(spec)` turns a task spec into the one that protocol asks with; `grade_all` scores one
response under every protocol (the sample record keeps each verdict); `apply_judge` is the hook an LLM judge
plugs into.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from vopd_bench.errors import UserError
from vopd_bench.grading import ItemFacts, Verdict, benchmark_kind, grader
from vopd_bench.prompts import PromptTemplate
from vopd_bench.tasks import TaskSpec

PRESET_DIR = Path(__file__).parent / "specs" / "protocols"
DEFAULT = "vopd-bench"
JUDGE_POLICIES = ("never", "undecided", "always")


@dataclass
class Protocol:
    """One scoring protocol (see the module docstring); `tasks` maps a task name to its `prompt` and
    `generation` overrides, `defaults` applies to multiple-choice tasks not listed."""

    name: str
    extractor: str
    aggregation: str
    description: str = ""
    sources: list[str] = field(default_factory=list)
    judge: str = "never"
    system_prompt: str | None = None  # used where `sets_system_prompt` (the YAML has the key): None = no system prompt
    sets_system_prompt: bool = False  # False: each task keeps its own system prompt
    generation: dict[str, Any] = field(default_factory=dict)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @classmethod
    def from_yaml(cls, path: Path) -> Protocol:
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise UserError(f"{path}: not valid YAML ({e})") from None
        if not isinstance(raw, dict):
            raise UserError(f"{path}: a protocol preset must be a mapping")
        known = {f.name for f in fields(cls)} - {"path", "sets_system_prompt"}
        unknown = set(raw) - known
        if unknown:
            raise UserError(f"{path}: unknown field(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        for req in ("name", "extractor", "aggregation"):
            if req not in raw:
                raise UserError(f"{path}: missing field '{req}'")
        p = cls(**raw, path=path, sets_system_prompt="system_prompt" in raw)
        if p.judge not in JUDGE_POLICIES:
            raise UserError(f"{path}: judge must be one of {', '.join(JUDGE_POLICIES)}, got {p.judge!r}")
        grader(p.extractor), grader(p.aggregation)  # noqa: B018 - a bad name is a UserError now, not mid-run
        for task, o in {**p.tasks, "defaults": p.defaults}.items():
            if not isinstance(o, dict) or set(o) - {"prompt", "generation"}:
                raise UserError(f"{path}: tasks.{task} may set only 'prompt' and 'generation'")
            try:
                PromptTemplate(**(o.get("prompt") or {}))
            except TypeError as e:
                raise UserError(f"{path}: tasks.{task}.prompt: {e}") from None
        return p

    def apply(self, spec: TaskSpec, system_prompt: str | None = None) -> TaskSpec:
        """The task as this protocol asks it (a copy): its prompt, system prompt and decoding; a
        `system_prompt` given here (`--system-prompt`) overrides both the task's and the protocol's."""
        spec = copy.deepcopy(spec)
        o = self.tasks.get(spec.name)
        if o is None and spec.scorer == "choice" and spec.options.get("protocol_defaults", True):
            o = self.defaults
        o = o or {}
        prompt = spec.prompt
        if o.get("prompt"):
            prompt = replace(PromptTemplate(), **o["prompt"])
            prompt = replace(prompt, system=spec.prompt.system)
        if self.sets_system_prompt:
            prompt = replace(prompt, system=self.system_prompt)
        if system_prompt is not None:
            prompt = replace(prompt, system=system_prompt)
        spec.prompt = prompt
        spec.generation = {**spec.generation, **self.generation, **(o.get("generation") or {})}
        return spec

    def record(self) -> dict[str, Any]:
        """What config.json records of the protocol."""
        return {"name": self.name, "extractor": self.extractor, "aggregation": self.aggregation,
                "judge": self.judge, "spec_file": str(self.path) if self.path else None}

    def check(self) -> None:
        """Raise a `UserError` now when a package its grader needs is missing (not after generating)."""
        for name in {self.extractor, self.aggregation}:
            check = getattr(grader(name), "check", None)
            if check is not None:
                check()

    def grade(self, task: str, response: str, item: ItemFacts) -> Verdict:
        return grader(self.extractor).grade(benchmark_kind(task), response or "", item)

    def aggregate(self, task: str, rows: list[dict[str, Any]]) -> dict[str, float]:
        return grader(self.aggregation).aggregate(benchmark_kind(task), rows)


@functools.lru_cache(maxsize=1)
def _shipped() -> dict[str, Protocol]:
    out = {}
    for p in sorted(PRESET_DIR.glob("*.yaml")):
        proto = Protocol.from_yaml(p)
        out[proto.name] = proto
    return out


def names() -> list[str]:
    """The shipped protocols, the default first."""
    return sorted(_shipped(), key=lambda n: (n != DEFAULT, n))


def load(name: str | None) -> Protocol:
    """A protocol by name (None: the default), or a path to a preset YAML of one's own. An unknown name
    is a `UserError` listing the known ones."""
    if name is None:
        name = DEFAULT
    if name.endswith((".yaml", ".yml")):
        p = Path(name)
        if not p.is_file():
            raise UserError(f"--protocol: preset file not found: {name}")
        return Protocol.from_yaml(p)
    shipped = _shipped()
    if name not in shipped:
        raise UserError(f"unknown protocol {name!r}; known protocols: {', '.join(names())} (or a preset .yaml file)")
    return copy.deepcopy(shipped[name])


def grade_all(task: str, response: str, item: ItemFacts, run: Protocol) -> dict[str, Verdict]:
    """The verdict of every shipped protocol (and `run`'s) on one response; `run` first."""
    out = {run.name: run.grade(task, response, item)}
    for name, proto in _shipped().items():
        if name not in out:
            try:
                out[name] = proto.grade(task, response, item)
            except UserError:  # a grader whose package is missing (mathruler): that verdict is left out
                continue
    return out


# --- the judge hook -------------------------------------------------------------------------------------
JudgeFn = Callable[[str], str]
"""judge(prompt) -> the judge model's raw reply; raises on failure (the record then carries a retryable
error, never a wrong answer)."""


def judge_decision(protocol: Protocol, task: str, reply: str, item: ItemFacts) -> tuple[str | None, bool | None]:
    """(parsed, correct) from a judge's reply under `protocol`'s rule: Vision-OPD's and the default's
    "yes" (cal_acc.py is_correct); lmms-eval HR-Bench's can_infer on the reply, compared with the gold
    letter (a reply it cannot read is wrong there)."""
    kind = benchmark_kind(task)
    if protocol.extractor == "lmms_eval" and kind == "hrbench":
        from vopd_bench.grading.lmms_eval import hr_can_infer
        from vopd_bench.items import LETTERS

        ret = hr_can_infer(reply, {LETTERS[i]: t for i, t in enumerate(item.options or ())})
        return (str(ret) if ret else None), bool(ret) and str(ret).lower() == item.answer.strip().lower()
    from vopd_bench.grading.vision_opd import judge_says_yes

    return reply.strip(), judge_says_yes(reply)


def needs_judge(protocol: Protocol, verdict: Verdict) -> bool:
    """Whether `protocol` would ask its judge about this verdict."""
    if protocol.judge == "always":
        return True
    return protocol.judge == "undecided" and verdict.correct is None
