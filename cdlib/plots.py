"""Figures of the notebooks (matplotlib + seaborn), saved as PNG and PDF under figures/."""
from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib

matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import LogLocator, NullFormatter  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

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
        tmp = d / f".{name}.tmp.{ext}"
        fig.savefig(tmp, dpi=120, bbox_inches="tight", metadata={"CreationDate": None} if ext == "pdf" else None)
        os.replace(tmp, final)
        out.append(str(final))
    return out


def bars(df: pd.DataFrame, metric: str = "NDCG@10"):
    """Mean (± sd over seeds) of `metric` per label, one panel per dataset x backbone."""
    ok = df[df.status == "ok"]
    g = sns.catplot(data=ok, x="label", y=metric, col="dataset", row="backbone", kind="bar", errorbar="sd",
                    height=3, aspect=1.4, sharey=False)
    g.set_titles("{row_name} / {col_name}")
    g.tick_params(axis="x", rotation=45)
    return g.figure


def learning_curves(df: pd.DataFrame, results=None, metric: str = "valid_NDCG@10"):
    """Validation curve per epoch of each run (rows of experiments.collect), one panel per
    dataset x backbone, one line per label (mean over seeds)."""
    rows = []
    for r in df[df.status == "ok"].itertuples():
        rec = json.loads((runs.results_dir(results) / "runs" / f"{r.key}.json").read_text())
        rows += [{"dataset": r.dataset, "backbone": r.backbone, "label": r.label, "seed": r.seed,
                  "epoch": c["epoch"], metric: c[metric]} for c in rec["curve"]]
    curves = pd.DataFrame(rows)
    g = sns.relplot(data=curves, x="epoch", y=metric, hue="label", col="dataset", row="backbone", kind="line",
                    errorbar="sd", height=3, aspect=1.3, facet_kws={"sharey": False, "sharex": False})
    g.set_titles("{row_name} / {col_name}")
    return g.figure


def accuracy_vs_params(df: pd.DataFrame, metric: str = "NDCG@10"):
    """Accuracy against parameter count (log scale) per label, one panel per dataset x backbone."""
    ok = df[df.status == "ok"]
    g = sns.relplot(data=ok, x="n_params", y=metric, hue="label", style="label", col="dataset", row="backbone",
                    kind="line", marker="o", errorbar="sd", height=3, aspect=1.3,
                    facet_kws={"sharey": False, "sharex": False})
    _log_x(g)
    g.set_titles("{row_name} / {col_name}")
    return g.figure


def sensitivity(df: pd.DataFrame, metric: str = "NDCG@10"):
    """Accuracy against each varied CD parameter (labels 'name=value')."""
    ok = df[df.status == "ok"].copy()
    ok[["parameter", "value"]] = ok.label.str.split("=", expand=True)
    ok["value"] = ok["value"].astype(float)
    ok["panel"] = ok.dataset + " / " + ok.backbone
    g = sns.relplot(data=ok, x="value", y=metric, hue="panel", col="parameter", kind="line", marker="o",
                    errorbar="sd", height=3, aspect=1.1, facet_kws={"sharex": False, "sharey": False})
    _log_x(g)
    for name, ax in g.axes_dict.items():     # label the values that were run
        vals = sorted(ok.loc[ok.parameter == name, "value"].unique())
        ax.set_xticks(vals, [f"{v:g}" for v in vals])
    g.set_titles("{col_name}")
    return g.figure


def accuracy_vs_latency(df: pd.DataFrame, metric: str = "NDCG@10"):
    """Accuracy against inference latency per model size (rows with latency_ms and metric), one
    marker per device."""
    g = sns.relplot(data=df, x="latency_ms", y=metric, hue="label", size="n_params", style="device",
                    col="dataset", row="backbone", height=3, aspect=1.3,
                    facet_kws={"sharey": False, "sharex": False})
    _log_x(g)
    g.set_titles("{row_name} / {col_name}")
    return g.figure


def close(fig) -> None:
    plt.close(fig)
