"""Statistics against hand-computed values."""

import math

import pytest

from vopd_bench.results import gap_stats, task_result, view_stats
from vopd_bench.schema import Results, SampleRecord, TaskResult, ViewStats
from vopd_bench.stats import mcnemar_exact, paired_bootstrap, paired_counts, wilson


def test_wilson_hand_computed():
    # k=8, n=10: centre (0.8 + 1.92/10)/(1+3.8415/10) = 0.7165, half-width 0.2207
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4)
    assert hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson(0, 5)[0] == 0.0
    assert math.isnan(wilson(0, 0)[0])


def test_mcnemar_exact_hand_computed():
    # b=1, c=9: p = 2 * (C(10,0)+C(10,1)) / 2^10 = 22/1024
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024)
    assert mcnemar_exact(9, 1) == pytest.approx(22 / 1024)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == 1.0
    # b=0, c=6: 2/64
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)


def test_paired_counts_are_the_discordant_pairs():
    assert paired_counts([1, 0, 0, 1, 1], [1, 1, 0, 0, 0]) == (2, 1)
    assert paired_counts([True, False], [True, False]) == (0, 0)
    assert paired_counts([], []) == (0, 0)
    with pytest.raises(ValueError, match="differ in length"):
        paired_counts([1], [])


def test_paired_bootstrap_brackets_the_difference():
    a = [0, 0, 1, 0, 1, 0, 0, 1, 0, 0] * 10
    b = [1, 0, 1, 1, 1, 0, 1, 1, 1, 0] * 10
    lo, hi = paired_bootstrap(a, b, seed=1)
    assert lo < 0.4 < hi  # mean difference 0.4
    assert lo > 0.25 and hi < 0.55
    # identical vectors: degenerate CI at 0
    assert paired_bootstrap(a, a) == (0.0, 0.0)


def test_clustered_bootstrap_is_wider_than_items():
    # 20 questions x 4 cycles, answers perfectly correlated inside a question
    a, b, g = [], [], []
    for q in range(20):
        x, y = q % 2, (q % 3 != 0)
        for _ in range(4):
            a.append(x)
            b.append(float(y))
            g.append(f"q{q}")
    lo_i, hi_i = paired_bootstrap(a, b, seed=0)
    lo_c, hi_c = paired_bootstrap(a, b, groups=g, seed=0)
    assert (hi_c - lo_c) > 1.5 * (hi_i - lo_i)


def _recs(view, correct, parsed=None):
    return [
        SampleRecord(id=f"i{i}", task="t", view=view, correct=bool(c), parsed=(parsed[i] if parsed else "A"),
                     category="x" if i % 2 else "y")
        for i, c in enumerate(correct)
    ]


def test_gap_and_view_stats_hand_example():
    full = _recs("full", [1, 0, 0, 0, 1, 0, 0, 0, 0, 1])
    crop = _recs("crop", [1, 1, 1, 0, 1, 1, 1, 1, 0, 0])
    g = gap_stats(full, crop)
    assert g.value == pytest.approx(40.0)  # 70% - 30%
    assert g.n_pairs == 10
    assert g.crop_only_correct == 5 and g.full_only_correct == 1
    assert g.p_value == pytest.approx(mcnemar_exact(1, 5))
    assert g.ci_low < 40 < g.ci_high
    v = view_stats(_recs("full", [1, 0, 1], parsed=["A", None, "B"]))
    assert v.n == 3 and v.accuracy == pytest.approx(2 / 3) and v.parse_failures == 1
    res = task_result({"full": full, "crop": crop})
    assert set(res.categories) == {"x", "y"}
    # category y = even ids: full 1,0,1,0,0 -> 0.4 ; crop 1,1,1,1,0 -> 0.8
    assert res.categories["y"].gap.value == pytest.approx(40.0)
    assert gap_stats(full, []).to_dict()["n_pairs"] == 0


def test_errors_excluded_from_accuracy_and_counted():
    recs = _recs("full", [1, 1, 0])
    recs[2].error = "cannot decode image"
    v = view_stats(recs)
    assert v.n == 2 and v.accuracy == 1.0 and v.errors == 1


def test_average_over_tasks_says_how_many_tasks_each_mean_covers():
    from vopd_bench.results import average
    from vopd_bench.summary import results_table

    def task(full, crop=None, gap=None):
        views = {"full": ViewStats(n=10, accuracy=full, ci_low=0.0, ci_high=1.0)}
        if crop is not None:
            views["crop"] = ViewStats(n=10, accuracy=crop, ci_low=0.0, ci_high=1.0)
        block = {"views": {v: s.to_dict() for v, s in views.items()}}
        if gap is not None:
            block["gap"] = {"value": gap, "ci_low": 0.0, "ci_high": 1.0, "p_value": 0.5}
        return TaskResult.from_dict(block)

    tasks = {"a": task(0.5, 0.9, 40.0), "b": task(1.0)}  # b: a held-out task without a crop view
    avg = average(tasks)
    assert avg["views"]["full"] == {"accuracy": 0.75, "n_tasks": 2}
    assert avg["views"]["crop"] == {"accuracy": 0.9, "n_tasks": 1}
    assert avg["gap"] == {"value": 40.0, "n_tasks": 1}
    from rich.console import Console

    console = Console(width=300, record=True)
    console.print(results_table(Results(tasks=tasks, average=avg)))
    row = [ln for ln in console.export_text().splitlines() if "average" in ln][0]
    assert "75.0 " in row and "(2 of" not in row  # the full mean covers every task
    assert "90.0 (1 of 2 tasks)" in row and "+40.0 (1 of 2 tasks)" in row


def test_gap_closure_against_a_direct_computation():
    """Value by hand; CI against a plain-Python bootstrap of the same definition (its own random draws)."""
    import random

    from vopd_bench.stats import gap_closure

    # 60 items: step 0 full 31, crop 59 correct; step N full 14 -> (14 - 31) / (59 - 31) = -17/28
    f0 = [1] * 31 + [0] * 29
    c0 = [1] * 59 + [0]
    f1 = [1] * 10 + [0] * 21 + [1] * 4 + [0] * 25
    value, lo, hi = gap_closure(f0, c0, f1)
    assert value == pytest.approx(-17 / 28)
    rnd, draws = random.Random(7), []
    for _ in range(4000):
        idx = [rnd.randrange(60) for _ in range(60)]
        den = sum(c0[i] - f0[i] for i in idx)
        draws.append(sum(f1[i] - f0[i] for i in idx) / den)
    draws.sort()
    assert lo == pytest.approx(draws[100], abs=0.04) and hi == pytest.approx(draws[3899], abs=0.04)
    assert lo < value < hi < 0  # the full view got worse, and the whole CI says so
    # one item per group: the clustered bootstrap is the item bootstrap
    assert gap_closure(f0, c0, f1, groups=[f"g{i}" for i in range(60)]) == (value, lo, hi)
    # the full view reaching the crop closes the whole gap; no change closes none (a degenerate CI)
    assert gap_closure(f0, c0, c0)[0] == pytest.approx(1.0)
    assert gap_closure(f0, c0, f0) == (0.0, 0.0, 0.0)
    # no positive base gap: undefined
    assert all(math.isnan(x) for x in gap_closure(c0, f0, f1))
    assert all(math.isnan(x) for x in gap_closure([], [], []))
    with pytest.raises(ValueError, match="differ in length"):
        gap_closure(f0, c0, f1[:-1])
