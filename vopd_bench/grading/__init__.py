"""Graders: how a protocol turns one response into a verdict, and its results into a task's metrics.

A grader is a module of this package named by a protocol preset (`specs/protocols/*.yaml`: `extractor`,
`aggregation`). Each exposes `grade(kind, response, item) -> Verdict` and `aggregate(kind, rows) -> dict`,
where `kind` is the benchmark family of a task (`benchmark_kind`) and `item` an `ItemFacts`. Graders are
rule-based and import nothing from the harnesses they transcribe; a verdict the rules cannot decide is
`correct=None` with the judge prompt the protocol would send (`judge_prompt`)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Protocol

from vopd_bench.errors import UserError

# our task name -> the benchmark family graders know (tasks not listed: the protocol's fallback rules)
KINDS = {
    "vstar": "vstar", "hrbench4k": "hrbench", "hrbench8k": "hrbench", "mme_realworld": "mme_realworld",
    "mme_realworld_lite": "mme_realworld", "mme_realworld_cn": "mme_realworld_cn", "mmvp": "mmvp",
    "cvbench": "cvbench", "mmstar": "mmstar", "pope": "pope", "visualprobe": "visualprobe",
}
GRADERS = ("vopd_bench", "lmms_eval", "vision_opd", "vlmevalkit")


def benchmark_kind(task: str) -> str | None:
    """The benchmark family of one of our tasks (None: no harness-specific rule for it)."""
    return KINDS.get(task)


@dataclass(frozen=True)
class ItemFacts:
    """What a grader may read of an item: the gold answer (letter, yes/no or text), option texts, the
    prompt text sent, and the fields aggregations group by (category, group, meta)."""

    id: str
    answer: str
    options: tuple[str, ...] | None = None
    question: str = ""
    prompt: str = ""
    category: str | None = None
    group: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    scorer: str = "choice"


@dataclass
class Verdict:
    """One response graded: what was read (`parsed`), whether it is right (None: the rules cannot decide,
    a judge would be asked with `judge_prompt`), and which rule decided (`source`)."""

    parsed: str | None
    correct: bool | None
    source: str = "rule"
    judge_prompt: str | None = None
    facets: dict[str, Any] = field(default_factory=dict)  # what the aggregation reads (e.g. pope prediction)


class Grader(Protocol):
    def grade(self, kind: str | None, response: str, item: ItemFacts) -> Verdict: ...

    def aggregate(self, kind: str | None, rows: list[dict[str, Any]]) -> dict[str, float]: ...


def grader(name: str) -> Any:
    """The grader module `name` (one of GRADERS)."""
    if name not in GRADERS:
        raise UserError(f"unknown extractor {name!r}; known: {', '.join(GRADERS)}")
    return importlib.import_module(f"vopd_bench.grading.{name}")
