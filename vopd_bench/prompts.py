"""Prompt text for an item: the question plus lettered options, from a task's template."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from vopd_bench.items import LETTERS, Item

DEFAULT_MC_TEMPLATE = "{question}\n{options}\nAnswer with the option's letter from the given choices directly."
DEFAULT_OPEN_TEMPLATE = "{question}\nAnswer the question using a single word or phrase."


@dataclass(frozen=True)
class PromptTemplate:
    """`template` is a str.format pattern with `{question}` and (for multiple choice) `{options}`;
    `option_format` renders one option from `{letter}` and `{text}`; options are joined by newlines."""

    template: str = DEFAULT_MC_TEMPLATE
    option_format: str = "{letter}. {text}"
    system: str | None = None

    def render(self, item: Item) -> str:
        opts = ""
        if item.options:
            opts = "\n".join(
                self.option_format.format(letter=LETTERS[i], text=t) for i, t in enumerate(item.options)
            )
        return self.template.format(question=item.question.strip(), options=opts).strip()

    def hash(self) -> str:
        """Short stable hash recorded with every sample (a changed template changes numbers)."""
        raw = f"{self.system}\x00{self.template}\x00{self.option_format}".encode()
        return hashlib.sha256(raw).hexdigest()[:12]
