"""Statistics of the noise-aware gate: a one-sided rank test on per-round samples, a bootstrap interval
of the relative change of medians, and Student-t quantiles for noise floors. Pure Python (no scipy)."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from functools import cache


def t_cdf(x: float, df: int) -> float:
    """Student t distribution function for integer df (the closed-form series, Abramowitz & Stegun 26.7.3/4)."""
    if df < 1:
        raise ValueError("a t distribution needs df >= 1")
    theta = math.atan(x / math.sqrt(df))
    c2, term, total = math.cos(theta) ** 2, 1.0, 1.0
    if df % 2:  # odd: 1/2 + (theta + sin cos (1 + 2/3 c^2 + 2*4/(3*5) c^4 + ...)) / pi
        for k in range(1, (df - 1) // 2):
            term *= c2 * 2 * k / (2 * k + 1)
            total += term
        tail = (theta + (math.sin(theta) * math.cos(theta) * total if df > 1 else 0.0)) / math.pi
        return 0.5 + tail
    for k in range(1, df // 2):  # even: 1/2 + sin/2 (1 + 1/2 c^2 + 1*3/(2*4) c^4 + ...)
        term *= c2 * (2 * k - 1) / (2 * k)
        total += term
    return 0.5 + math.sin(theta) * total / 2


def t_quantile(p: float, df: int) -> float:
    """The x with t_cdf(x, df) = p (bisection; 0 < p < 1)."""
    if not 0 < p < 1:
        raise ValueError("a quantile needs 0 < p < 1")
    lo, hi = -1e6, 1e6
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


@cache
def _u_counts(n: int, m: int) -> tuple[int, ...]:
    """Number of orderings of n and m untied values that give each Mann-Whitney U = 0..n*m."""
    if n == 0 or m == 0:
        return (1,)
    out = [0] * (n * m + 1)
    for u, c in enumerate(_u_counts(n - 1, m)):  # the largest value is one of the n: it beats all m
        out[u + m] += c
    for u, c in enumerate(_u_counts(n, m - 1)):  # ... or one of the m: it beats none of the n
        out[u] += c
    return tuple(out)


def rank_test_p(worse: Sequence[float], other: Sequence[float]) -> float:
    """One-sided Mann-Whitney p-value that `worse` tends to be larger than `other`.

    U counts pairs (w, o) with w > o, a tie as 1/2. Exact (tie-free distribution, U rounded down, so
    ties make it conservative) up to 12 values a side; normal approximation with continuity beyond.
    """
    n, m = len(worse), len(other)
    if n == 0 or m == 0:
        return 1.0
    u = sum((w > o) + 0.5 * (w == o) for w in worse for o in other)
    if n <= 12 and m <= 12:
        counts = _u_counts(n, m)
        return sum(counts[math.floor(u) :]) / sum(counts)
    mean, sd = n * m / 2, math.sqrt(n * m * (n + m + 1) / 12)
    z = (u - 0.5 - mean) / sd
    return 0.5 * math.erfc(z / math.sqrt(2))


def min_p(n: int, m: int) -> float:
    """The smallest p-value `rank_test_p` can give with n and m samples (every `worse` above every other)."""
    return 1 / math.comb(n + m, n) if n <= 12 and m <= 12 else 0.0


def relative_change_interval(
    base: Sequence[float], current: Sequence[float], *, level: float = 0.95, resamples: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap interval of median(current) / median(base) - 1 (deterministic seed)."""
    rng = random.Random(seed)
    changes = []
    for _ in range(resamples):
        b = statistics.median(rng.choices(base, k=len(base)))
        c = statistics.median(rng.choices(current, k=len(current)))
        changes.append(c / b - 1 if b else math.inf)
    changes.sort()
    lo = changes[int((1 - level) / 2 * (resamples - 1))]
    hi = changes[int((1 + level) / 2 * (resamples - 1))]
    return lo, hi
