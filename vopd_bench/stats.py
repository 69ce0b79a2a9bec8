"""Statistics for paired views: Wilson CIs for accuracy, a (cluster-)paired bootstrap CI for the
gap, and the exact McNemar test on discordant pairs."""

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
