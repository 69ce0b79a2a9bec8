"""The self-consistency filter: sample the model n times on each prompt's crop view (the teacher's view,
rendered exactly as the trainer renders it) and keep the prompts whose answers agree at least
`threshold` of the time (the paper: >= 0.75). Any registered backend runs it (`make_backend`)."""

from __future__ import annotations

import logging
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from vopd_bench.backends.base import BackendConfig, GenerationKwargs, Request
from vopd_bench.errors import UserError
from vopd_bench.items import Item
from vopd_bench.scoring import extract_choice, final_answer, normalize_text

log = logging.getLogger(__name__)


@dataclass
class ConsistencyConfig:
    """Settings of the filter (recorded in every kept and rejected prompt's provenance)."""

    model: str = field(default="vopd-tiny", metadata={"help": "model sampled on the crop view"})
    backend: str = field(default="hf", metadata={"help": "registered backend that runs it"})
    n: int = field(default=4, metadata={"help": "samples per prompt"})
    threshold: float = field(default=0.75, metadata={"help": "keep when the most common answer has this share"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature"})
    max_new_tokens: int = field(default=16, metadata={"help": "answer length"})
    seed: int = field(default=0, metadata={"help": "sampling seed"})
    dtype: str = field(default="auto", metadata={"help": "model dtype"})
    max_pixels: int | None = field(default=None, metadata={"help": "image budget"})
    batch_size: int = field(default=16, metadata={"help": "requests per backend call"})

    def __post_init__(self) -> None:
        if self.n < 2:
            raise UserError(f"--consistency-n must be >= 2 (agreement needs several samples), got {self.n}")
        if not 0.0 < self.threshold <= 1.0:
            raise UserError(f"--consistency-threshold must be in (0, 1], got {self.threshold}")
        if self.temperature <= 0:
            raise UserError(f"--consistency-temperature must be > 0 (the samples must differ), got {self.temperature}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Agreement:
    """The answers of one prompt's samples: the most common (normalised) answer and its share."""

    share: float
    majority: str | None
    answers: list[str | None]


def agreement(responses: list[str], options: list[str] | None) -> Agreement:
    """Share of the most common answer among `responses`: option letters for multiple choice, normalised
    text otherwise; an unparseable response counts as a disagreeing one."""
    parsed = [extract_choice(r, options) if options else (normalize_text(final_answer(r)) or None) for r in responses]
    counts = Counter(p for p in parsed if p is not None)
    if not counts:
        return Agreement(0.0, None, parsed)
    majority, k = counts.most_common(1)[0]
    return Agreement(round(k / len(responses), 4), majority, parsed)


class ConsistencyFilter:
    """Samples a backend on crop views; `score(prompts)` -> one `Agreement` per prompt."""

    def __init__(self, cfg: ConsistencyConfig) -> None:
        from vopd_bench.backends import make_backend, preflight

        self.cfg = cfg
        bcfg = BackendConfig(backend=cfg.backend, model=cfg.model, dtype=cfg.dtype, max_pixels=cfg.max_pixels,
                             batch_size=cfg.batch_size)
        preflight(bcfg)  # a missing model is a one-line error before any image is read
        self.backend = make_backend(bcfg)
        self.gen = GenerationKwargs(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seed=cfg.seed)

    def score(self, items: list[Item]) -> list[Agreement]:
        """Render each item's crop view as the trainer does, sample it n times, and measure agreement."""
        from vopd_bench.train.data import render_prompt, train_spec_for_file

        spec = train_spec_for_file("prompts")
        requests: list[Request] = []
        for it in items:
            p = render_prompt(it, spec)
            requests.extend(Request(key=f"{it.id}#{k}", images=[p.crop], prompt=p.text, system=p.system)
                            for k in range(self.cfg.n))
        texts: list[str] = []
        for i in range(0, len(requests), self.cfg.batch_size):
            batch = requests[i : i + self.cfg.batch_size]
            # a seed per batch from its first prompt: images sample independently, reproducibly
            seed = (self.cfg.seed * 1_000_003 + zlib.crc32(batch[0].key.encode())) % 2**31
            gen = GenerationKwargs(**{**self.gen.to_dict(), "seed": seed})
            for r in self.backend.generate(batch, gen):
                if r.error:
                    log.warning("consistency sample failed: %s", r.error)
                texts.append(r.text if not r.error else "")
        n = self.cfg.n
        return [agreement(texts[j * n : (j + 1) * n], it.options) for j, it in enumerate(items)]
