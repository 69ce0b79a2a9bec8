"""Prompt text for an item: the question plus lettered options, from a task's template."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from vopd_bench.items import LETTERS, Item

DEFAULT_MC_TEMPLATE = "{question}\n{options}\nAnswer with the option's letter from the given choices directly."
DEFAULT_OPEN_TEMPLATE = "{question}\nAnswer the question using a single word or phrase."


@dataclass(frozen=True)
class PromptTemplate:
    """`template` is a str.format pattern with `{question}`, (for multiple choice) `{options}` and
    optionally `{letters}` ("A, B, C"); `option_format` renders one option from `{letter}` (or `{letter_lower}`) and `{text}`;
    options are joined by `option_separator` (a newline unless a protocol says otherwise)."""

    template: str = DEFAULT_MC_TEMPLATE
    option_format: str = "{letter}. {text}"
    system: str | None = None
    option_separator: str = "\n"

    def render(self, item: Item) -> str:
        opts, letters = "", ""
        if item.options:
            opts = self.option_separator.join(
                self.option_format.format(letter=LETTERS[i], letter_lower=LETTERS[i].lower(), text=t) for i, t in enumerate(item.options)
            )
            letters = ", ".join(LETTERS[: len(item.options)])
        return self.template.format(question=item.question.strip(), options=opts, letters=letters).strip()

    def hash(self) -> str:
        """Short stable hash recorded with every sample (a changed template changes numbers)."""
        raw = f"{self.system}\x00{self.template}\x00{self.option_format}"
        if self.option_separator != "\n":  # the default keeps the hashes of earlier releases
            raw += f"\x00{self.option_separator}"
        return hashlib.sha256(raw.encode()).hexdigest()[:12]
