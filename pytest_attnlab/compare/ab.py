"""A/B: several runs of a base commit against several runs of a head commit, made interleaved on one machine
(ABAB..., as asv's `continuous`). Each run is one value per cell (the median of its rounds): the rank test
compares run values, not rounds, and the floors come from the runs' own spread around each side's mean."""

from __future__ import annotations

import statistics

from pytest_attnlab.compare.lines import DEFAULT_ALPHA, Line, compare
from pytest_attnlab.compare.loaders import Key, Observed
from pytest_attnlab.compare.noise_model import DEFAULT_CONFIDENCE, estimate, level
from pytest_attnlab.compare.thresholds import Threshold


def combine(runs: list[dict[Key, Observed]]) -> dict[Key, Observed]:
    """Several runs as one: per key in every run, the median of the run values, and the run values as samples."""
    common = set(runs[0]).intersection(*runs[1:])
    out = {}
    for key in (k for k in runs[0] if k in common):
        values = tuple(level(r[key]) for r in runs)
        own = next((r[key].tolerance for r in runs if r[key].tolerance), "")
        out[key] = Observed(statistics.median(values), values, own)
    return out


def ab_compare(
    base_runs: list[dict[Key, Observed]],
    head_runs: list[dict[Key, Observed]],
    thresholds: list[Threshold],
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    alpha: float = DEFAULT_ALPHA,
) -> list[Line]:
    """The gate's lines for BASE's runs against HEAD's: floor t(confidence, df) sd sqrt(1/n + 1/m)."""
    if len(base_runs) < 2 or len(head_runs) < 2:
        raise ValueError("A/B needs 2 or more runs a side")
    noise = estimate([base_runs, head_runs], confidence=confidence)
    return compare(combine(base_runs), combine(head_runs), thresholds, noise=noise, alpha=alpha)
