"""Significance tests for regression detection, in numpy and the standard library.

The Mann-Whitney U test and the two-proportion z-test use the normal approximation,
which is accurate for the sample sizes regression detection insists on anyway (it
never judges a handful of runs); their results match
``scipy.stats.mannwhitneyu(..., method="asymptotic")`` and the pooled z-test found in
statistics textbooks. Rare events (a handful of failures) break the z-test's
approximation whatever the sample size, so :func:`fisher_exact` is there for them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from .errors import InvalidValue

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
    :raises InvalidValue: unknown ``alternative``
    """
    _check_alternative(alternative)
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        return SignificanceResult(float("nan"), float("nan"))
    ranks, ties = rank_average(np.concatenate([x, y]))
    u1 = float(ranks[:n1].sum() - n1 * (n1 + 1) / 2)
    return _u_test(u1, n1, n2, ties, alternative)


def mann_whitney_u_counts(
    x_counts: np.ndarray, y_counts: np.ndarray, alternative: str = "two-sided"
) -> SignificanceResult:
    """:func:`mann_whitney_u` of two samples given as counts per value, both over the
    same sorted distinct values (as binned durations are): the same result as the
    samples spelt out, without spelling them out."""
    _check_alternative(alternative)
    x_counts = np.asarray(x_counts, dtype=np.int64)
    y_counts = np.asarray(y_counts, dtype=np.int64)
    n1, n2 = int(x_counts.sum()), int(y_counts.sum())
    if n1 == 0 or n2 == 0:
        return SignificanceResult(float("nan"), float("nan"))
    ties = x_counts + y_counts
    ends = np.cumsum(ties)
    average = ends - (ties - 1) / 2
    u1 = float((x_counts * average).sum() - n1 * (n1 + 1) / 2)
    return _u_test(u1, n1, n2, ties, alternative)


def _u_test(u1: float, n1: int, n2: int, ties: np.ndarray, alternative: str) -> SignificanceResult:
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
    :raises InvalidValue: unknown ``alternative`` or counts out of range
    """
    _check_alternative(alternative)
    _check_counts(successes1, n1, successes2, n2)
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


def fisher_exact(
    successes1: int,
    n1: int,
    successes2: int,
    n2: int,
    alternative: str = "two-sided",
) -> SignificanceResult:
    """Fisher's exact test of ``successes1/n1`` against ``successes2/n2``.

    Exact for any sample size (the hypergeometric distribution of the first sample's
    successes given both totals), where the z-test's normal approximation is not:
    with a baseline of 1,000 successes, one failure in 20 recent runs has a z-test
    p-value near 1e-12 but an exact one of 20/1020. The results match
    ``scipy.stats.fisher_exact`` on the table ``[[s1, n1 - s1], [s2, n2 - s2]]``.

    :param alternative: ``"greater"`` tests whether the first proportion is larger,
      ``"less"`` smaller, ``"two-sided"`` either
    :returns: ``(odds_ratio, p_value)``; NaN when a sample is empty
    :raises InvalidValue: unknown ``alternative`` or counts out of range
    """
    _check_alternative(alternative)
    _check_counts(successes1, n1, successes2, n2)
    if n1 == 0 or n2 == 0:
        return SignificanceResult(float("nan"), float("nan"))
    failures1, failures2 = n1 - successes1, n2 - successes2
    if failures1 * successes2 == 0:
        odds = float("nan") if successes1 * failures2 == 0 else float("inf")
    else:
        odds = successes1 * failures2 / (failures1 * successes2)
    total, successes = n1 + n2, successes1 + successes2
    low, high = max(0, n1 - (total - successes)), min(successes, n1)

    def log_pmf(x: int) -> float:
        return _log_comb(successes, x) + _log_comb(total - successes, n1 - x) - _log_comb(total, n1)

    if alternative == "less":
        xs = range(low, successes1 + 1)
    elif alternative == "greater":
        xs = range(successes1, high + 1)
    else:
        # Every table at most as likely as the observed one (scipy's relative tolerance).
        observed = log_pmf(successes1) + math.log1p(1e-7)
        xs = (x for x in range(low, high + 1) if log_pmf(x) <= observed)
    p = math.fsum(math.exp(log_pmf(x)) for x in xs)
    return SignificanceResult(odds, min(1.0, p))


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _check_counts(*counts: int) -> None:
    for successes, total in (counts[:2], counts[2:]):
        if total < 0 or not 0 <= successes <= max(total, 0):
            raise InvalidValue(f"successes must be between 0 and n, got {successes} of {total}")


def _check_alternative(alternative: str) -> None:
    if alternative not in ALTERNATIVES:
        raise InvalidValue(
            f"Unknown alternative {alternative!r}: use one of {', '.join(ALTERNATIVES)}"
        )
