"""Significance tests for regression detection, in numpy and the standard library.

Both tests use the normal approximation, which is accurate for the sample sizes
regression detection insists on anyway (it never judges a handful of runs). The
results match ``scipy.stats.mannwhitneyu(..., method="asymptotic")`` and the pooled
two-proportion z-test found in statistics textbooks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

ALTERNATIVES = ("two-sided", "greater", "less")


class SignificanceResult(NamedTuple):
    """A test statistic and its p-value."""

    statistic: float
    p_value: float


def normal_sf(z: float) -> float:
    """Survival function of the standard normal distribution, ``P(Z > z)``."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def rank_average(values: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ranks starting at 1, tied values sharing their average rank.

    Returns the ranks (in the order of ``values``) and the size of every tie group.
    """
    values = np.asarray(values, dtype=float)
    unique, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    # The group of the k-th smallest distinct value spans ranks end-count+1 .. end.
    ends = np.cumsum(counts)
    average = ends - (counts - 1) / 2
    return average[inverse], counts


def mann_whitney_u(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    alternative: str = "two-sided",
) -> SignificanceResult:
    """Mann-Whitney U test of ``x`` against ``y`` (normal approximation).

    The statistic is U for ``x``: the number of pairs in which the ``x`` value is
    larger, ties counting one half. Its variance is corrected for ties and a
    continuity correction of 0.5 is applied, as ``scipy.stats.mannwhitneyu`` does.

    :param alternative: ``"greater"`` tests whether ``x`` tends to be larger than
      ``y``, ``"less"`` smaller, ``"two-sided"`` either
    :returns: ``(U, p_value)``; the p-value is NaN when a sample is empty or every
      value is the same (nothing to rank)
    :raises ValueError: unknown ``alternative``
    """
    _check_alternative(alternative)
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        return SignificanceResult(float("nan"), float("nan"))
    ranks, ties = rank_average(np.concatenate([x, y]))
    u1 = float(ranks[:n1].sum() - n1 * (n1 + 1) / 2)
    n = n1 + n2
    variance = n1 * n2 / 12 * ((n + 1) - float((ties**3 - ties).sum()) / (n * (n - 1)))
    if variance <= 0:
        return SignificanceResult(u1, float("nan"))
    mean = n1 * n2 / 2
    sd = math.sqrt(variance)
    if alternative == "greater":
        p = normal_sf((u1 - mean - 0.5) / sd)
    elif alternative == "less":
        p = normal_sf((n1 * n2 - u1 - mean - 0.5) / sd)
    else:
        p = 2 * normal_sf((max(u1, n1 * n2 - u1) - mean - 0.5) / sd)
    return SignificanceResult(u1, min(1.0, p))


def two_proportion_z(
    successes1: int,
    n1: int,
    successes2: int,
    n2: int,
    alternative: str = "two-sided",
) -> SignificanceResult:
    """Pooled two-proportion z-test of ``successes1/n1`` against ``successes2/n2``.

    :param alternative: ``"greater"`` tests whether the first proportion is larger,
      ``"less"`` smaller, ``"two-sided"`` either
    :returns: ``(z, p_value)``; NaN when a sample is empty or both proportions are
      0 or both 1 (no variance to test against)
    :raises ValueError: unknown ``alternative`` or counts out of range
    """
    _check_alternative(alternative)
    for successes, total in ((successes1, n1), (successes2, n2)):
        if total < 0 or not 0 <= successes <= max(total, 0):
            raise ValueError(f"successes must be between 0 and n, got {successes} of {total}")
    if n1 == 0 or n2 == 0:
        return SignificanceResult(float("nan"), float("nan"))
    pooled = (successes1 + successes2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return SignificanceResult(float("nan"), float("nan"))
    z = (successes1 / n1 - successes2 / n2) / se
    if alternative == "greater":
        p = normal_sf(z)
    elif alternative == "less":
        p = normal_sf(-z)
    else:
        p = min(1.0, 2 * normal_sf(abs(z)))
    return SignificanceResult(z, p)


def _check_alternative(alternative: str) -> None:
    if alternative not in ALTERNATIVES:
        raise ValueError(
            f"Unknown alternative {alternative!r}: use one of {', '.join(ALTERNATIVES)}"
        )
