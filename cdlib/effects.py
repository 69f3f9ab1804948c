"""Effects that answer "by how much, and could these runs have seen it?".

Per cell (dataset x backbone), over paired seeds: the mean of the per-seed relative differences
d_s = 100 (x_s / y_s - 1) with its 95% t interval and the one-sample t-test of d (`paired`), and
the minimum detectable effect at 80% power for that cell's seed variance and a given level (`mde`,
statsmodels' TTestPower). Across cells: the random-effects pooled estimate (`pooled`:
DerSimonian and Laird, statsmodels' `combine_effects`) with its interval and heterogeneity (I²,
tau²), and a verdict from it (`verdict`); where the pooled interval lies against the paper's range
(`against_range`); whether that verdict rests on any one cell (`without_each`).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import stats
from statsmodels.stats.meta_analysis import combine_effects
from statsmodels.stats.power import TTestPower

ALPHA = 0.05
POWER = 0.8


def mean_interval(values) -> dict:
    """Mean of `values` (one per seed) with its 95% t interval, the two-sided one-sample t-test of
    mean 0, the standard deviation and n; the interval, sd and test are NaN below two values."""
    v = np.asarray(values, dtype=float)
    n = len(v)
    mean = float(v.mean()) if n else np.nan
    if n < 2:
        return {
            "effect": mean,
            "ci_low": np.nan,
            "ci_high": np.nan,
            "p": np.nan,
            "sd": np.nan,
            "n": n,
        }
    sd = float(v.std(ddof=1))
    half = stats.t.ppf(1 - ALPHA / 2, n - 1) * sd / np.sqrt(n)
    p = float(stats.ttest_1samp(v, 0.0).pvalue) if sd > 0 else (0.0 if mean != 0 else 1.0)
    return {"effect": mean, "ci_low": mean - half, "ci_high": mean + half, "p": p, "sd": sd, "n": n}


def paired(x, y) -> dict:
    """`mean_interval` of the per-seed relative differences 100 (x_s / y_s - 1) of paired seeds."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    return mean_interval(100 * (x / y - 1))


def gap_recovered(method, student, teacher) -> dict:
    """The fraction (%) of the teacher-student gap that a method recovers over paired seeds, as a
    ratio of means, R = 100 mean(method_s - student_s) / mean(teacher_s - student_s) (0: the plain
    student, 100: the teacher), with the delta method's 95% t interval and t-test of R = 0:
    var(R) = (var(a) - 2 R cov(a, b) + R² var(b)) / (n mean(b)²) for a = 100 (method - student),
    b = teacher - student. A ratio of per-seed ratios would blow up on a seed whose teacher and
    student are close; this one does so only when they are close on average. `sd` is the
    interval's sd x sqrt(n), so that sd² / n is the variance the pooling and the MDE read. No
    teacher-student gap on average (mean(b) <= 0: the teacher no better than the plain student)
    leaves nothing to recover: all NaN."""
    m, s, t = (np.asarray(a, dtype=float) for a in (method, student, teacher))
    a, b = 100 * (m - s), t - s
    n = len(a)
    nan = {"effect": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p": np.nan, "sd": np.nan}
    if n == 0 or not b.mean() > 0:
        return {**nan, "n": n}
    ratio = float(a.mean() / b.mean())
    out = {**nan, "effect": ratio, "n": n}
    if n < 2:
        return out
    cov = np.cov(a, b, ddof=1)
    var = (cov[0, 0] - 2 * ratio * cov[0, 1] + ratio**2 * cov[1, 1]) / (n * b.mean() ** 2)
    se = float(np.sqrt(max(var, 0.0)))
    half = stats.t.ppf(1 - ALPHA / 2, n - 1) * se
    p = float(2 * stats.t.sf(abs(ratio) / se, n - 1)) if se > 0 else (0.0 if ratio else 1.0)
    return {**out, "ci_low": ratio - half, "ci_high": ratio + half, "p": p, "sd": se * np.sqrt(n)}


def mde(sd: float, n: int, alpha: float, power: float = POWER) -> float:
    """The smallest true mean (in the unit of `sd`) that a two-sided one-sample t-test over `n`
    paired seeds detects with probability `power` at level `alpha`: the standardised effect solved
    by statsmodels' TTestPower, times `sd`. NaN below two seeds or without spread."""
    if n < 2 or not np.isfinite(sd) or sd <= 0 or not np.isfinite(alpha):
        return np.nan
    return float(_standard_mde(int(n), float(alpha), float(power)) * sd)


@functools.cache
def _standard_mde(n: int, alpha: float, power: float) -> float:
    """`mde`'s standardised effect, solved once per (n, alpha, power): the claims table asks for a
    few dozen distinct ones thousands of times."""
    return TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=power)


def poolable(e, v) -> np.ndarray:
    """The cells `pooled` uses: a finite effect and a finite, positive variance."""
    e, v = np.asarray(e, dtype=float), np.asarray(v, dtype=float)
    return np.isfinite(e) & np.isfinite(v) & (v > 0)


def pooled(effects, variances, seeds=None) -> dict:
    """Random-effects pooled estimate of per-cell effects with their variances (sd² / n):
    DerSimonian-Laird (statsmodels `combine_effects(method_re="dl")`), its 95% normal interval and
    z-test p, tau², I² and the number of cells. As DerSimonian and Laird define it, tau² is
    truncated at 0 (statsmodels leaves the moment estimate negative when the cells agree more than
    their variances predict): the estimate is then the fixed-effect one, and I² is 0. Cells without
    a variance are left out; one cell is its own estimate (no heterogeneity), with its own t interval
    on seeds - 1 degrees of freedom where `seeds` (per cell) is given, not a normal one: with 2 to 5
    seeds the normal interval would be several times too narrow.

    `ci_low_hk`, `ci_high_hk`: the modified Hartung-Knapp-Sidik-Jonkman interval of the same
    estimate (Röver et al. 2015): a t interval on k - 1 degrees of freedom whose variance is
    max(q, 1) / sum(w), q = sum(w (y - mu)²) / (k - 1), w = 1 / (v + tau²); statsmodels' "wls" row
    gives q / sum(w). The normal interval is too narrow with few cells whose variances come from a
    handful of seeds; this one is the check on it (NaN below two cells)."""
    e, v = np.asarray(effects, dtype=float), np.asarray(variances, dtype=float)
    keep = poolable(e, v)
    e, v = e[keep], v[keep]
    n = None if seeds is None else np.asarray(seeds, dtype=float)[keep]
    out = {
        "effect": np.nan,
        "ci_low": np.nan,
        "ci_high": np.nan,
        "p": np.nan,
        "tau2": np.nan,
        "i2": np.nan,
        "cells": int(len(e)),
        "ci_low_hk": np.nan,
        "ci_high_hk": np.nan,
    }
    if len(e) == 0:
        return out
    if len(e) == 1:
        se = float(np.sqrt(v[0]))
        dist = stats.norm if n is None else stats.t(n[0] - 1)
        q = dist.ppf(1 - ALPHA / 2)
        return {
            **out,
            "effect": float(e[0]),
            "ci_low": float(e[0] - q * se),
            "ci_high": float(e[0] + q * se),
            "p": float(2 * dist.sf(abs(e[0]) / se)),
        }
    with np.errstate(invalid="ignore"):  # a negative tau² gives NaN intervals, not used below
        res = combine_effects(e, v, method_re="dl", alpha=ALPHA)
        frame = res.summary_frame()
    tau2 = max(float(res.tau2), 0.0)
    row = frame.loc["random effect" if tau2 > 0 else "fixed effect"]
    wls = frame.loc["random effect wls" if tau2 > 0 else "fixed effect wls"]
    half = stats.t.ppf(1 - ALPHA / 2, len(e) - 1) * max(float(wls.sd_eff), float(row.sd_eff))
    return {
        **out,
        "effect": float(row.eff),
        "ci_low": float(row.ci_low),
        "ci_high": float(row.ci_upp),
        "p": float(2 * stats.norm.sf(abs(row.eff) / row.sd_eff)),
        "tau2": tau2,
        "i2": max(float(res.i2), 0.0),
        "ci_low_hk": float(row.eff) - half,
        "ci_high_hk": float(row.eff) + half,
    }


def without_each(effects, variances, seeds=None) -> list[dict | None]:
    """The leave-one-out check of `pooled` (Viechtbauer and Cheung 2010's influence analysis, its
    first step): for each cell, the pooled estimate of the others (`pooled` on them, with their
    seeds); None for a cell `pooled` leaves out (no variance) and where no other cell is left."""
    e, v = np.asarray(effects, dtype=float), np.asarray(variances, dtype=float)
    n = None if seeds is None else np.asarray(seeds, dtype=float)
    usable = poolable(e, v)
    out = []
    for i in range(len(e)):
        rest = np.arange(len(e)) != i
        if not usable[i] or not usable[rest].any():
            out.append(None)
            continue
        out.append(pooled(e[rest], v[rest], None if n is None else n[rest]))
    return out


def verdict(pool: dict, lower: float | None = None, held: int = 0, tested: int = 0) -> str:
    """What the pooled interval says of a claim that the effect is positive (at least `lower`, the
    paper's smallest claimed gain, where it gives one): "holds overall" (the interval is above 0),
    "does not hold" (below 0, or below the paper's lower bound), else "inconclusive: ..." when it
    contains both 0 and the lower bound; with how many of the tested cells held on their own."""
    lo, hi = pool["ci_low"], pool["ci_high"]
    cells = f"; holds in {held} of {tested} cells" if tested else ""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "no pooled estimate (fewer than two seeds in every cell)"
    if lo > 0:
        return "holds overall" + cells
    if hi < 0:
        return "does not hold (the pooled effect is negative)" + cells
    if lower is not None and hi < lower:
        return (
            f"does not hold (the interval excludes the paper's smallest gain, {lower:g}%)" + cells
        )
    if lower is not None:
        return (
            f"inconclusive: the interval contains both 0 and the paper's lower bound ({lower:g}%)"
            + cells
        )
    return "inconclusive: the interval contains 0" + cells


VERDICT_KINDS = ("holds", "does not hold", "inconclusive", "no pooled estimate")


def verdict_kind(text: str) -> str:
    """What a `verdict` says, without its reasons or cell counts: one of `VERDICT_KINDS`."""
    kind = next((k for k in VERDICT_KINDS if str(text).startswith(k)), None)
    if kind is None:
        raise ValueError(f"not a verdict of effects.verdict: {text!r}")
    return kind


def against_range(pool: dict, paper_range) -> str:
    """Where a claimed range (lo, hi) lies against the pooled interval: 'above' or 'below' it (no
    overlap), 'inside' it (the range lies within the interval), 'around' it (the interval lies
    within the range), else 'overlapping' it."""
    lo, hi = paper_range
    a, b = pool["ci_low"], pool["ci_high"]
    if not (np.isfinite(a) and np.isfinite(b)):
        return "not estimated"
    if lo > b:
        return "above"
    if hi < a:
        return "below"
    if a <= lo and hi <= b:
        return "inside"
    if lo <= a and b <= hi:
        return "around"
    return "overlapping"
