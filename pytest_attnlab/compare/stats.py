"""Statistics of the compare gate, from scipy.stats: a one-sided Mann-Whitney test, a bootstrap interval of
the relative change of medians, t and normal quantiles, and the equal-variance test behind pooled floors."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from functools import cache

import numpy as np
from scipy import stats as sps


@cache  # scipy's ppf costs ~0.4 ms; a comparison asks for the same few (p, df) thousands of times
def t_quantile(p: float, df: float) -> float:
    """The x with P(T <= x) = p for Student's t with df degrees of freedom."""
    if not 0 < p < 1:
        raise ValueError("a quantile needs 0 < p < 1")
    return float(sps.t.ppf(p, df))


@cache
def z_quantile(p: float) -> float:
    return float(sps.norm.ppf(p))


def rank_test_p(worse: Sequence[float], other: Sequence[float]) -> float:
    """One-sided Mann-Whitney p-value that `worse` tends to be larger than `other` (scipy: exact without ties
    up to 7 values a side, else the normal approximation with tie correction and continuity)."""
    if not worse or not other:
        return 1.0
    if len(set(worse) | set(other)) == 1:  # every value equal: no evidence (scipy's z would be 0/0)
        return 1.0
    return float(sps.mannwhitneyu(worse, other, alternative="greater").pvalue)


@cache
def min_p(n: int, m: int) -> float:
    """The smallest p-value `rank_test_p` can give with n and m samples (every `worse` above every other)."""
    return rank_test_p([float(m + i) for i in range(n)], [float(i) for i in range(m)])


def relative_change_interval(
    base: Sequence[float], current: Sequence[float], *, level: float = 0.95, resamples: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap interval of median(current) / median(base) - 1 (each side resampled on its own)."""

    def change(b: np.ndarray, c: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.median(c, axis=axis) / np.median(b, axis=axis) - 1

    with warnings.catch_warnings():  # identical resamples make the distribution degenerate: a point interval
        warnings.simplefilter("ignore")
        res = sps.bootstrap((np.asarray(base, float), np.asarray(current, float)), change, n_resamples=resamples,
                            confidence_level=level, method="percentile", rng=np.random.default_rng(seed))  # fmt: skip
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if math.isfinite(lo) and math.isfinite(hi):
        return lo, hi
    point = float(change(np.asarray(base, float), np.asarray(current, float)))
    return point, point


def equal_spread(groups: Sequence[Sequence[float]], alpha: float = 0.01) -> bool:
    """Whether the groups' spreads may be pooled: Brown-Forsythe (Levene, median-centred) keeps p > alpha.
    Groups with no spread at all pool only with each other."""
    spreads = [float(np.ptp(g)) for g in groups]
    if not any(spreads):
        return True
    if not all(spreads):
        return False
    return float(sps.levene(*groups, center="median").pvalue) > alpha


def gate_verdict(
    base: Sequence[float], current: Sequence[float], gate_pct: float, *, two_sided: bool = True
) -> tuple[str, float, float, float]:
    """(verdict, change %, interval low %, interval high %) of median(current) vs median(base) against a gate
    of `gate_pct` %: "within" where the whole 95 % interval is inside the gate, "beyond" where it is wholly
    outside (above +gate, or below -gate when `two_sided`), else "undecided": the rounds' spread is wider
    than the gate, so these samples can neither pass nor fail it."""
    point = 100.0 * (float(np.median(current)) / float(np.median(base)) - 1)
    lo, hi = (100.0 * x for x in relative_change_interval(base, current))
    if lo >= gate_pct or (two_sided and hi <= -gate_pct):
        return "beyond", point, lo, hi
    if hi < gate_pct and (not two_sided or lo > -gate_pct):
        return "within", point, lo, hi
    return "undecided", point, lo, hi
