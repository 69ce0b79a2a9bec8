"""Statistics for paired views: Wilson CIs for accuracy, a (cluster-)paired bootstrap CI for the
gap, the discordant pairs of two paired views (`paired_counts`) and their exact McNemar test, and the share of a base gap closed by training
(`gap_closure`, with a paired bootstrap CI) beside the plain relative change of the gap."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval for k successes in n trials (as fractions)."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    den = 1 + z * z / n
    c = (p + z * z / (2 * n)) / den
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    lo = 0.0 if k == 0 else max(0.0, min(p, c - h))
    hi = 1.0 if k == n else min(1.0, max(p, c + h))
    return (lo, hi)


def paired_counts(a: Sequence[bool | float], b: Sequence[bool | float]) -> tuple[int, int]:
    """The discordant pairs of two paired correctness sequences: (only a correct, only b correct)."""
    if len(a) != len(b):
        raise ValueError(f"paired_counts: sequences differ in length ({len(a)}, {len(b)})")
    only_a = sum(1 for x, y in zip(a, b) if bool(x) and not bool(y))
    only_b = sum(1 for x, y in zip(a, b) if bool(y) and not bool(x))
    return only_a, only_b


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: binomial test of b vs c discordant pairs at p = 0.5."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return min(1.0, 2 * tail / 2**n)


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], groups: Sequence[str] | None = None, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95% percentile CI of mean(b - a), resampling items (or whole groups when given) with replacement."""
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    if d.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    if groups is None:
        idx = rng.integers(0, d.size, size=(n_boot, d.size))
        means = d[idx].mean(axis=1)
    else:
        keys = {g: i for i, g in enumerate(dict.fromkeys(groups))}
        gi = np.array([keys[g] for g in groups])
        sums = np.bincount(gi, weights=d)
        counts = np.bincount(gi).astype(float)
        pick = rng.integers(0, len(keys), size=(n_boot, len(keys)))
        means = sums[pick].sum(axis=1) / counts[pick].sum(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return (float(lo), float(hi))


def cluster_mean_ci(x: Sequence[float], groups: Sequence[str] | None, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% CI of a mean: Wilson for independent 0/1 items, cluster bootstrap when items are grouped."""
    if groups is None:
        return wilson(int(sum(x)), len(x))
    zeros = [0.0] * len(x)
    return paired_bootstrap(zeros, x, groups, n_boot=n_boot, seed=seed)


def relative_reduction(g0: float | None, g1: float | None) -> float | None:
    """The plain relative change of the gap, (gap0 − gap1) / gap0, defined when the first gap is positive."""
    if g0 is None or g1 is None or g0 <= 0:
        return None
    return (g0 - g1) / g0


def closure_estimate(full0: float | None, crop0: float | None, full1: float | None) -> float | None:
    """(full1 − full0) / (crop0 − full0) from accuracies alone (no CI); None when undefined."""
    if full0 is None or crop0 is None or full1 is None or crop0 <= full0:
        return None
    return (full1 - full0) / (crop0 - full0)


def gap_closure(
    full0: Sequence[float], crop0: Sequence[float], full1: Sequence[float], groups: Sequence[str] | None = None,
    n_boot: int = 2000, seed: int = 0,
) -> tuple[float, float, float]:
    """Share of the base gap recovered by the full view, (mean(full1) − mean(full0)) / (mean(crop0) − mean(full0)),
    with its 95% paired-bootstrap CI: (value, ci_low, ci_high), fractions.

    The three sequences are paired by position (one item scored at step 0 on full and crop, and at step N on
    full); the bootstrap resamples items (whole groups when given) and recomputes the ratio. Negative when the
    full view got worse; NaN when the base gap is not positive, and NaN bounds when more than 2.5% of the
    resamples have no positive base gap (the interval is then unbounded). Otherwise the resamples whose base gap
    is not positive are dropped before the percentiles are taken: the CI is conditional on a positive base gap."""
    f0, c0, f1 = (np.asarray(x, dtype=float) for x in (full0, crop0, full1))
    if not f0.size == c0.size == f1.size:
        raise ValueError(f"gap_closure: paired sequences differ in length ({f0.size}, {c0.size}, {f1.size})")
    nan = float("nan")
    den = float(c0.sum() - f0.sum())
    if f0.size == 0 or den <= 0:
        return (nan, nan, nan)
    value = float(f1.sum() - f0.sum()) / den
    if groups is None:
        gi = np.arange(f0.size)
    else:
        keys = {g: i for i, g in enumerate(dict.fromkeys(groups))}
        gi = np.array([keys[g] for g in groups])
    k = int(gi.max()) + 1
    gain, gap = np.bincount(gi, weights=f1 - f0, minlength=k), np.bincount(gi, weights=c0 - f0, minlength=k)
    pick = np.random.default_rng(seed).integers(0, k, size=(n_boot, k))
    num, dens = gain[pick].sum(axis=1), gap[pick].sum(axis=1)
    ok = dens > 0
    if ok.mean() < 0.975:
        return (value, nan, nan)
    lo, hi = np.percentile(num[ok] / dens[ok], [2.5, 97.5])
    return (value, float(lo), float(hi))
