"""effects: per-cell intervals and power against their definitions, and the random-effects pooled
estimate against a published worked example."""

import numpy as np
import pytest
from scipy import stats

from cdlib import effects

# Colditz et al. (1994), the BCG vaccine trials (metafor's dat.bcg): TB cases and non-cases,
# vaccinated (tpos, tneg) and not (cpos, cneg)
BCG = [(4, 119, 11, 128), (6, 300, 29, 274), (3, 228, 11, 209), (62, 13536, 248, 12619),
       (33, 5036, 47, 5761), (180, 1361, 372, 1079), (8, 2537, 10, 619), (505, 87886, 499, 87892),
       (29, 7470, 45, 7232), (17, 1699, 65, 1600), (186, 50448, 141, 27197), (5, 2493, 3, 2338),
       (27, 16886, 29, 17825)]  # fmt: skip


def test_pooled_reproduces_the_bcg_dersimonian_laird_fit_to_3_decimals():
    """The log risk ratios of the 13 BCG trials pooled by DerSimonian-Laird, as metafor's
    documentation gives them (rma(yi, vi, method="DL") on escalc("RR", ...)): estimate -0.7141,
    95% interval [-1.0644, -0.3638], tau² 0.3088, I² 92.12%."""
    t = np.array(BCG, dtype=float)
    yi = np.log((t[:, 0] / (t[:, 0] + t[:, 1])) / (t[:, 2] / (t[:, 2] + t[:, 3])))
    vi = 1 / t[:, 0] - 1 / (t[:, 0] + t[:, 1]) + 1 / t[:, 2] - 1 / (t[:, 2] + t[:, 3])
    got = effects.pooled(yi, vi)
    assert round(got["effect"], 3) == -0.714
    assert (round(got["ci_low"], 3), round(got["ci_high"], 3)) == (-1.064, -0.364)
    assert round(got["tau2"], 3) == 0.309 and round(got["i2"], 4) == 0.9212 and got["cells"] == 13


def test_pooled_hartung_knapp_interval_follows_its_definition():
    """The modified Hartung-Knapp-Sidik-Jonkman interval (Röver et al. 2015), written out: on the
    BCG trials (q > 1) it is wider than the normal interval; on cells that agree (q < 1) it keeps
    the random-effects variance, with t quantiles on k - 1 degrees of freedom."""
    t = np.array(BCG, dtype=float)
    yi = np.log((t[:, 0] / (t[:, 0] + t[:, 1])) / (t[:, 2] / (t[:, 2] + t[:, 3])))
    vi = 1 / t[:, 0] - 1 / (t[:, 0] + t[:, 1]) + 1 / t[:, 2] - 1 / (t[:, 2] + t[:, 3])
    for y, v in ((yi, vi), (np.array([1.0, 1.3, 0.8, 1.1]), np.array([0.5, 0.4, 0.6, 0.3]))):
        got = effects.pooled(y, v)
        w = 1 / (v + got["tau2"])
        mu = (w * y).sum() / w.sum()
        q = (w * (y - mu) ** 2).sum() / (len(y) - 1)
        half = stats.t.ppf(0.975, len(y) - 1) * np.sqrt(max(q, 1) / w.sum())
        assert got["effect"] == pytest.approx(mu)
        assert (got["ci_low_hk"], got["ci_high_hk"]) == pytest.approx((mu - half, mu + half))
    assert np.isnan(effects.pooled([2.0], [0.25])["ci_low_hk"])  # one cell: no t interval


def test_pooled_truncates_tau2_at_zero_and_is_then_the_inverse_variance_mean():
    e, v = np.array([1.0, 1.01, 0.99]), np.array([0.5, 0.4, 0.6])
    got = effects.pooled(e, v)
    w = 1 / v
    se = np.sqrt(1 / w.sum())
    assert got["tau2"] == 0 and got["i2"] == 0
    assert got["effect"] == pytest.approx((w * e).sum() / w.sum())
    assert got["ci_low"] == pytest.approx(got["effect"] - stats.norm.ppf(0.975) * se)
    # one cell with its seeds: its own t interval, as its row gives it, not a narrower normal one
    alone = effects.pooled([2.0], [0.25], seeds=[3])
    assert alone["ci_high"] == pytest.approx(2 + stats.t.ppf(0.975, 2) * 0.5)
    assert alone["p"] == pytest.approx(2 * stats.t.sf(4.0, 2))
    one = effects.pooled([2.0, np.nan], [0.25, np.nan])  # a cell without a variance is left out
    assert (
        one["cells"] == 1
        and one["effect"] == 2.0
        and one["ci_high"] == pytest.approx(2 + 1.959964 * 0.5)
    )


def test_paired_and_gap_are_means_of_per_seed_quantities_with_t_intervals():
    x, y = np.array([0.52, 0.55, 0.50, 0.57]), np.array([0.50, 0.50, 0.51, 0.52])
    d = 100 * (x / y - 1)
    got = effects.paired(x, y)
    half = stats.t.ppf(0.975, 3) * d.std(ddof=1) / 2
    assert got["effect"] == pytest.approx(d.mean()) and got["n"] == 4
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half))
    assert got["p"] == pytest.approx(stats.ttest_1samp(d, 0).pvalue)
    one = effects.paired([0.6], [0.5])
    assert one["effect"] == pytest.approx(20.0) and np.isnan(one["ci_low"]) and np.isnan(one["p"])


def test_gap_recovered_is_a_ratio_of_means_with_a_delta_method_interval():
    m, s, t = (
        np.array([0.55, 0.58, 0.54]),
        np.array([0.50, 0.50, 0.51]),
        np.array([0.60, 0.58, 0.62]),
    )
    a, b = 100 * (m - s), t - s
    r = a.mean() / b.mean()
    # the delta method written out: R's variance from the residuals a - R b
    se = (a - r * b).std(ddof=1) / np.sqrt(3) / b.mean()
    got = effects.gap_recovered(m, s, t)
    assert got["effect"] == pytest.approx(r) and got["n"] == 3
    half = stats.t.ppf(0.975, 2) * se
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((r - half, r + half))
    assert got["sd"] ** 2 / 3 == pytest.approx(se**2)
    # a seed whose teacher and student tie does not blow it up (a mean of ratios would divide by 0)
    tie = effects.gap_recovered([0.55, 0.56], [0.50, 0.52], [0.60, 0.52])
    assert tie["effect"] == pytest.approx(100 * 0.045 / 0.05)
    assert effects.gap_recovered([0.55], [0.50], [0.60])["effect"] == pytest.approx(50.0)
    # no gap on average (or a teacher below its student): nothing to recover, no verdict
    for teacher in ([0.52, 0.50], [0.50, 0.49]):
        none = effects.gap_recovered([0.55, 0.56], [0.50, 0.52], teacher)
        assert np.isnan(none["effect"]) and np.isnan(none["p"]) and np.isnan(none["ci_low"])


def test_mde_is_the_effect_a_t_test_detects_with_80_percent_power():
    """At the MDE, the power of the two-sided one-sample t-test (noncentral t, scipy) is 0.8."""
    for n, sd, alpha in ((3, 2.0, 0.05 / 10), (5, 1.0, 0.05), (10, 3.0, 0.01)):
        m = effects.mde(sd, n, alpha)
        crit = stats.t.ppf(1 - alpha / 2, n - 1)
        nc = m / sd * np.sqrt(n)
        power = stats.nct.sf(crit, n - 1, nc) + stats.nct.cdf(-crit, n - 1, nc)
        assert power == pytest.approx(0.8, abs=1e-4)
    assert effects.mde(2.0, 3, 0.005) > effects.mde(2.0, 5, 0.005) > effects.mde(2.0, 5, 0.05)
    assert np.isnan(effects.mde(np.nan, 1, 0.05))


def test_verdicts_and_where_the_paper_range_lies():
    def pool(lo, hi):
        return {"ci_low": lo, "ci_high": hi}

    assert effects.verdict(pool(0.5, 3.0), 2.7, 1, 10) == "holds overall; holds in 1 of 10 cells"
    assert effects.verdict(pool(-3.0, -0.5)).startswith(
        "does not hold (the pooled effect is negative)"
    )
    assert effects.verdict(pool(-1.0, 2.0), 2.7).startswith("does not hold (the interval excludes")
    assert effects.verdict(pool(-1.0, 5.0), 2.7).startswith(
        "inconclusive: the interval contains both 0"
    )
    assert effects.verdict(pool(-1.0, 5.0)) == "inconclusive: the interval contains 0"
    assert effects.against_range(pool(-1.0, 2.0), (2.7, 29.1)) == "above"
    assert effects.against_range(pool(30.0, 40.0), (2.7, 29.1)) == "below"
    assert effects.against_range(pool(-1.0, 40.0), (2.7, 29.1)) == "inside"
    assert effects.against_range(pool(5.0, 10.0), (2.7, 29.1)) == "around"
    assert effects.against_range(pool(-1.0, 10.0), (2.7, 29.1)) == "overlapping"


def test_without_each_pools_the_other_cells_and_skips_cells_without_a_variance():
    e, v, n = [3.0, 1.0, -2.0, 5.0], [0.5, 0.2, 1.0, np.nan], [5, 5, 3, 1]
    got = effects.without_each(e, v, n)
    assert got[3] is None  # no variance: `pooled` leaves it out, so leaving it out changes nothing
    for i in range(3):  # the definition: `pooled` on the other cells, with their seeds
        rest = [j for j in range(4) if j != i]
        want = effects.pooled([e[j] for j in rest], [v[j] for j in rest], [n[j] for j in rest])
        assert got[i] == pytest.approx(want, nan_ok=True)
    two = effects.without_each([3.0, 1.0], [0.5, 0.2], [5, 3])  # what is left is one cell alone
    assert two[0] == pytest.approx(effects.pooled([1.0], [0.2], [3]), nan_ok=True)
    assert effects.without_each([3.0], [0.5]) == [None]
