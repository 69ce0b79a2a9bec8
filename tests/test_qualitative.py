"""The qualitative figure: items picked from the records, images re-rendered from the run's data, verdicts shown."""

from __future__ import annotations

from pathlib import Path

from vopd_bench.report.qualitative import draw_examples, pick_examples
from vopd_bench.rundir import RunDir
from vopd_bench.schema import RunConfig, SampleRecord
from vopd_bench.tasks import get_task


def _run(path: Path, data: Path, full: list[bool], crop: list[bool]) -> tuple[Path, list[str]]:
    items = get_task("synth").load_items(str(data))[: len(full)]
    rd = RunDir(path)
    rd.check_or_write_config(RunConfig(views={"synth": ["full", "crop"]},
                                       tasks={"synth": {"data": str(data), "crop": {"margin": 0.5, "min_side": 32,
                                                                                   "upscale": 2.0, "resize_to": None}}}),
                             overwrite=False)
    for view, cs in (("full", full), ("crop", crop)):
        rd.write_samples("synth", view, [
            SampleRecord(id=it.id, task="synth", view=view, parsed="A" if c else "B", correct=c)
            for it, c in zip(items, cs)
        ])
    return path, [it.id for it in items]


def test_pick_and_draw(tmp_path: Path, synth_small: Path) -> None:
    a, ids = _run(tmp_path / "base", synth_small, [False, True, False, False], [True, True, False, True])
    b, _ = _run(tmp_path / "trained", synth_small, [False, True, False, True], [True, True, True, True])
    # one run: full wrong + crop right, in item order
    assert pick_examples([a], "synth", 5) == [ids[0], ids[3]]
    # two runs: fixed by training first (item 3), then the gap items of the first run
    assert pick_examples([a, b], "synth", 5) == [ids[3], ids[0]]
    assert pick_examples([a, b], "synth", 1) == [ids[3]]

    files, shown = draw_examples([("base", a), ("trained", b)], "synth", tmp_path / "fig" / "examples", n=2)
    assert sorted(f.suffix for f in files) == [".pdf", ".png"] and all(f.stat().st_size > 1000 for f in files)
    assert [s["id"] for s in shown] == [ids[3], ids[0]]
    assert shown[0]["base/full"] == ("B", False) and shown[0]["trained/full"] == ("A", True)
    assert shown[1]["base/crop"] == ("A", True)


def test_no_qualifying_item_draws_nothing(tmp_path: Path, synth_small: Path) -> None:
    a, _ = _run(tmp_path / "r", synth_small, [True, True], [True, False])
    assert draw_examples([("m", a)], "synth", tmp_path / "ex") == ([], [])
    assert not list(tmp_path.glob("ex.*"))
