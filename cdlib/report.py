"""The claims table (METHOD.md "The claims to reproduce") and the README's results section,
both computed from the tables in results/, never typed by hand."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd

from . import runs
from .experiments import PAPER_GAIN, STUDENT, compare

BACD_GAIN = {"HR": (3.5, 12.0), "NDCG": (4.9, 13.3)}   # journal extension [paper]
START, END = "<!-- results:start -->", "<!-- results:end -->"


def read_table(name: str, results=None) -> pd.DataFrame | None:
    p = runs.results_dir(results) / f"{name}.csv"
    return pd.read_csv(p) if p.is_file() else None


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjustment (Holm 1979) of a family of p-values: the i-th smallest of m is
    multiplied by (m - i + 1), made non-decreasing, capped at 1. NaN p-values (no test) stay NaN
    and do not count in m."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m = len(idx)
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    adj = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out[order] = adj
    return out


PROTOCOLS = {"sampled": "", "full": " (full)"}


def _claim_rows(claim: str, gains: pd.DataFrame, metric: str, what: str, paper_range=None) -> list[dict]:
    """Rows of one claim from a `compare` table whose metrics carry both protocols: per cell the
    gain, the paired t-test and, per protocol, the Holm-adjusted p over the claim's cells."""
    rows = []
    for g in gains.to_dict("records"):
        row = {"claim": claim, "dataset": g["dataset"], "backbone": g["backbone"], "seeds": g["seeds"]}
        for proto, sfx in PROTOCOLS.items():
            row[f"gain % ({proto})"] = g.get(f"{metric}{sfx} gain %")
            row[f"p ({proto})"] = g.get(f"{metric}{sfx} p")
        rows.append(row)
    if not rows:
        return rows
    lo, hi = paper_range if paper_range else (None, None)
    for proto in PROTOCOLS:
        adj = holm([r[f"p ({proto})"] for r in rows])
        for r, a in zip(rows, adj):
            gain = r[f"gain % ({proto})"]
            r[f"p Holm ({proto})"] = a
            r[f"held ({proto})"] = bool(gain is not None and gain > 0 and not np.isnan(a) and a < ALPHA)
            r[f"in paper range ({proto})"] = bool(lo <= gain <= hi) if paper_range and gain == gain else None
    for r in rows:
        r["measured"] = "; ".join(_measured(r, proto) for proto in PROTOCOLS) + f" [{what}, {r['seeds']} seeds]"
        r["paper"] = f"{lo}-{hi}%" if paper_range else "better"
    return rows


def _measured(r: dict, proto: str) -> str:
    gain, p = r[f"gain % ({proto})"], r[f"p ({proto})"]
    if gain is None or np.isnan(gain):
        return f"{proto}: n/a"
    test = "no test" if p is None or np.isnan(p) else f"p {p:.3g}, Holm {r[f'p Holm ({proto})']:.3g}"
    return f"{proto}: {gain:+.1f}% ({test})"


ALPHA = 0.05
CLAIM_COLUMNS = ["claim", "dataset", "backbone", "seeds", "measured",
                 *[f"{c} ({p})" for p in PROTOCOLS for c in ("gain %", "p", "p Holm", "held", "in paper range")],
                 "paper"]


def claims(results=None, close: float = 0.9) -> pd.DataFrame:
    """One row per claim and dataset x backbone, the sampled and the full-ranking result side by side:
    the gain, its paired t-test over seeds (a seed is a whole replicate: a student and the teacher it
    was distilled from), the Holm-adjusted p over the claim's cells (per protocol), and `held`:
    significant after adjustment (alpha = 0.05) and in the claimed direction. "CD-best" is the CD guide
    with the best validation NDCG@10 of the same protocol.

    close: the CD student 'comes close to the teacher' when its NDCG@10 is at least this fraction
    of its own teacher's (the mean over seeds of the per-seed ratio) [decision]."""
    rows = []
    main = read_table("03_main_runs", results)
    both = [f"{m}{sfx}" for sfx in PROTOCOLS.values() for m in ("HR@10", "NDCG@10")]
    if main is not None and (main.status == "ok").any():
        ok = main[main.status == "ok"]
        for m, key in (("HR@10", "HR"), ("NDCG@10", "NDCG")):
            g = compare_best(ok, "RD", m)
            rows += _claim_rows(f"3. CD beats RD ({m})", g, m, "best CD guide vs RD", PAPER_GAIN[key])
        for (d, b), g in ok.groupby(["dataset", "backbone"], sort=False):
            row = {"claim": "4. CD student comes close to the teacher (NDCG@10)", "dataset": d, "backbone": b,
                   "paper": f">= {100 * close:.0f}% [decision]"}
            parts = []
            for proto, sfx in PROTOCOLS.items():
                t = g[g.label == "Teacher"].set_index("seed")[f"NDCG@10{sfx}"]
                c = g[g.label == _best_label(proto)].set_index("seed")[f"NDCG@10{sfx}"]
                seeds = t.index.intersection(c.index)
                if len(seeds) == 0:
                    continue
                r = float((c[seeds] / t[seeds]).mean())
                row.update({"seeds": len(seeds), f"gain % ({proto})": 100 * (r - 1), f"held ({proto})": bool(r >= close)})
                parts.append(f"{proto}: {100 * r:.1f}% of its teacher")
            if parts:
                rows.append({**row, "measured": "; ".join(parts)})
    eff = read_table("08_efficiency", results)
    if eff is not None:
        for (d, b, _), g in eff.groupby(["dataset", "backbone", "device"], sort=False):
            t = g[g.label == "Teacher"]
            s = g[(g.label == "Student") & (g["size"] == STUDENT[b])]
            if t.empty or s.empty:
                continue
            t, main_s = t.iloc[0], s.iloc[0]
            speed = t.latency_ms / main_s.latency_ms
            held = bool(main_s.n_params < t.n_params and speed > 1)
            rows.append({"claim": "5. the student is smaller and faster", "dataset": d, "backbone": b,
                         "measured": f"{t.n_params / main_s.n_params:.1f}x fewer parameters, {speed:.1f}x faster "
                                     f"(size {main_s['size']}, {main_s.device})",
                         "held (sampled)": held, "held (full)": held, "paper": "smaller, faster"})
    size = read_table("06_size_runs", results)
    if size is not None and (size.status == "ok").any():
        for m, key in (("HR@10", "HR"), ("NDCG@10", "NDCG")):
            g = compare(size, "BACD", "Teacher", metrics=(m, f"{m} (full)"))
            rows += _claim_rows(f"6. born-again CD beats the teacher ({m})", g, m, "BACD vs its teacher",
                                BACD_GAIN[key])
    samp = read_table("04_sampling_runs", results)
    if samp is not None and (samp.status == "ok").any():
        ok = samp[samp.status == "ok"]
        for guide in sorted({lab.split("/")[1] for lab in ok.label}):
            for other in ("uniform", "topk"):
                g = compare(ok, f"rank/{guide}", f"{other}/{guide}", metrics=("NDCG@10", "NDCG@10 (full)"))
                rows += _claim_rows(f"2. rank-aware sampling beats {other} ({guide}-guided, NDCG@10)", g, "NDCG@10",
                                    f"rank vs {other}")
    out = pd.DataFrame(rows).reindex(columns=CLAIM_COLUMNS)
    return out.sort_values(["claim", "dataset", "backbone"], kind="stable", ignore_index=True)


def _best_label(protocol: str) -> str:
    return "CD-best" if protocol == "sampled" else "CD-best (full)"


def compare_best(ok: pd.DataFrame, worse: str, metric: str) -> pd.DataFrame:
    """`compare` of the best CD guide against `worse` on both protocols, each protocol's best guide
    chosen on its own validation metric (rows 'CD-best' and 'CD-best (full)' of experiments.best_cd)."""
    s = compare(ok, "CD-best", worse, metrics=(metric,))
    f = compare(ok, "CD-best (full)", worse, metrics=(f"{metric} (full)",))
    if s.empty or f.empty:
        return s if f.empty else f
    return s.merge(f.drop(columns=["better", "worse", "seeds"]), on=["dataset", "backbone"], how="outer")


def gain_over(ok: pd.DataFrame, worse: str) -> pd.DataFrame:
    """`compare_best` on HR@10 and NDCG@10 side by side, per dataset and backbone; empty while no
    cell has both the CD guides and `worse` recorded (a cell with its teachers only, say)."""
    hr, ndcg = compare_best(ok, worse, "HR@10"), compare_best(ok, worse, "NDCG@10")
    if hr.empty or ndcg.empty:
        return pd.DataFrame()
    return hr.merge(ndcg.drop(columns=["better", "worse", "seeds"]), on=["dataset", "backbone"])


def verdict_gain(gain: pd.DataFrame, metric: str = "NDCG@10") -> str:
    """One sentence: does the best CD guide beat RD, and inside the paper's range?"""
    if gain.empty:
        return "No dataset has both CD and RD runs recorded yet."
    g = gain[f"{metric} gain %"]
    lo, hi = PAPER_GAIN[metric.split("@")[0]]
    inside = ((g >= lo) & (g <= hi)).sum()
    return (f"The best CD guide beats RD in {metric} on {(g > 0).sum()} of {len(g)} dataset x backbone cells "
            f"(gains {g.min():+.1f}% to {g.max():+.1f}%; {inside} inside the paper's {lo}-{hi}%), so the claim "
            f"{'holds' if (g > 0).all() else 'does not hold everywhere'} in our runs.")


def verdict_best(runs_df: pd.DataFrame, labels, what: str, metric: str = "NDCG@10") -> str:
    """One sentence: in how many dataset x backbone cells is the best label (mean `metric`) one of `labels`?"""
    ok = runs_df[runs_df.status == "ok"]
    if ok.empty:
        return "No runs recorded yet."
    best = ok.groupby(["dataset", "backbone", "label"])[metric].mean().groupby(["dataset", "backbone"]).idxmax()
    wins = sum(b[2] in labels for b in best)
    names = ", ".join(f"{b[0]}/{b[1]}: {b[2]}" for b in best)
    return f"{what.capitalize()} is best in {wins} of {len(best)} dataset x backbone cells by {metric} ({names})."


def verdict_pairs(runs_df: pd.DataFrame, a: str, b: str, keys, what: str, metric: str = "NDCG@10") -> str:
    """One sentence: in how many cells (dataset x backbone x keys) is label a better than label b?"""
    ok = runs_df[runs_df.status == "ok"]
    if ok.empty:
        return "No runs recorded yet."
    m = ok.groupby(["dataset", "backbone", *keys, "label"])[metric].mean().unstack("label")
    if a not in m or b not in m:
        return "No paired runs recorded yet."
    m = m.dropna(subset=[a, b])
    return f"{what.capitalize()}: better by {metric} in {(m[a] > m[b]).sum()} of {len(m)} cells."


RUN_TABLES = {"00_tuning_runs": "tuning (00)", "02_teachers_runs": "teachers (02)", "03_main_runs": "main (03)",
              "04_sampling_runs": "sampling (04)", "06_size_runs": "size (06)", "07_sensitivity_runs": "sensitivity (07)"}


def coverage(results=None) -> pd.DataFrame:
    """What each table rests on: per table, dataset and backbone, the runs recorded and not (missing,
    or waiting for their tuning), the seeds and the device that trained them."""
    rows = []
    for name, what in RUN_TABLES.items():
        t = read_table(name, results)
        if t is None or t.empty:
            continue
        t = t[~t.label.astype(str).str.startswith("CD-best")]
        for (d, b), g in t.groupby(["dataset", "backbone"], sort=False):
            ok = g[g.status == "ok"]
            devices = sorted(set(ok["device"].dropna())) if "device" in ok else []
            rows.append({"table": what, "dataset": d, "backbone": b, "runs": len(ok),
                         "not recorded": int((g.status != "ok").sum()),
                         "seeds": ", ".join(map(str, sorted(ok.seed.unique()))) or "-",
                         "device": ", ".join(devices) or "-"})
    return pd.DataFrame(rows)


def _grid_runs(results=None) -> pd.DataFrame | None:
    """Every distinct run the tables list (a run named by two tables once), with its status, recorded
    epochs, and for a recorded run its wall time and seconds per epoch (validation included)."""
    need = {"label", "dataset", "backbone", "size", "seed", "method", "status", "key", "epochs_run"}
    frames = [t for t in (read_table(n, results) for n in RUN_TABLES) if t is not None and need <= set(t.columns)]
    if not frames:
        return None
    t = pd.concat(frames, ignore_index=True)
    t = t[~t.label.astype(str).str.startswith("CD-best")]
    t = t.assign(id=t.key.where(t.key.notna(), t.dataset + "/" + t.backbone + "/" + t.label.astype(str) + "/"
                                + t["size"].astype(str) + "/" + t.seed.astype(str))).drop_duplicates("id").copy()
    ok = t.status == "ok"
    t["wall"] = np.nan
    t.loc[ok, "wall"] = [(runs.read_record(k, results) or {}).get("timing", {}).get("wall_seconds", np.nan)
                         for k in t.key[ok]]
    t["per_epoch"] = t.wall / t.epochs_run
    return t


def _work(results=None) -> dict:
    """{(dataset, backbone): the work of one epoch} from table 01: users x items for CDAE's dense rows,
    training interactions for NeuMF's pairs."""
    st = read_table("01_datasets", results)
    return {} if st is None else {(r.dataset, b): float(w) for r in st.itertuples()
                                  for b, w in (("cdae", r.users * r.items), ("neumf", r.train))}


def _estimator(ok: pd.DataFrame, work: dict):
    """estimate(dataset, backbone, size, method) -> (epochs, seconds per epoch on the CPU): the medians of
    the recorded runs of the same backbone, size and method (else method) on the same dataset, else on the
    recorded dataset nearest in work, its seconds scaled by the work; (nan, nan) when none is recorded."""
    def estimate(d, b, size, m):
        for cols, key in ((["size", "method"], (size, m)), (["method"], (m,))):
            same = ok[(ok.backbone == b) & np.logical_and.reduce([ok[c] == v for c, v in zip(cols, key)])]
            refs = [r for r in same.dataset.unique() if r == d or ((r, b) in work and (d, b) in work)]
            if refs:                # this dataset, else the recorded one nearest in work, scaled
                r = d if d in refs else min(refs, key=lambda r: abs(np.log(work[(r, b)] / work[(d, b)])))
                g = same[same.dataset == r]
                return g.epochs_run.median(), g.per_epoch.median() * (1 if r == d else work[(d, b)] / work[(r, b)])
        return np.nan, np.nan
    return estimate


def compute(results=None) -> pd.DataFrame:
    """CPU time of the grid the tables list, per dataset and backbone: the wall time of every distinct
    recorded run, and an estimate for the runs not recorded (missing, or waiting for their tuning).
    The estimate is the median epochs times the median seconds per epoch (wall time, validation
    included) of the recorded runs of the same backbone, size and method (else method) on the same
    dataset, else on the recorded dataset nearest in work, scaled by the work (users x items for
    CDAE's dense rows, training interactions for NeuMF's pairs). Runs waiting for their tuning are
    counted once per table row, so two tables naming one such run count it twice."""
    t = _grid_runs(results)
    if t is None:
        return pd.DataFrame()
    ok = t[t.status == "ok"]
    estimate = _estimator(ok, _work(results))
    todo = t[t.status != "ok"]
    est = pd.Series([float(np.prod(estimate(r.dataset, r.backbone, r.size, r.method))) for r in todo.itertuples()],
                    index=todo.index, dtype=float)
    rows = []
    for (d, b), g in t.groupby(["dataset", "backbone"], sort=False):
        o = ok[(ok.dataset == d) & (ok.backbone == b)]
        rest = est[g.index[g.status != "ok"]]
        rows.append({"dataset": d, "backbone": b, "runs recorded": len(o), "CPU hours": o.wall.sum() / 3600,
                     "runs to go": len(rest), "est. CPU hours to go": rest.sum(min_count=1) / 3600})
    out = pd.DataFrame(rows)
    total = {"dataset": "all", "backbone": "", **out.drop(columns=["dataset", "backbone"]).sum(min_count=1)}
    out = pd.concat([out, pd.DataFrame([total])], ignore_index=True).astype({"runs recorded": int, "runs to go": int})
    out[["CPU hours", "est. CPU hours to go"]] = out[["CPU hours", "est. CPU hours to go"]].round(1)
    return out


def _bench_epoch(seconds: dict, backbone: str, size: int, method: str, teacher_size: int) -> float:
    """Seconds per training epoch of a kind of run, from a `cdlib.bench` record's 'seconds': the teacher,
    the student without distillation, or (RD and CD) the CD student-guided student, the dearest method."""
    epochs = {k: v for k, v in seconds.items() if " epoch" in k}
    if backbone == "cdae" and size == teacher_size:
        pick = [v for k, v in epochs.items() if k.startswith("CDAE teacher")]
    elif backbone == "cdae":
        end = "method none" if method == "none" else "CD student-guided"
        pick = [v for k, v in epochs.items() if k.startswith("CDAE student") and k.endswith(end)]
    else:
        pick = [v for k, v in epochs.items() if k.startswith("NeuMF (d=") and (f"(d={teacher_size})" in k) == (size == teacher_size)]
    return max(pick) if pick else np.nan


def device_estimate(bench_record: dict, results=None) -> dict:
    """The paper profile's training time on the device of a `cdlib.bench` record (`--out` JSON), one run
    at a time: every run the tables list, recorded or not (records say which device trained them, so a new
    device trains them all), times its epochs (recorded, else `compute`'s estimate), times the bench's
    seconds per training epoch for its kind of run (`_bench_epoch`), scaled from the bench dataset by the
    steps per epoch (users / batch) on a GPU, where a step costs its overhead whatever its size, and by the
    work (`_work`) on a CPU. Validation is left out, so this is a lower bound. Returns hours in all and per
    dataset, and what it rests on."""
    from .train import TEACHER_SIZE
    t = _grid_runs(results)
    if t is None:
        return {}
    gpu = runs.device_kind(bench_record["provenance"]["device"]) == "cuda"
    st = read_table("01_datasets", results)
    users = {} if st is None else dict(zip(st.dataset, st.users))
    work = _work(results)
    estimate = _estimator(t[t.status == "ok"], work)
    ref = bench_record["dataset"]["name"]
    seconds, epochs_of = [], []
    for r in t.itertuples():
        epochs = r.epochs_run if r.status == "ok" else estimate(r.dataset, r.backbone, r.size, r.method)[0]
        per = _bench_epoch(bench_record["seconds"], r.backbone, int(r.size), r.method, TEACHER_SIZE[r.backbone])
        if gpu:                                  # steps per epoch; the batch size is the backbone's
            scale = users.get(r.dataset, np.nan) / users.get(ref, np.nan)
        else:
            scale = work.get((r.dataset, r.backbone), np.nan) / work.get((ref, r.backbone), np.nan)
        seconds.append(epochs * per * scale)
        epochs_of.append(epochs)
    t = t.assign(device_seconds=seconds)
    per_dataset = (t.groupby("dataset", sort=False).device_seconds.sum(min_count=1) / 3600).round(2)
    return {"device": bench_record["provenance"]["device"], "bench_dataset": ref, "runs": len(t),
            "runs_without_estimate": int(t.device_seconds.isna().sum()), "epochs": float(np.nansum(epochs_of)),
            "hours": round(float(np.nansum(seconds)) / 3600, 2), "hours_per_dataset": per_dataset.to_dict()}


def device_agreement(results=None, metric: str = "NDCG@10") -> pd.DataFrame:
    """CPU against GPU: every configuration recorded on both kinds of device (records whose configurations
    differ only in `device` and in `shapes`, each device's default step), per dataset, backbone, size and
    method the mean test `metric` (sampled) of each device over the seeds recorded on both, the paired
    difference (GPU - CPU) with its standard deviation over seeds and a paired t-test, and the GPU's name.
    Empty while no configuration has records from both."""
    return _paired(results, metric, lambda r: runs.device_kind(r["provenance"]["device"]), ("device", "shapes"),
                   {"cpu": "CPU", "cuda": "GPU"}, device_column="gpu")


def shapes_agreement(results=None, metric: str = "NDCG@10") -> pd.DataFrame:
    """The dynamic step against the static one (`train.Config.shapes`: other random draws from the same
    distributions) on one device: every configuration recorded with both, as `device_agreement`."""
    return _paired(results, metric, lambda r: r["config"].get("shapes") or "dynamic", ("shapes",),
                   {"dynamic": "dynamic", "static": "static"})


def _paired(results, metric: str, side, drop: tuple, names: dict, device_column: str | None = None) -> pd.DataFrame:
    """Records grouped by their configuration less the fields `drop`, each named by side(record); for
    the configurations recorded on both sides of `names` ({side: label}, first side A, second B), per
    dataset, backbone, size and method: the seeds, B's device (as `device_column`, if given), the mean
    test `metric` (sampled) of each side, the paired difference B - A, its standard deviation and a
    paired t-test (p)."""
    from scipy import stats
    (a, label_a), (b, label_b) = names.items()
    pairs: dict = {}
    for r in runs.all_records(results):
        c = {k: v for k, v in r["config"].items() if k not in drop}
        pairs.setdefault(runs.config_key(c), {})[side(r)] = r
    rows = []
    for both in pairs.values():
        if {a, b} <= set(both):
            c = both[a]["config"]
            rows.append({"dataset": c["dataset"], "backbone": c["backbone"], "size": c["size"], "method": c["method"],
                         "seed": c["seed"], "a": both[a]["test_sampled"][metric], "b": both[b]["test_sampled"][metric],
                         "b_device": both[b]["provenance"]["device"]})
    if not rows:
        return pd.DataFrame()
    out = []
    for key, g in pd.DataFrame(rows).groupby(["dataset", "backbone", "size", "method"], sort=False):
        d = g.b - g.a
        p = stats.ttest_rel(g.b, g.a).pvalue if len(g) > 1 and d.std() > 0 else np.nan
        out.append(dict(zip(["dataset", "backbone", "size", "method"], key), seeds=len(g),
                        **({device_column: g.b_device.iloc[0]} if device_column else {}),
                        **{f"{label_a} {metric}": g.a.mean(), f"{label_b} {metric}": g.b.mean(),
                           f"{label_b} - {label_a}": d.mean(), "sd of difference": d.std(ddof=1) if len(g) > 1 else np.nan,
                           "p (paired t)": p}))
    return pd.DataFrame(out)


_POPULARITY: dict = {}


def popularity_valid_ndcg(config: dict) -> float:
    """Validation NDCG@10 (sampled) of the most-popular ranking on a run's data: the initial plateau."""
    from . import metrics, train
    key = (config["dataset"], config.get("data_sha256"), config["data_seed"], config.get("subset_users"),
           config.get("valid_negatives", "test"))
    if key not in _POPULARITY:
        c = train.Config(dataset=config["dataset"], data_seed=config["data_seed"],
                         subset_users=config.get("subset_users"), device="cpu").canonical()
        ds = train.dataset_for(c)
        _POPULARITY[key] = metrics.evaluate(metrics.Popularity(ds), ds, "valid", "sampled",
                                            valid_negatives=key[-1])["NDCG@10"]
    return _POPULARITY[key]


def violations(results=None, stall: float = 1.05, last: float = 0.1) -> pd.DataFrame:
    """Every recorded run a table uses that breaks the fair protocol (METHOD.md "A fair comparison"):
    'capped', its best validation epoch in the last `last` fraction of its epoch cap (still improving
    when cut off), or 'stalled', its best validation NDCG@10 at most `stall` x that of the most-popular
    ranking (never left the initial plateau). One row per table and run."""
    rows = []
    for name, what in RUN_TABLES.items():
        t = read_table(name, results)
        if t is None or "key" not in t:
            continue
        t = t[(t.status == "ok") & ~t.label.astype(str).str.startswith("CD-best")]
        for r in t.itertuples():
            rec = runs.read_record(r.key, results)
            if rec is None:
                continue
            c = rec["config"]
            best_valid = rec["valid_sampled"]["NDCG@10"]
            pop = rec.get("popularity_valid_NDCG@10") or popularity_valid_ndcg(c)
            problems = []
            if rec["best_epoch"] > (1 - last) * c["epochs"]:
                problems.append(f"capped (best epoch {rec['best_epoch']} of cap {c['epochs']})")
            if best_valid <= stall * pop:
                problems.append(f"stalled (valid NDCG@10 {best_valid:.4f}, popularity {pop:.4f})")
            if problems:
                rows.append({"table": what, "dataset": r.dataset, "backbone": r.backbone, "label": r.label,
                             "size": c["size"], "seed": r.seed, "best epoch": rec["best_epoch"],
                             "epochs run": rec["epochs_run"], "cap": c["epochs"], "problem": "; ".join(problems)})
    cols = ["table", "dataset", "backbone", "label", "size", "seed", "best epoch", "epochs run", "cap", "problem"]
    return pd.DataFrame(rows, columns=cols)


def _md(df: pd.DataFrame) -> str:
    """A DataFrame as a GitHub markdown table (no extra dependency)."""
    df = df.reset_index() if not isinstance(df.index, pd.RangeIndex) else df
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "---|" * len(df.columns)
    body = ["| " + " | ".join("" if (isinstance(v, float) and np.isnan(v)) else str(v) for v in row) + " |"
            for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


LABELS = ["Teacher", "Student", "RD", "CD-T", "CD-S", "CD-H", "CD-best"]


def main_markdown(main: pd.DataFrame, metrics=("HR@10", "NDCG@10")) -> pd.DataFrame:
    """The main table as one row per dataset x backbone x metric and one column per method,
    'mean ± std (seeds)'. For full-ranking metrics the column CD-best shows 'CD-best (full)', the
    guide chosen on the full-ranking validation."""
    full = all(m.endswith("(full)") for m in metrics)
    main = main[main.label != ("CD-best" if full else "CD-best (full)")].replace({"label": {"CD-best (full)": "CD-best"}})
    rows = []
    for (d, b), g in main.groupby(["dataset", "backbone"], sort=False):
        g = g.set_index("label")
        for m in metrics:
            row = {"dataset": d, "backbone": b, "metric": m}
            for lab in [x for x in LABELS if x in g.index]:
                mean, sd, n = g.loc[lab, f"{m} mean"], g.loc[lab, f"{m} std"], int(g.loc[lab, "seeds"])
                row[lab] = f"{mean:.4f}" + ("" if pd.isna(sd) else f" ± {sd:.4f}") + f" ({n})"
            rows.append(row)
    out = pd.DataFrame(rows)
    return out[["dataset", "backbone", "metric", *[x for x in LABELS if x in out.columns]]]


NCF_NEUMF_HR10 = 0.70   # NCF (He et al. 2017), ml-1m, NeuMF without pre-training, 64 predictive factors [paper]


def teacher_variants(dataset: str = "ml-1m", backbone: str = "neumf", seeds=(0, 1), results=None) -> pd.DataFrame:
    """Every recorded teacher-size run of one dataset and backbone under the fair protocol, one row per
    seed and setting (learning rate, tower width, weight decay): validation and test HR@10 and the best
    epoch; where `train.best_test_epoch` was run, the test HR@10 of the best *test* epoch (how NCF
    reports), and where it was run with valid_in_train, that of NCF's whole protocol (trained on all
    but the test item, best test epoch), so that the part of a gap to a published number that is
    protocol can be read off."""
    from .train import TEACHER_SIZE
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    analyses = {"best_test_epoch": {}, "ncf_protocol": {}}
    d = runs.results_dir(results) / "analysis"
    for kind, found in analyses.items():
        for p in sorted(d.glob(f"{kind}_*.json")) if d.is_dir() else []:
            a = json.loads(p.read_text())
            found[a["key"]] = a
    rows = []
    for r in runs.all_records(results):
        c = r["config"]
        if (c["dataset"], c["backbone"], c["method"], c["size"]) != (dataset, backbone, "none", TEACHER_SIZE[backbone]) \
                or c["seed"] not in seeds:
            continue
        if "min_epochs" not in c:
            continue
        a, n = analyses["best_test_epoch"].get(r["key"]), analyses["ncf_protocol"].get(r["key"])
        rows.append({"seed": c["seed"], "lr": c["lr"], "mlp_scale": c.get("mlp_scale"), "weight_decay": c["weight_decay"],
                     "best epoch": r["best_epoch"], "valid HR@10": r["valid_sampled"]["HR@10"],
                     "test HR@10": r["test_sampled"]["HR@10"],
                     "test HR@10 at the best test epoch": a["test_at_best_test_epoch"]["HR@10"] if a else np.nan,
                     "best test epoch": a["best_test_epoch"] if a else np.nan,
                     "test HR@10, NCF protocol": n["test_at_best_test_epoch"]["HR@10"] if n else np.nan,
                     "its best test epoch": f"{n['best_test_epoch']} of {n['epochs']}" if n else ""})
    cols = ["seed", "lr", "mlp_scale", "weight_decay", "best epoch", "valid HR@10", "test HR@10",
            "test HR@10 at the best test epoch", "best test epoch", "test HR@10, NCF protocol", "its best test epoch"]
    out = pd.DataFrame(rows, columns=cols).sort_values(["mlp_scale", "weight_decay", "lr", "seed"],
                                                   ignore_index=True)
    hr = [c for c in cols if "HR@10" in c]
    out[hr] = out[hr].astype(float).round(4)
    out["best test epoch"] = out["best test epoch"].astype("Int64")
    out["weight_decay"] = out["weight_decay"].map(lambda v: f"{v:g}")
    return out


def first_epochs_table(results=None) -> pd.DataFrame:
    """The analyses of `train.first_epochs`, one row per arm: the student and teacher seeds, the loss and
    validation NDCG@10 after the retrained epochs, the MLP tower's active units (NeuMF), and the best
    validation NDCG@10 of the recorded run of that arm, where there is one."""
    d = runs.results_dir(results) / "analysis"
    rows = []
    for p in sorted(d.glob("first_epochs_*.json")) if d.is_dir() else []:
        a = json.loads(p.read_text())
        c = a["config"]
        weight = c["lambda_kd"] if c["method"] == "cd" else c["lambda_rd"]
        for r in a["rows"]:
            rec = runs.read_record(r["key"], results)
            last = r["curve"][-1]
            rows.append({"dataset": c["dataset"], "backbone": c["backbone"],
                         "run": "plain student" if r["method"] == "none" else f"{r['method'].upper()} λ={weight:g}",
                         "lr": c["lr"], "student seed": r["student_seed"],
                         "teacher seed": "" if r["teacher_seed"] is None else r["teacher_seed"],
                         f"loss, epoch {a['epochs']}": round(last["loss"], 4),
                         f"valid NDCG@10, epoch {a['epochs']}": round(last["valid_NDCG@10"], 4),
                         "tower units active": "" if r["tower_units"] is None
                         else f"{r['tower_units_active']} of {r['tower_units']}",
                         "recorded run, best valid NDCG@10": round(rec["valid_sampled"]["NDCG@10"], 4) if rec else np.nan})
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["teacher seed"] = out["teacher seed"].astype(str)     # the plain student has none
    return out.drop_duplicates().sort_values(["dataset", "backbone", "student seed", "run", "teacher seed"],
                                             ignore_index=True)


def protocol_gap(tv: pd.DataFrame, target: float = NCF_NEUMF_HR10) -> str:
    """One sentence on the runs of `teacher_variants` that were also trained under NCF's protocol:
    their mean test HR@10 under ours and under NCF's, against the published `target`."""
    both = tv.dropna(subset=["test HR@10, NCF protocol"])
    if both.empty:
        return ""
    ours, ncf = both["test HR@10"].mean(), both["test HR@10, NCF protocol"].mean()
    runs_ = "; ".join(f"lr={r.lr:g}, mlp_scale={r.mlp_scale}, seed {r.seed}" for r in both.itertuples())
    out = (f"Over the {len(both)} runs trained both ways ({runs_}): test HR@10 {ours:.4f} under this project's "
           f"protocol, {ncf:.4f} under NCF's, so {ncf - ours:+.4f} of the gap to {target:.2f} is protocol and "
           + (f"{target - ncf:+.4f} remains." if ncf < target else f"none remains (NCF's protocol exceeds it by "
                                                                     f"{ncf - target:.4f})."))
    settings = both.groupby(["lr", "mlp_scale", "weight_decay"], sort=True)
    if settings.ngroups > 1:
        out += " Per setting: " + "; ".join(
            f"lr={lr:g}, mlp_scale={ms}" + (f", weight_decay={wd}" if float(wd) else "") +
            f" (seed{'s' if len(g) > 1 else ''} {', '.join(str(s) for s in g.seed)}): {g['test HR@10'].mean():.4f} "
            f"under ours, {g['test HR@10, NCF protocol'].mean():.4f} under NCF's" for (lr, ms, wd), g in settings) + "."
    return out


def readme_section(results=None) -> str:
    parts = [START, "", "_Generated by `notebooks/09_summary.ipynb` from `results/`; do not edit by hand._", ""]
    tuning = read_table("00_tuning", results)
    if tuning is not None and not tuning.empty:
        chosen = tuning[tuning.chosen.astype(bool)]
        parts += ["### Tuning stage: the settings chosen on validation NDCG@10 (notebook 00)", "",
                  "Equal budgets: CD and RD 6 configurations each, the teacher and the plain student 4 learning "
                  "rates, the same seeds and epoch rules; full grid in `results/00_tuning.csv`.", "",
                  _md(chosen[["dataset", "backbone", "stage", "label", "valid NDCG@10", "seeds"]]
                      .round(4).rename(columns={"label": "chosen"}).reset_index(drop=True)), ""]
    for name, proto in (("03_main", "sampled"), ("03_main_full", "full ranking")):
        main = read_table(name, results)
        if main is not None and not main.empty:
            parts += [f"### Main table (test, {proto} protocol; mean ± std over (seeds))", "",
                      "Students: CDAE H = 20, NeuMF d = 8, each method at its tuned settings. CD-T/S/H: teacher-, "
                      "student-, hybrid-guided CD; CD-best: per dataset and backbone, the CD guide with the best mean "
                      f"validation NDCG@10 of this protocol. Test numbers are reported, never chosen on.", "",
                      _md(main_markdown(main, ("HR@10", "NDCG@10") if proto == "sampled"
                                        else ("HR@10 (full)", "NDCG@10 (full)"))), ""]
    tv = teacher_variants(results=results)
    if not tv.empty:
        parts += ["### The NeuMF teacher on ml-1m against NCF's HR@10 ≈ 0.70 (seeds 0 and 1, sampled protocol)", "",
                  "Each setting tried (the tuning stage chooses among the learning rates on validation NDCG@10). "
                  "'at the best test epoch' retrains the run with each epoch's test metric tracked "
                  "(`train.best_test_epoch`): NCF reports its best *test* epoch. 'NCF protocol' also trains, as NCF "
                  "does, on all but the test item (our validation item included; "
                  "`best_test_epoch(valid_in_train=True)`, a fixed number of epochs). The difference between "
                  "'test HR@10' and these columns is protocol, not model.", "",
                  _md(tv.astype(object).where(tv.notna(), "")), ""]
        gap = protocol_gap(tv)
        if gap:
            parts += [gap, ""]
    cl = read_table("claims", results)
    if cl is not None:
        show = cl[[c for c in ("claim", "dataset", "backbone", "measured", "held (sampled)", "held (full)", "paper")
                   if c in cl]]
        parts += ["### Claims (both protocols; paired t-test over seeds, Holm-adjusted per claim and protocol)", "",
                  _md(show), ""]
    cov = coverage(results)
    if not cov.empty:
        done, empty = cov[cov.runs > 0], cov[cov.runs == 0]
        parts += ["### Coverage (what each table rests on)", "", _md(done.reset_index(drop=True)), ""]
        if not empty.empty:
            ran = set(zip(done.dataset, done.backbone))
            never = empty[[(d, b) not in ran for d, b in zip(empty.dataset, empty.backbone)]]
            partly = empty[[(d, b) in ran for d, b in zip(empty.dataset, empty.backbone)]]
            if not never.empty:
                by_ds = never.drop_duplicates(["dataset", "backbone"]).groupby("dataset", sort=False).backbone.agg(", ".join)
                parts += ["Nothing recorded yet under this protocol: " +
                          "; ".join(f"{d} ({b})" for d, b in by_ds.items()) + ".", ""]
            if not partly.empty:
                parts += ["Tables not yet run for a cell that has other runs: " +
                          "; ".join(f"{t} {d}/{b}" for t, d, b in zip(partly.table, partly.dataset, partly.backbone))
                          + ".", ""]
    cost = compute(results)
    if not cost.empty:
        parts += ["### Compute (CPU hours, one core per run)", "",
                  "The wall time of every distinct recorded run the tables use, and for the runs not recorded an "
                  "estimate from the recorded runs most like them (`report.compute`: median epochs x median seconds "
                  "per epoch, scaled by the dataset's size where none of its own is recorded). The runs were timed "
                  "two at a time on a 2-core CPU.", "", _md(cost.astype(object).where(cost.notna(), "")), ""]
        for path in sorted(runs.results_dir(results).glob("bench/*_cuda.json")):
            est = device_estimate(json.loads(path.read_text()), results)
            if est:
                parts += [f"On the GPU of `results/bench/{path.name}` ({est['device']}), the whole grid ({est['runs']} "
                          f"runs, {est['epochs']:,.0f} epochs, recorded or estimated as above) would take "
                          f"**{est['hours']:.0f} h** of training epochs one run at a time at that bench's seconds per "
                          "epoch, scaled by the steps per epoch (`report.device_estimate`, validation left out).", ""]
    steps = shapes_agreement(results)
    if not steps.empty:
        parts += ["### The GPU's static step against the CPU's dynamic one", "",
                  "Configurations trained with both steps on one device (`train.Config.shapes`: the static step, "
                  "the default on a GPU, draws other numbers from the same distributions); test NDCG@10 (sampled), "
                  "paired over seeds (`report.shapes_agreement`, notebook 09).", "",
                  _md(steps.round(4).replace(-0.0, 0.0)), ""]
    bad = violations(results)
    parts += ["### Runs that break the fair protocol", "",
              "Runs used by a table whose best validation epoch lies in the last 10% of the epoch cap (capped), "
              "or whose validation NDCG@10 is at most 1.05x that of the most-popular ranking (stalled on the "
              "initial plateau); `report.violations`.", "",
              _md(bad) if not bad.empty else "None.", ""]
    v1 = read_table("v1/03_main", results)
    if v1 is not None:
        parts += ["### Before the fair protocol (v1, superseded)", "",
                  "The first reproduction's main table (`results/v1/`: 200-epoch cap, RD weights renormalised per "
                  "user, validation on the test negatives, every student distilled from teacher seed 0, CD-best "
                  "chosen on test). Kept for comparison only; see [Protocol](#protocol).", "",
                  _md(main_markdown(v1)), ""]
    parts.append(END)
    return "\n".join(parts)


def update_readme(results=None, readme=None) -> bool:
    """Replace the README's results section; returns whether it changed."""
    path = runs.readme_path(readme)
    text = path.read_text()
    new = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: readme_section(results), text, flags=re.S)
    if new != text:
        runs.write_atomic(path, new)
    return new != text
