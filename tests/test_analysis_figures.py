"""The explanation figures draw the numbers they are given (and save PNG + PDF)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vopd_bench.analysis import SizeBin, Step
from vopd_bench.compare import Transition
from vopd_bench.report.analysis_figures import plot_decomposition, plot_size, plot_transitions, save_figure


def test_figures(tmp_path: Path) -> None:
    steps = [Step("full", 50, 40, 60), Step("red_box", 55, 45, 65, delta=5, delta_ci=(-2, 12)),
             Step("crop", 95, 90, 98, delta=40, delta_ci=(30, 50))]
    fig, drawn = plot_decomposition(steps, "synth")
    assert drawn["accuracy"] == [50, 55, 95] and drawn["delta_text"][1].startswith("+40.0")
    files = save_figure(fig, tmp_path / "decomp")
    assert {f.suffix for f in files} == {".png", ".pdf"}

    bins = [SizeBin(0.001, 0.004, 10, {"full": (20, 5, 40), "crop": (90, 70, 97)}, 70, (50, 85)),
            SizeBin(0.004, 0.09, 10, {"full": (80, 60, 92), "crop": (90, 70, 97)}, 10, (-5, 25))]
    fig, drawn = plot_size([("base", bins), ("trained", bins[:1])])
    assert drawn["base"]["gap"] == [70, 10] and drawn["base"]["n"] == [10, 10]
    assert drawn["base"]["x"][0] == pytest.approx(100 * (0.001 * 0.004) ** 0.5)
    save_figure(fig, tmp_path / "size")

    t = Transition("synth", "full", both_right=50, fixed=30, broken=5, both_wrong=15)
    fig, shares = plot_transitions([t], ("step 0", "step 75"))
    assert shares["fixed"] == [30.0] and sum(v[0] for v in shares.values()) == pytest.approx(100.0)
    save_figure(fig, tmp_path / "moves")
