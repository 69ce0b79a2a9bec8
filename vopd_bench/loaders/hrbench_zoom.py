"""HR-Bench's natural zoom pair: the 4K image of each HR-Bench question is the 8K image cropped around the
object (Wang et al., 2024), and both files ask the same questions with the same option cycles. Each 8K row is
paired with its 4K twin: the 8K image is the `full` view and the 4K image the shipped `crop` view, so the gap
needs no box file.

Pairing rule: the same question text, the same options in the same order, the same answer letter and the same
`cycle_category`. When a key occurs more than once (the same question about several images), its rows pair in
file order, and only if both files hold it equally often. Any 8K row left without a twin (or a 4K row without
one) stops with an error naming it: the files are not the published pair.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

from vopd_bench.errors import UserError
from vopd_bench.items import Item
from vopd_bench.loaders import hrbench
from vopd_bench.loaders._tabular import source

FILES = ("hr_bench_8k.tsv", "hr_bench_4k.tsv")


def _key(it: Item) -> tuple[Any, ...]:
    return (" ".join(it.question.split()), tuple(it.options or ()), it.answer, it.meta.get("cycle"))


def load(spec: Any, data: Path | None) -> list[Item]:
    root = source(spec, data, list(FILES))
    if root.is_file():
        raise UserError(f"task {spec.name}: --data must be the folder holding both {FILES[0]} and {FILES[1]} "
                        "(or their .parquet), got a file")
    big = hrbench.load(replace(spec, options={**spec.options, "file": spec.options.get("file_8k", FILES[0])}), root)
    small = hrbench.load(replace(spec, options={**spec.options, "file": spec.options.get("file_4k", FILES[1])}), root)
    twins: dict[tuple[Any, ...], list[Item]] = defaultdict(list)
    for it in small:
        twins[_key(it)].append(it)
    counts = {k: len(v) for k, v in twins.items()}
    seen: dict[tuple[Any, ...], int] = defaultdict(int)
    for it in big:
        seen[_key(it)] += 1
    out = []
    for it in big:
        k = _key(it)
        if counts.get(k, 0) != seen[k]:
            raise UserError(
                f"task {spec.name}: cannot pair 8K row index {it.id} ({it.question[:60]!r}, {it.meta.get('cycle')}): "
                f"{seen[k]} row(s) in the 8K file and {counts.get(k, 0)} in the 4K file ask it with these options; "
                "the two files must be HR-Bench's published 4K/8K pair"
            )
        twin = twins[k].pop(0)
        out.append(replace(it, crop_image=twin.image, meta={**it.meta, "twin_4k": twin.id}))
    return out
