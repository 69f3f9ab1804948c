"""The run tables the claims read (`report.claims`), as the training notebooks write them:
notebook 03's (`main_runs`, with CD-best and iALS's reference rows), 04's and 06's; built by
training what is missing, or from a profile's records alone (`recorded_tables`, for a profile
still being recorded, such as issue 23's `next`)."""

from __future__ import annotations

import dataclasses

import pandas as pd

from . import before_after, ials, report
from .config import Execution
from .experiments import main_grid, notebook_grid
from .profiles import PROFILES, Profile
from .runs import results_dir
from .tables import best_cd, collect, save_table
from .tuning import read_once, tune_all, tuning_table


def main_runs(
    p: Profile,
    results=None,
    execution: Execution | None = None,
    progress: bool = True,
    reference: str = "all",
) -> pd.DataFrame:
    """Notebook 03's run table under `p`: `main_grid`'s runs (trained or read as `execution` says)
    with their CD-best rows (`tables.best_cd`), then iALS's reference rows (`ials.main_rows`) on
    every dataset (`reference="all"`) or on those with a recorded run in the table ("recorded":
    reading the others' would load their data for rows that say nothing yet)."""
    runs = best_cd(collect(main_grid(p, results), results, execution, progress))
    if reference == "recorded":
        some = set(runs.dataset[runs.status == "ok"])
        p = dataclasses.replace(p, datasets=[d for d in p.datasets if d in some])
    return pd.concat([runs, ials.main_rows(p, results, execution)], ignore_index=True)


# the run tables the claims read (`report.claims`), by the grid of the training notebook behind each
CLAIM_TABLES = {
    "03_main_runs": "03_main",
    "04_sampling_runs": "04_sampling",
    "06_size_runs": "06_student_size",
}


def recorded_tables(p: Profile, results=None) -> dict[str, pd.DataFrame]:
    """The run tables of profile `p` that the claims read (`CLAIM_TABLES`), as its notebooks write
    them, from the records alone: nothing is trained, a run not recorded shows as 'missing' and one
    waiting for its tuning as 'untuned'; the main table is `main_runs` with iALS's rows where it has
    a recorded run. For a profile whose tables are not the repository's (issue 23's `next`, while it
    is recorded): `report.claims` on them says what its recorded runs say so far."""
    off = Execution(train=False)
    q = dataclasses.replace(p, execution=off)
    return {
        name: main_runs(q, results, off, False, reference="recorded")
        if nb == "03_main"
        else collect(notebook_grid(nb, q, results), results, off, False)
        for name, nb in CLAIM_TABLES.items()
    }


def save_recorded_tables(
    p: Profile, results=None, folder: str | None = None, beside: bool = True
) -> str:
    """`recorded_tables` and the claims on them (`report.claims`), and the tuning stage's runs and
    table from the records (`tuning.tune_all`, notebook 00's, for `audit.violations`), written under
    results/<folder>/ (default: the profile's name) as the notebooks write their tables; returns
    the folder, for `runs.read_table(f"{folder}/claims")`. Beside them (`beside`), each claim's
    verdict under the repository's own tables and under these, on the cells both pool it on
    (`before_after.verdict_change`: "verdict_change"), and the main table's test NDCG@10 under both
    (`before_after.main_change`: "main_change")."""
    folder = folder or p.name
    out = results_dir(results) / folder
    with read_once():  # each cell's tuning read once, not once per table
        for name, df in recorded_tables(p, results).items():
            save_table(df, name, out)
        off = dataclasses.replace(p, execution=Execution(train=False))
        tuning_runs, choices = tune_all(off, results, progress=False)
    save_table(tuning_runs, "00_tuning_runs", out)
    save_table(tuning_table(tuning_runs, choices), "00_tuning", out)
    save_table(report.claims(out).set_index("claim"), "claims", out)
    if not beside:
        return folder
    # beside the repository's own tables (the paper profile's): each claim and the main table
    # before and after
    save_table(before_after.verdict_change(results, out).set_index("claim"), "verdict_change", out)
    main = before_after.main_change(results, out).set_index(["dataset", "backbone", "role"])
    save_table(main, "main_change", out)
    return folder


# where `save_torch_init_tables` writes `next`'s NeuMF tables of PyTorch's initialisation
TORCH_INIT = "next-torch-init"


def save_torch_init_tables(results=None) -> str:
    """Profile `next`'s NeuMF tables as recorded before it moved to NCF's initialisation
    (`Profile.mlp_init`, session 38): `save_recorded_tables` of `next` with `mlp_init=None` and the
    minimum of epochs and deferred tables it had then on every cell (`Profile.min_epochs_for` and
    `Profile.defer_for` came later), NeuMF only, into results/next-torch-init/, for
    `before_after.cell_change` against `next`'s own."""
    p = dataclasses.replace(
        PROFILES["next"], mlp_init=None, backbones=["neumf"], min_epochs_for={}, defer_for={}
    )
    return save_recorded_tables(p, results, TORCH_INIT, beside=False)
