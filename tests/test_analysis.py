"""Gap decomposition and size bins recomputed by hand from the sample files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vopd_bench.analysis import decomposition, size_bins
from vopd_bench.rundir import RunDir
from vopd_bench.schema import RunConfig, SampleRecord
from vopd_bench.stats import mcnemar_exact, paired_counts
from vopd_bench.views import box_fraction


def _run(path: Path, views: dict[str, list[bool | None]], fracs: list[float] | None = None) -> Path:
    rd = RunDir(path)
    rd.check_or_write_config(RunConfig(views={"t": list(views)}), overwrite=False)
    for v, cs in views.items():
        rd.write_samples("t", v, [
            SampleRecord(id=f"i{k:02d}", task="t", view=v, correct=bool(c), error=None if c is not None else "x",
                         box_frac=fracs[k] if fracs else None)
            for k, c in enumerate(cs)
        ])
    return path


def test_decomposition_steps_equal_the_sample_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n = 40
    views = {v: list(rng.random(n) < p) for v, p in
             [("full", 0.3), ("red_box", 0.4), ("blur_surround", 0.5), ("crop_native", 0.6), ("crop", 0.9)]}
    views["crop_native"][3] = None  # an error: item 3 leaves every step
    run = _run(tmp_path / "r", {k: views[k] for k in ("full", "crop", "crop_native", "red_box", "blur_surround")})
    steps, n_items = decomposition(run, "t")
    assert n_items == n - 1
    assert [s.view for s in steps] == ["full", "red_box", "blur_surround", "crop_native", "crop"]
    keep = [i for i in range(n) if i != 3]
    for prev, st in zip(steps, steps[1:]):
        a = [float(views[prev.view][i]) for i in keep]
        b = [float(views[st.view][i]) for i in keep]
        assert st.accuracy == pytest.approx(100 * np.mean(b))
        assert st.delta == pytest.approx(100 * (np.mean(b) - np.mean(a)))
        assert st.p_value == pytest.approx(mcnemar_exact(*paired_counts(a, b)))
        assert st.delta_ci[0] <= st.delta <= st.delta_ci[1]
    # the steps add up to the whole gap
    assert sum(s.delta for s in steps[1:]) == pytest.approx(steps[-1].accuracy - steps[0].accuracy)


def test_decomposition_needs_full_and_another_view(tmp_path: Path) -> None:
    assert decomposition(_run(tmp_path / "r", {"full": [True, False]}), "t") == ([], 0)


def test_size_bins_partition_the_items(tmp_path: Path) -> None:
    n = 22
    fracs = [0.001 * (k + 1) for k in range(n)]
    full = [k >= 11 for k in range(n)]  # small targets wrong on the full view
    crop = [True] * n
    full[0] = None  # an error: left out
    bins = size_bins(_run(tmp_path / "r", {"full": full, "crop": crop}, fracs), "t", n_bins=4)
    ids = [i for b in bins for i in b.ids]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == n - 1  # a partition of the answered items
    assert sum(b.n for b in bins) == n - 1
    assert all(b.lo <= b.hi for b in bins) and all(a.hi <= b.lo for a, b in zip(bins, bins[1:]))
    assert bins[0].gap == pytest.approx(100.0) and bins[-1].gap == pytest.approx(0.0)
    for b in bins:
        idx = [int(i[1:]) for i in b.ids]
        assert b.accuracy["full"][0] == pytest.approx(100 * np.mean([full[i] for i in idx]))


def test_box_fraction() -> None:
    assert box_fraction([[0, 0, 10, 10]], 100, 100) == pytest.approx(0.01)
    assert box_fraction([[0, 0, 10, 10], [90, 90, 100, 100]], 100, 100) == pytest.approx(1.0)  # union rectangle
    assert box_fraction([[-10, -10, 10, 10]], 100, 100) == pytest.approx(0.01)  # clipped
    assert box_fraction([], 100, 100) is None
