"""HR-Bench's natural zoom pair: each 8K row paired with its 4K twin (full = 8K, crop = 4K), or a clear refusal."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from fixtures_bench import b64, hrbench, scene
from helpers import records, run_cli

from vopd_bench.errors import UserError
from vopd_bench.tasks import get_task


def _pair(root: Path, n: int = 3) -> Path:
    hrbench(root, n_questions=n, name="hr_bench_4k.tsv")
    hrbench(root, n_questions=n, name="hr_bench_8k.tsv")
    # the 8K file: bigger images, rows in another order and other indices (pairing must not rely on them)
    path = root / "hr_bench_8k.tsv"
    rows = list(csv.DictReader(path.open(), delimiter="\t"))
    for r in rows:
        r["index"] = str(1000 + int(r["index"]))
        r["image"] = b64(scene(int(r["index"]) % 7).resize((320, 320)))
    rows.reverse()
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t")
        w.writeheader()
        w.writerows(rows)
    return root


def test_pairs_each_8k_row_with_its_4k_twin(tmp_path: Path) -> None:
    root = _pair(tmp_path)
    items = get_task("hrbench_zoom").load_items(root)
    small = {it.id: it for it in get_task("hrbench4k").load_items(root / "hr_bench_4k.tsv")}
    assert len(items) == 12 and len({it.meta["twin_4k"] for it in items}) == 12
    for it in items:
        twin = small[it.meta["twin_4k"]]
        assert (twin.question, twin.options, twin.answer, twin.meta["cycle"]) == (
            it.question, it.options, it.answer, it.meta["cycle"])
        assert it.load_image().size == (320, 320)  # full = 8K
        assert it.load_crop_image().size == twin.load_image().size  # crop = 4K


def test_unpairable_files_are_refused(tmp_path: Path) -> None:
    root = _pair(tmp_path, n=2)
    path = root / "hr_bench_4k.tsv"
    rows = list(csv.DictReader(path.open(), delimiter="\t"))
    rows[0]["question"] = "Something else?"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t")
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(UserError, match="cannot pair 8K row index .* published 4K/8K pair"):
        get_task("hrbench_zoom").load_items(root)
    with pytest.raises(UserError, match="must be the folder"):
        get_task("hrbench_zoom").load_items(path)


def test_eval_gives_a_gap_without_a_box_file(tmp_path: Path, tiny_model: str) -> None:
    root = _pair(tmp_path / "data", n=1)
    out = tmp_path / "run"
    assert run_cli(["eval", "--model", tiny_model, "--task", "hrbench_zoom", "--data", str(root),
                    "--out", str(out), "--quiet"]) == 0
    assert len(records(out, "hrbench_zoom", "full")) == 4 and len(records(out, "hrbench_zoom", "crop")) == 4
