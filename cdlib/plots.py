"""Figures of the notebooks (matplotlib + seaborn), saved as PNG and PDF under figures/."""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib

matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import LogLocator, NullFormatter  # noqa: E402
from scipy import stats  # noqa: E402

from . import runs  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")


def _log_x(grid) -> None:
    """Log-scale x axes with labels on the decades only (minor labels overlap)."""
    for ax in grid.axes.flat:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10))
        ax.xaxis.set_minor_formatter(NullFormatter())


def figures_dir(path=None) -> Path:
    """`path`, else $CDLIB_FIGURES, else the repository's figures/."""
    return Path(path or os.environ.get("CDLIB_FIGURES") or runs.REPO / "figures")


def save(fig, name: str, directory=None) -> list[str]:
    """Save `fig` as <name>.png and <name>.pdf (each written beside, then renamed)."""
    d = figures_dir(directory)
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in ("png", "pdf"):
        final = d / f"{name}.{ext}"
        tmp = (
            d / f".{name}.tmp{os.getpid()}.{ext}"
        )  # per process: notebooks of two datasets may draw the same figure
        fig.savefig(
            tmp,
            dpi=120,
            bbox_inches="tight",
            metadata={"CreationDate": None} if ext == "pdf" else None,
        )
        os.replace(tmp, final)
        out.append(str(final))
    return out


def dots(
    df: pd.DataFrame, metric: str = "NDCG@10", relative_to: str | None = "Teacher", labels=None
):
    """Mean of `metric` per label with its 95% interval over seeds (t distribution), one panel per
    dataset x backbone that has runs (no empty panels). relative_to: show each run as % of the run
    of that label with the same seed (a seed is a paired replicate: a student and its own teacher),
    so that differences of a few percent are visible; None: absolute values, the axis not from zero."""
    ok = df[df.status == "ok"]
    if labels is not None:
        ok = ok[ok.label.isin(labels)]
    if relative_to is not None and (ok.label == relative_to).any():
        ref = ok[ok.label == relative_to].set_index(["dataset", "backbone", "seed"])[metric]
        ok = ok[ok.label != relative_to].join(
            ref.rename("_ref"), on=["dataset", "backbone", "seed"]
        )
        ok = ok.assign(value=100 * ok[metric] / ok["_ref"]).dropna(subset=["value"])
        xlabel = f"{metric}, % of the same seed's {relative_to.lower()}"
    else:
        ok, xlabel, relative_to = ok.assign(value=ok[metric]), metric, None
    cells = list(ok.groupby(["dataset", "backbone"], sort=False).groups)
    n = max(1, len(cells))
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(
        rows, cols, figsize=(4.2 * cols, rows * (0.45 * ok.label.nunique() + 1.2)), squeeze=False
    )
    order = list(dict.fromkeys(ok.label))
    for ax, (d, b) in zip(axes.flat, cells):
        g = ok[(ok.dataset == d) & (ok.backbone == b)].groupby("label")["value"]
        m, sd, k = g.mean().reindex(order), g.std().reindex(order), g.size().reindex(order)
        half = [
            stats.t.ppf(0.975, c - 1) * s / np.sqrt(c) if c > 1 else 0.0
            for s, c in zip(sd, k.fillna(0))
        ]
        y = np.arange(len(order))
        ax.errorbar(m.to_numpy(), y, xerr=half, fmt="o", capsize=3, color="C0")
        if relative_to:
            ax.axvline(100, color="grey", lw=1, ls="--")
        ax.set_yticks(y, order)
        ax.invert_yaxis()
        ax.set_title(f"{b} / {d} ({int(k.max())} seeds)", fontsize=10)
        ax.set_xlabel(xlabel, fontsize=9)
    for ax in list(axes.flat)[len(cells) :]:
        ax.remove()
    fig.tight_layout()
    return fig


def _panels(
    data: pd.DataFrame, x: str, y: str, log_x: bool = False, row="backbone", height=3, **kw
):
    """One panel per `row` (backbone) x dataset (seaborn's relplot, axes not shared), x on a log
    scale when asked; returns the figure."""
    g = sns.relplot(
        data=data,
        x=x,
        y=y,
        col="dataset",
        row=row,
        height=height,
        aspect=1.3,
        facet_kws={"sharey": False, "sharex": False},
        **kw,
    )
    if log_x:
        _log_x(g)
    g.set_titles("{row_name} / {col_name}")
    return g.figure


def _curves(df: pd.DataFrame, results, metric: str, columns: tuple) -> pd.DataFrame:
    """The recorded learning curve of each run of `df` (rows of tables.collect) whose status is
    "ok": a row per run and epoch, with the run's `columns` and `metric` at that epoch."""
    rows = []
    for r in df[df.status == "ok"].itertuples():
        rec = json.loads(runs.record_path(r.key, results).read_text())
        own = {c: getattr(r, c) for c in columns}
        rows += [{**own, "epoch": c["epoch"], metric: c[metric]} for c in rec["curve"]]
    return pd.DataFrame(rows, columns=[*columns, "epoch", metric])


def learning_curves(df: pd.DataFrame, results=None, metric: str = "valid_NDCG@10"):
    """Validation curve per epoch of each run (rows of tables.collect), one panel per
    dataset x backbone, one line per label (mean over seeds)."""
    data = _curves(df, results, metric, ("dataset", "backbone", "label", "seed"))
    return _panels(data, "epoch", metric, hue="label", kind="line", errorbar="sd")


def tuning_curves(df: pd.DataFrame, results=None, stages=("Teacher", "Student")):
    """The tuning stage's learning curves (`df`: its run table, results/00_tuning_runs.csv or a
    profile's): validation NDCG@10 per epoch of every run of `stages`, a line per run coloured by
    its learning rate (log scale), each seed its own line, so that a run early stopping ended before
    its curve settled shows; a row of panels per backbone and stage, a column per dataset."""
    metric = "valid_NDCG@10"
    t = df[df.stage.isin(stages)]
    data = _curves(t, results, metric, ("dataset", "backbone", "stage", "label", "seed"))
    data["lr"] = data.label.str.extract(r"lr=([0-9.e-]+)", expand=False).astype(float)
    data["panel"] = data.backbone + " · " + data.stage
    fig = _panels(
        data,
        "epoch",
        metric,
        row="panel",
        height=2.4,
        hue="lr",
        hue_norm=matplotlib.colors.LogNorm(),
        palette="viridis",
        units="seed",
        estimator=None,
        kind="line",
        linewidth=0.9,
    )
    for ax in fig.axes:
        drawn = any(len(line.get_xdata()) for line in ax.lines)  # (the legend adds empty lines)
        if not drawn:
            ax.text(0.5, 0.5, "not recorded yet", ha="center", va="center", transform=ax.transAxes)
    return fig


def accuracy_vs_params(df: pd.DataFrame, metric: str = "NDCG@10"):
    """Accuracy against parameter count (log scale) per label, one panel per dataset x backbone."""
    return _panels(
        df[df.status == "ok"],
        "n_params",
        metric,
        log_x=True,
        hue="label",
        style="label",
        kind="line",
        marker="o",
        errorbar="sd",
    )


def sensitivity(df: pd.DataFrame, metric: str = "NDCG@10"):
    """Accuracy against each varied CD parameter (labels 'name=value')."""
    ok = df[df.status == "ok"].copy()
    ok[["parameter", "value"]] = ok.label.str.split("=", expand=True)
    ok["value"] = ok["value"].astype(float)
    ok["panel"] = ok.dataset + " / " + ok.backbone
    g = sns.relplot(
        data=ok,
        x="value",
        y=metric,
        hue="panel",
        col="parameter",
        kind="line",
        marker="o",
        errorbar="sd",
        height=3,
        aspect=1.1,
        facet_kws={"sharex": False, "sharey": False},
    )
    _log_x(g)
    for name, ax in g.axes_dict.items():  # label the values that were run
        vals = sorted(ok.loc[ok.parameter == name, "value"].unique())
        ax.set_xticks(vals, [f"{v:g}" for v in vals])
    g.set_titles("{col_name}")
    return g.figure


def accuracy_vs_latency(df: pd.DataFrame, metric: str = "NDCG@10"):
    """Accuracy against inference latency per model size (rows with latency_ms and metric), one
    marker per device."""
    return _panels(
        df, "latency_ms", metric, log_x=True, hue="label", size="n_params", style="device"
    )


def forest_name(claim: str) -> str:
    """The file name of a claim's forest plot: 09_forest_ and the claim's words, lower case."""
    words = "".join(c if c.isalnum() else " " for c in claim.lower()).split()
    return "09_forest_" + "_".join(words)[:80]


def remove_stale_forests(table: pd.DataFrame, directory=None) -> list[str]:
    """Delete the forest plots (`forest_name`, png and pdf) of claims that `table` (`report.claims`)
    no longer has, so that a renamed claim leaves no orphan; returns the names removed."""
    keep = {forest_name(c) for c in table.claim.unique()}
    stale = sorted(p for p in figures_dir(directory).glob("09_forest_*") if p.stem not in keep)
    for p in stale:
        p.unlink()
    return [p.name for p in stale]


def forest(table: pd.DataFrame, claim: str):
    """A forest plot of one claim of `report.claims`, one panel per protocol: each dataset x backbone
    cell's effect (%) with its 95% interval, the pooled random-effects estimate as a diamond, 0
    marked, and the paper's claimed range shaded where it gives one."""
    g = table[table.claim == claim]
    cells, pool = g[g.dataset != "pooled"], g[g.dataset == "pooled"]
    paper = str(g.paper.iloc[0]).rstrip("%")
    shade = [float(x) for x in paper.split("-")] if paper[:1].isdigit() else None
    y = np.arange(len(cells), 0, -1, dtype=float)
    fig, axes = plt.subplots(
        1, 2, figsize=(10, 0.32 * len(cells) + 1.9), sharey=True, squeeze=False
    )
    for ax, proto in zip(axes[0], ("sampled", "full")):
        e = cells[f"effect % ({proto})"].to_numpy(float)
        lo, hi = (cells[f"CI {k} ({proto})"].to_numpy(float) for k in ("low", "high"))
        ax.errorbar(e, y, xerr=[e - lo, hi - e], fmt="o", color="k", ms=4, capsize=2, lw=1)
        if not pool.empty and np.isfinite(pool[f"CI low ({proto})"].iloc[0]):
            m, a, b = (
                float(pool[f"{k} ({proto})"].iloc[0]) for k in ("effect %", "CI low", "CI high")
            )
            ax.fill([a, m, b, m], [0, 0.3, 0, -0.3], color="C0", label="pooled (random effects)")
        if shade:
            ax.axvspan(*shade, color="C2", alpha=0.15, label="paper's range")
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_title(f"{proto} protocol", fontsize=10)
        ax.set_xlabel("effect (%)")
    axes[0, 0].set_yticks(
        [*y, 0], [f"{d} / {b}" for d, b in zip(cells.dataset, cells.backbone)] + ["pooled"]
    )
    axes[0, 0].legend(loc="best", fontsize=8)
    fig.suptitle(claim, fontsize=10)
    fig.tight_layout()
    return fig


def verdict_change(change: pd.DataFrame):
    """Each claim's pooled effect (%) with its 95% interval before (the paper profile) and after
    (`next`), on the cells both pool it on (`before_after.verdict_change`), one panel per protocol;
    the claims in % of the teacher - student gap below the others, on their own scale. A claim that
    no cell pools under both on a protocol has no interval there."""
    gap = change.claim.str.contains("gap recovered")
    groups = [
        (g, x)
        for g, x in ((change[~gap], "effect (%)"), (change[gap], "gap recovered (%)"))
        if not g.empty
    ]
    fig, axes = plt.subplots(
        len(groups),
        2,
        figsize=(13, 0.36 * len(change) + 1.2 * len(groups) + 0.6),
        squeeze=False,
        sharey="row",
        gridspec_kw={"height_ratios": [len(g) + 1 for g, _ in groups]},
    )
    for row, (g, xlabel) in zip(axes, groups):
        y = np.arange(len(g), 0, -1, dtype=float)
        for ax, proto in zip(row, ("sampled", "full")):
            for when, dy, style in (
                (
                    "before",
                    0.17,
                    {"color": "grey", "mfc": "white", "label": "before (paper profile)"},
                ),
                ("after", -0.17, {"color": "C0", "label": "after (next)"}),
            ):
                e, lo, hi = (
                    g[f"{proto}: {k} {when}"].to_numpy(float)
                    for k in ("effect %", "CI low", "CI high")
                )
                ax.errorbar(
                    e, y + dy, xerr=[e - lo, hi - e], fmt="o", ms=4, capsize=2, lw=1, **style
                )
            ax.axvline(0, color="grey", lw=0.8)
            ax.set_xlabel(xlabel)
        row[0].set_yticks(y, [f"{c} [{n}]" for c, n in zip(g.claim, g["sampled: cells"])])
    for ax, proto in zip(axes[0], ("sampled", "full")):
        ax.set_title(f"{proto} protocol", fontsize=10)
    axes[0, 1].legend(loc="lower right", fontsize=8)
    fig.suptitle(
        "Each claim before and after, pooled over the cells both profiles pool it on "
        "([n]: cells, sampled protocol)",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def soft_labels(records: list[dict]):
    """Per CD teacher (`softlabels.analyse`): its mean soft label at each rank of its top missing
    items (solid) beside how often the item there is the user's held-out validation item (dotted),
    on a log scale; and the share of users whose soft label there is above 1/2."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for a, color in zip(records, sns.color_palette(n_colors=max(len(records), 1))):
        per, c = a["per_rank"], a["config"]
        rank = np.arange(1, a["max_rank"] + 1)
        name = f"{a['dataset']['name']} {c['backbone']}, T = {c['temperature']:g}"
        left.plot(rank, per["soft_label"], color=color, label=f"{name}: soft label")
        left.plot(rank, per["valid_item_rate"], color=color, ls=":", label=f"{name}: valid item")
        right.plot(rank, per["soft_label_above_half"], color=color, label=name)
    left.set(yscale="log", xlabel="teacher's rank among the user's missing items", ylabel="mean")
    left.set_title("soft label s(z/T) and held-out item rate")
    right.set(xlabel="teacher's rank among the user's missing items", ylabel="share of users")
    right.set_title("soft label above 1/2")
    left.legend(fontsize=7)
    fig.tight_layout()
    return fig


def close(fig) -> None:
    plt.close(fig)
