"""Paired comparisons of the same configurations run two ways, over the seeds recorded both ways:
static against dynamic shapes (`shapes_agreement`), a sparse or deferred step against the dense
one (`step_agreement`), the feature-major refresh against the item-major one (`tower_agreement`),
and GPU against CPU (`device_agreement`). Each pairs the records whose configurations differ only in
that choice (`_paired`) and reads their test metric (sampled). Before any training, the two towers'
rankings of one trained model (`ranking_agreement`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from . import runs
from .config import keyed_fields, recorded


def device_agreement(results=None, metric: str = "NDCG@10") -> pd.DataFrame:
    """CPU against GPU: every configuration recorded on both kinds of device (records whose configurations
    differ only in `device` and in `shapes`, each device's default step), per dataset, backbone, size and
    method the mean test `metric` (sampled) of each device over the seeds recorded on both, the paired
    difference (GPU - CPU) with its standard deviation over seeds and a paired t-test, and the GPU's name.
    Empty while no configuration has records from both."""
    return _paired(
        results,
        metric,
        lambda r: runs.device_kind(r["provenance"]["device"]),
        ("device", "shapes"),
        {"cpu": "CPU", "cuda": "GPU"},
        device_column="gpu",
    )


def shapes_agreement(results=None, metric: str = "NDCG@10") -> pd.DataFrame:
    """The dynamic step against the static one (`Config.shapes`: other random draws from the same
    distributions) on one device: every configuration recorded with both, as `device_agreement`."""
    return _paired(
        results,
        metric,
        lambda r: recorded(r["config"], "shapes"),
        ("shapes",),
        {"dynamic": "dynamic", "static": "static"},
    )


def tower_agreement(
    results=None,
    metric: str = "NDCG@10",
    margin: float | None = None,
    keep_differences: bool = False,
) -> pd.DataFrame:
    """A NeuMF student's refresh with the feature-major tower against the item-major one
    (`Config.refresh_tower`: the same scores up to rounding) on one device: every configuration
    recorded with both, as `step_agreement` (its criterion and equivalence test, item-major the
    reference)."""
    out = _paired(
        results,
        metric,
        lambda r: recorded(r["config"], "refresh_tower") or "item-major",
        ("refresh_tower",),
        {"item-major": "item-major", "feature-major": "feature-major"},
        differences=True,
        shown=("sampling",),
    )
    return _equivalence(out, "item-major", "feature-major", metric, margin, keep_differences)


def tower_equivalence(results=None, metric: str = "NDCG@10", margin: float | None = None):
    """`tower_agreement` pooled per dataset, as `step_equivalence`."""
    t = tower_agreement(results, metric, margin, keep_differences=True)
    return _pooled(t, "item-major", "feature-major", metric, margin)


@torch.no_grad()
def ranking_agreement(model, positives, users: torch.Tensor, k: int = 100) -> dict:
    """A NeuMF's top-k missing items of each of `users` ranked item-major (`score_all`) and
    feature-major (`score_all_feature_major`), as a refresh ranks them (`samplers.top_missing`):
    the share of users whose lists are identical, the share of list positions that differ, the
    largest score (in absolute value: the scale of float32's rounding), the largest difference of
    two scores, and the largest item-major score gap between the two items at
    a differing position (0: a tie broken otherwise; within rounding: a near-tie ordered otherwise)."""
    from .samplers import masked_scores

    a = masked_scores(model.score_all(users), positives, users)
    b = masked_scores(model.score_all_feature_major(users), positives, users)
    ia, ib = a.topk(k, dim=1).indices, b.topk(k, dim=1).indices
    differ = ia != ib
    finite = torch.isfinite(a)
    gap = (a.gather(1, ia) - a.gather(1, ib)).abs()[differ]
    return {
        "users": len(users),
        "k": k,
        "identical lists": float((~differ).all(1).float().mean()),
        "positions differing": float(differ.float().mean()),
        "largest score": float(a[finite].abs().max()),  # the scale of the rounding
        "largest score difference": float((a - b)[finite].abs().max()),
        "largest gap at a difference": float(gap.max()) if len(gap) else 0.0,
    }


# The equivalence margin of the step agreement, relative to the dense step's mean: half the paper's
# smallest claimed gain of CD over RD (2.7%, report.PAPER_GAIN), so that a step within it cannot
# make or unmake that claim alone [decision]
EQUIVALENCE_MARGIN = 0.0135
ALPHA = 0.05


def step_agreement(
    results=None,
    metric: str = "NDCG@10",
    step: str = "sparse",
    margin: float = EQUIVALENCE_MARGIN,
    keep_differences: bool = False,
) -> pd.DataFrame:
    """A sparse step (`Config.step`: "sparse", a lazy Adam, other training; "deferred", Adam's own
    training) against the dense one on one device: every configuration recorded with both, as
    `device_agreement`, and
    - "within 1 sd": whether `step`'s mean is within one standard deviation (over the paired seeds)
      of the dense step's, the criterion issue 22 proposed for the agreement study (NaN:
      fewer than 2 seeds). Two steps that train alike fail it by chance: for n paired seeds the
      difference of means has sd sigma * sqrt(2 / n) and the criterion uses the sample sd, so with
      independent seeds P(fail) = P(|t_{n-1}| > sqrt(n / 2)): 19% at n = 5, 50% at n = 2;
    - "TOST p": the equivalence test of the paired differences (two one-sided t-tests, Schuirmann
      1987) against +-`margin` x the dense mean, and "equivalent": TOST p < 0.05, the question the
      criterion means to ask (NaN: fewer than 2 seeds); with `keep_differences`, the paired
      differences (a Series over the seeds per row)."""
    out = _paired(
        results,
        metric,
        lambda r: recorded(r["config"], "step"),
        ("step",),
        {"dense": "dense", step: step},
        differences=True,
    )
    return _equivalence(out, "dense", step, metric, margin, keep_differences)


def _equivalence(
    out: pd.DataFrame, a: str, b: str, metric: str, margin: float | None, keep_differences: bool
) -> pd.DataFrame:
    """`_paired`'s table (with its differences) of reference `a` against `b`, with "within 1 sd",
    "TOST p" and "equivalent" (against +-`margin`, default `EQUIVALENCE_MARGIN`, x a's mean) as
    `step_agreement` describes them."""
    if out.empty:
        return out
    margin = EQUIVALENCE_MARGIN if margin is None else margin
    sd = out[f"sd {a} {metric}"]  # (undecided, NaN, for a configuration with fewer than 2 seeds)
    out["within 1 sd"] = (out[f"{b} - {a}"].abs() <= sd).astype(object).where(sd.notna())
    diffs = out.pop("differences")
    out["TOST p"] = [tost(d.to_numpy(), margin * m) for d, m in zip(diffs, out[f"{a} {metric}"])]
    out["equivalent"] = (out["TOST p"] < ALPHA).astype(object).where(out["TOST p"].notna())
    if keep_differences:
        out["differences"] = diffs
    return out


def tost(d: np.ndarray, bound: float) -> float:
    """The p-value of the equivalence test (two one-sided t-tests) that the mean of `d` lies within
    +-`bound`: the larger of the two one-sided p-values; NaN for fewer than 2 values; with no spread,
    0 or 1 as the constant value lies inside or not."""
    from scipy import stats

    if len(d) < 2:
        return np.nan
    if np.ptp(d) == 0:
        return 0.0 if abs(d[0]) < bound else 1.0
    lower = stats.ttest_1samp(d, -bound, alternative="greater").pvalue
    upper = stats.ttest_1samp(d, bound, alternative="less").pvalue
    return float(max(lower, upper))


def step_equivalence(
    results=None, metric: str = "NDCG@10", step: str = "sparse", margin: float = EQUIVALENCE_MARGIN
) -> pd.DataFrame:
    """The step agreement pooled per dataset: for the seeds that every configuration of the dataset
    has with both steps, each seed's relative difference (`step` - dense) / dense mean averaged over
    the configurations (a seed is a whole replicate: its students share its teacher), then over the
    seeds its mean with a 90% t interval (the interval of a TOST at 0.05: equivalent exactly when it
    lies within +-`margin`), and the equivalence test (`tost`) against +-`margin`. A
    configuration-by-configuration test has little power with 5 seeds; this asks whether the step
    moves a dataset's results as a whole."""
    t = step_agreement(results, metric, step, margin, keep_differences=True)
    return _pooled(t, "dense", step, metric, margin)


def _pooled(t: pd.DataFrame, a: str, b: str, metric: str, margin: float | None) -> pd.DataFrame:
    """An agreement table with its differences (reference `a` against `b`) pooled per dataset, as
    `step_equivalence` describes."""
    from scipy import stats

    margin = EQUIVALENCE_MARGIN if margin is None else margin
    if t.empty:
        return pd.DataFrame()
    rows = []
    for d, g in t.groupby("dataset", sort=False):
        rel = pd.DataFrame(
            {i: r.differences / r[f"{a} {metric}"] for i, r in g.iterrows()}
        ).dropna()  # seeds x configurations, the seeds every configuration has
        x = rel.mean(axis=1).to_numpy()
        n = len(x)
        half = stats.t.ppf(1 - ALPHA, n - 1) * x.std(ddof=1) / np.sqrt(n) if n > 1 else np.nan
        rows.append(
            {
                "dataset": d,
                "configurations": rel.shape[1],
                "seeds": n,
                f"{b} - {a} %": 100 * x.mean() if n else np.nan,
                "90% CI low %": 100 * (x.mean() - half) if n else np.nan,
                "90% CI high %": 100 * (x.mean() + half) if n else np.nan,
                "margin %": 100 * margin,
                "TOST p": tost(x, margin),
                "equivalent": (tost(x, margin) < ALPHA) if n > 1 else np.nan,
            }
        )
    return pd.DataFrame(rows)


def _less_seed(c: dict, drop: tuple = ()) -> str:
    """The key of a configuration over its seeds: without its seed, and without its teacher's seed
    where that is its own (a seed is a whole replicate), nor the fields `drop`; a field at the value
    its absence means (`config.ABSENT_MEANS`) left out, as older records leave it."""
    own = c.get("teacher_seed") == c["seed"]
    return runs.config_key(
        {
            k: v
            for k, v in keyed_fields(c).items()
            if k not in (*drop, "seed") and not (own and k == "teacher_seed")
        }
    )


def _paired(
    results,
    metric: str,
    side,
    drop: tuple,
    names: dict,
    device_column: str | None = None,
    differences: bool = False,
    shown: tuple = (),
) -> pd.DataFrame:
    """Records grouped by their configuration less the fields `drop`, each named by side(record); for
    the configurations recorded on both sides of `names` ({side: label}, first side A, second B), per
    configuration (its dataset, backbone, size, method and CD guide shown, and the fields `shown`):
    the seeds, B's device (as `device_column`, if given), the mean test `metric` (sampled) of each
    side, A's standard deviation over the seeds, the paired difference B - A, its standard deviation
    and a paired t-test (p); and with `differences` the paired differences themselves (a Series over
    the seeds per row)."""
    from scipy import stats

    (a, label_a), (b, label_b) = names.items()
    pairs: dict = {}
    for r in runs.all_records(results):
        c = {k: v for k, v in keyed_fields(r["config"]).items() if k not in drop}
        pairs.setdefault(runs.config_key(c), {})[side(r)] = r
    rows = []
    for both in pairs.values():
        if {a, b} <= set(both):
            c = both[a]["config"]
            rows.append(
                {
                    "dataset": c["dataset"],
                    "backbone": c["backbone"],
                    "size": c["size"],
                    "method": c["method"],
                    "guide": c.get("guide") or "",
                    **{k: c.get(k) or "" for k in shown},
                    "seed": c["seed"],
                    "config": _less_seed(c, drop),
                    "a": both[a]["test_sampled"][metric],
                    "b": both[b]["test_sampled"][metric],
                    "b_device": both[b]["provenance"]["device"],
                }
            )
    if not rows:
        return pd.DataFrame()
    out = []
    described = ["dataset", "backbone", "size", "method", "guide", *shown]
    for _, g in pd.DataFrame(rows).groupby("config", sort=False):  # a configuration, its seeds
        d = g.b - g.a
        p = stats.ttest_rel(g.b, g.a).pvalue if len(g) > 1 and d.std() > 0 else np.nan
        out.append(
            dict(
                g[described].iloc[0],
                seeds=len(g),
                **({device_column: g.b_device.iloc[0]} if device_column else {}),
                **{
                    f"{label_a} {metric}": g.a.mean(),
                    f"sd {label_a} {metric}": g.a.std(ddof=1) if len(g) > 1 else np.nan,
                    f"{label_b} {metric}": g.b.mean(),
                    f"{label_b} - {label_a}": d.mean(),
                    "sd of difference": d.std(ddof=1) if len(g) > 1 else np.nan,
                    "p (paired t)": p,
                },
                **(
                    {"differences": pd.Series(d.to_numpy(), g.seed.to_numpy())}
                    if differences
                    else {}
                ),
            )
        )
    return pd.DataFrame(out).sort_values(  # teachers before their students, per cell
        described,
        ascending=[True, True, False, True, True, *(True for _ in shown)],
        ignore_index=True,
    )
