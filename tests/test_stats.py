"""The significance tests, checked against textbook values and second methods:
U by counting pairs, its null mean and variance by enumerating every split of the
pooled sample, and the normal distribution from ``statistics.NormalDist``."""

import itertools
import math
import statistics

import numpy as np
import pytest
import scipy.stats as scipy_stats

from agentmetrics.stats import (
    fisher_exact,
    mann_whitney_u,
    normal_sf,
    rank_average,
    two_proportion_z,
)

PHI = statistics.NormalDist()


def u_by_pairs(x, y):
    return sum((a > b) + 0.5 * (a == b) for a in x for b in y)


def test_rank_average():
    ranks, ties = rank_average([30, 10, 20, 20, 40, 20])
    assert list(ranks) == [5, 1, 3, 3, 6, 3]
    assert sorted(ties) == [1, 1, 1, 3]


def test_normal_sf():
    assert normal_sf(0) == pytest.approx(0.5)
    assert normal_sf(1.959964) == pytest.approx(0.025, abs=1e-6)
    assert normal_sf(-1.644854) == pytest.approx(0.95, abs=1e-6)


# Wikipedia's "Mann-Whitney U test" example: the finishing order of 6 tortoises (T)
# and 6 hares (H) is T H H H H H T T T T T H; U_T = 25 and U_H = 11.
TORTOISES = [1, 7, 8, 9, 10, 11]
HARES = [2, 3, 4, 5, 6, 12]


def test_mann_whitney_textbook_example():
    u, p = mann_whitney_u(TORTOISES, HARES)
    assert u == 25
    assert mann_whitney_u(HARES, TORTOISES).statistic == 11
    # mean 18, variance 6*6*13/12 = 39, z = (25 - 18 - 0.5) / sqrt(39) = 1.0408;
    # a normal table gives P(Z > 1.0408) = 0.1490.
    assert p == pytest.approx(0.2980, abs=5e-4)
    assert mann_whitney_u(TORTOISES, HARES, "greater").p_value == pytest.approx(0.1490, abs=3e-4)
    # z = (11 - 18 - 0.5) / sqrt(39) = -1.2010: P(Z > -1.2010) = 0.8851
    assert mann_whitney_u(TORTOISES, HARES, "less").p_value == pytest.approx(0.8851, abs=3e-4)


def test_mann_whitney_scipy_docs_example():
    # scipy.stats.mannwhitneyu's documented example: U1 = 17.
    males = [19, 22, 16, 29, 24]
    females = [20, 11, 17, 12]
    assert mann_whitney_u(males, females).statistic == 17 == u_by_pairs(males, females)


@pytest.mark.parametrize(
    "x, y",
    [
        ([1, 2, 2, 3, 3, 3, 5], [2, 3, 4, 4, 5, 6]),  # many ties
        ([5.5, 1.2, 3.3, 8.1, 2.2], [4.4, 9.9, 7.7, 6.6, 0.5, 3.0]),  # no ties
        ([1, 1, 1, 2], [1, 2, 2, 2, 2]),  # heavy ties
    ],
)
def test_mann_whitney_against_enumeration(x, y):
    """Tie-corrected variance = the exact variance of U over every split."""
    pooled = x + y
    us = [
        u_by_pairs(
            [pooled[i] for i in chosen], [pooled[i] for i in set(range(len(pooled))) - set(chosen)]
        )
        for chosen in itertools.combinations(range(len(pooled)), len(x))
    ]
    mean, sd = statistics.fmean(us), statistics.pstdev(us)
    u = u_by_pairs(x, y)
    result = mann_whitney_u(x, y, "greater")
    assert result.statistic == u
    assert result.p_value == pytest.approx(1 - PHI.cdf((u - mean - 0.5) / sd), rel=1e-9)
    less = mann_whitney_u(x, y, "less").p_value
    assert less == pytest.approx(1 - PHI.cdf((mean - u - 0.5) / sd), rel=1e-9)
    two_sided = mann_whitney_u(x, y).p_value
    assert two_sided == pytest.approx(min(1, 2 * min(result.p_value, less)), rel=1e-9)


def test_mann_whitney_degenerate():
    assert all(math.isnan(v) for v in mann_whitney_u([], [1, 2]))
    u, p = mann_whitney_u([3, 3], [3, 3, 3])
    assert u == 3 and math.isnan(p)
    with pytest.raises(ValueError, match="use one of two-sided, greater, less"):
        mann_whitney_u([1], [2], "bigger")


def test_mann_whitney_false_positive_rate():
    """On pure noise about alpha of the tests come out significant, no more."""
    rng = np.random.default_rng(7)
    p_values = [
        mann_whitney_u(rng.lognormal(4, 0.8, 30), rng.lognormal(4, 0.8, 40), "greater").p_value
        for _ in range(1000)
    ]
    assert 0.03 < np.mean(np.array(p_values) < 0.05) < 0.07
    assert np.mean(np.array(p_values) < 0.01) < 0.02


def test_mann_whitney_detects_a_doubling():
    rng = np.random.default_rng(8)
    base = rng.lognormal(4, 0.5, 60)
    slow = 2 * rng.lognormal(4, 0.5, 30)
    assert mann_whitney_u(slow, base, "greater").p_value < 1e-6
    assert mann_whitney_u(slow, base, "less").p_value > 0.99


def test_mann_whitney_matches_scipy():
    rng = np.random.default_rng(3)
    x = np.round(rng.lognormal(3, 1, 45))  # rounding makes ties
    y = np.round(rng.lognormal(3.3, 1, 38))
    for alternative in ("two-sided", "greater", "less"):
        expected = scipy_stats.mannwhitneyu(x, y, alternative=alternative, method="asymptotic")
        got = mann_whitney_u(x, y, alternative)
        assert got.statistic == pytest.approx(expected.statistic)
        assert got.p_value == pytest.approx(expected.pvalue, rel=1e-9)


def test_two_proportion_z_textbook():
    # 90/100 against 75/100: pooled 0.825, se = sqrt(0.825 * 0.175 * 0.02) = 0.053735,
    # z = 0.15 / 0.053735 = 2.7915.
    z, p = two_proportion_z(90, 100, 75, 100, "greater")
    assert z == pytest.approx(2.7915, abs=1e-4)
    # Second method: z squared is the chi-square statistic of the 2x2 table.
    a, b, c, d = 90, 10, 75, 25
    chi2 = 200 * (a * d - b * c) ** 2 / ((a + b) * (c + d) * (a + c) * (b + d))
    assert z == pytest.approx(math.sqrt(chi2), rel=1e-12)
    assert p == pytest.approx(1 - PHI.cdf(math.sqrt(chi2)), rel=1e-9)
    assert p == pytest.approx(0.00262, abs=2e-5)  # normal table: 1 - 0.99738
    assert two_proportion_z(90, 100, 75, 100).p_value == pytest.approx(2 * p)
    assert two_proportion_z(90, 100, 75, 100, "less").p_value == pytest.approx(1 - p)


def test_two_proportion_z_degenerate():
    assert all(math.isnan(v) for v in two_proportion_z(0, 0, 5, 10))
    assert all(math.isnan(v) for v in two_proportion_z(10, 10, 20, 20))  # both 100%
    with pytest.raises(ValueError, match="between 0 and n"):
        two_proportion_z(11, 10, 5, 10)
    with pytest.raises(ValueError, match="use one of"):
        two_proportion_z(1, 10, 5, 10, "lower")


def test_two_proportion_z_matches_scipy():
    table = np.array([[140, 60], [120, 90]])
    chi2, p, _, _ = scipy_stats.chi2_contingency(table, correction=False)
    assert two_proportion_z(140, 200, 120, 210).p_value == pytest.approx(p, rel=1e-9)


# -- Fisher's exact test -------------------------------------------------------------------


@pytest.mark.parametrize("alternative", ["less", "greater", "two-sided"])
def test_fisher_exact_matches_a_direct_sum(alternative):
    # Direct hypergeometric sums with math.comb, over a grid of small tables.
    for s1, n1, s2, n2 in [(3, 10, 9, 12), (0, 5, 5, 5), (7, 7, 0, 9), (19, 20, 1000, 1000)]:
        total, successes = n1 + n2, s1 + s2

        def pmf(x, n1=n1, total=total, successes=successes):
            return (
                math.comb(successes, x)
                * math.comb(total - successes, n1 - x)
                / math.comb(total, n1)
            )

        support = range(max(0, n1 - (total - successes)), min(successes, n1) + 1)
        if alternative == "less":
            expected = sum(pmf(x) for x in support if x <= s1)
        elif alternative == "greater":
            expected = sum(pmf(x) for x in support if x >= s1)
        else:
            expected = sum(pmf(x) for x in support if pmf(x) <= pmf(s1) * (1 + 1e-7))
        got = fisher_exact(s1, n1, s2, n2, alternative).p_value
        assert got == pytest.approx(min(1.0, expected), rel=1e-9)


def test_fisher_exact_against_scipy():
    for s1, n1, s2, n2 in [(3, 10, 9, 12), (0, 5, 5, 5), (12, 40, 30, 41), (1, 1, 0, 1)]:
        table = [[s1, n1 - s1], [s2, n2 - s2]]
        for alternative in ("less", "greater", "two-sided"):
            expected = scipy_stats.fisher_exact(table, alternative=alternative)
            got = fisher_exact(s1, n1, s2, n2, alternative)
            assert got.p_value == pytest.approx(expected.pvalue, rel=1e-9)
            assert got.statistic == pytest.approx(expected.statistic, nan_ok=True)


def test_fisher_exact_edges():
    assert all(math.isnan(v) for v in fisher_exact(0, 0, 3, 5))
    with pytest.raises(ValueError, match="between 0 and n"):
        fisher_exact(6, 5, 1, 5)
    with pytest.raises(ValueError, match="Unknown alternative"):
        fisher_exact(1, 5, 1, 5, "bigger")
