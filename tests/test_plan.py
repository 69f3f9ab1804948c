"""A profile's plan, priced (`plan`): its runs counted once, each priced from the recorded runs of
its kind and its step's benched ratio, the estimate beside complete cells' hours, the hours to go."""

import dataclasses

import numpy as np
import pandas as pd

from cdlib import costs, plan, profiles, readme_steps, tables


def test_profile_runs_counts_every_distinct_run_of_a_profile_once():
    """Issue 23's grid, one cell (ml-100k CDAE, 5 seeds): tuning 2 seeds x (Teacher 6 + Student 6 + RD 8
    + CD 6 + 2 more guides) = 56; main 6 labels x 5 seeds less the 6 x 2 the tuning trained, plus RD-v1
    x 5 = 23; sampling 3 new runs x 5 = 15 (rank-aware teacher/student guided are CD-T and CD-S,
    and uniform sampling, which reads no guide, is one run for both guides);
    size 3 other sizes x (Student, CD) x 3 seeds + born-again x 3 = 21; no sensitivity (ml-1m and
    citeulike-t only). The paper profile: no guide stage, so CD-S and CD-H of the tuning seeds are
    the main table's own runs."""
    one = dict(datasets=["ml-100k"], backbones=["cdae"])
    nxt = plan.profile_runs(dataclasses.replace(profiles.PROFILES["next"], **one))
    assert nxt.groupby("table").size().to_dict() == {
        "00_tuning": 56,
        "03_main": 23,
        "04_sampling": 15,
        "06_student_size": 21,
    }
    assert set(nxt[nxt.table == "06_student_size"].seed) == {0, 1, 2}
    tuning = nxt[nxt.table == "00_tuning"]
    assert (tuning.method.value_counts() / 2).to_dict() == {"none": 12, "rd": 8, "cd": 8}
    paper = plan.profile_runs(dataclasses.replace(profiles.PROFILES["paper"], **one))
    counts = paper.groupby("table").size().to_dict()
    assert counts["00_tuning"] == 2 * (4 + 4 + 6 + 6) and counts["03_main"] == 6 * 5 - 4 * 2 + 5
    # every seed (no scope); of each parameter's 4 values, the one CD-T runs at is CD-T's run, and
    # at the tuning seeds the other lambda_kd and n_distill values of CD's grid are tuning runs
    assert counts["07_sensitivity"] == (16 - 4) * 5 - 3 * 2


def test_profile_estimate_prices_every_run_of_the_profile(tmp_path):
    """Each run of the profile at the recorded runs' epochs x seconds per epoch of its kind, over
    its kind's benched ratio; a cell priced from a dataset nearest in work is scaled by it; a cell
    the profile trains for longer than the recorded runs ran is priced at its minimum of epochs."""
    from cdlib import runs

    tables.save_table(  # ml-1m stands for a dataset of 4x ml-100k's users x items
        pd.DataFrame(
            {
                "dataset": ["ml-100k", "ml-1m"],
                "users": [10, 40],
                "items": [100] * 2,
                "train": [5] * 2,
            }
        ),
        "01_datasets",
        tmp_path,
    )
    rows_ = []
    for label, size in (("Teacher", 200), ("Student", 20)):
        for m in ("none", "rd", "cd") if size == 20 else ("none",):
            key = f"{label}{m}"
            runs.write_record({"key": key, "timing": {"wall_seconds": 360.0}}, tmp_path)
            rows_.append(
                dict(label=label, dataset="ml-100k", backbone="cdae", size=size, seed=0, method=m)
                | {"status": "ok", "key": key, "epochs_run": 60}
            )
    tables.save_table(pd.DataFrame(rows_), "03_main_runs", tmp_path)
    ratios = {"teacher": 4.0, "student, none": 2.0}
    ratios |= {"student, CD teacher-guided": 2.0, "student, CD student-guided": 1.0}
    bench = {
        "steps": [
            {"dataset": "ml-100k", "run": f"CDAE {k}", "dense / sparse, validation included": v}
            for k, v in ratios.items()
        ]
    }
    p = dataclasses.replace(
        profiles.PROFILES["next"], datasets=["ml-100k", "ml-1m"], backbones=["cdae"]
    )
    p.scope = {}
    e = plan.profile_estimate(p, [bench], tmp_path, step="sparse")
    t = plan.profile_runs(p)
    assert e.runs.iloc[-1] == len(t)  # every run priced once
    # each run 360 s on ml-100k; on ml-1m 4x the work (users x items): 1440 s
    per = t.dataset.map({"ml-100k": 360.0, "ml-1m": 1440.0})
    assert np.isclose(e["CPU hours, dense step"].iloc[-1], round(per.sum() / 3600, 1))
    kinds = [
        costs.kind_name("cdae", costs.run_kind("cdae", r.size, r.method, r.label))
        for r in t.itertuples()
    ]
    stepped = per / pd.Series([ratios[k.removeprefix("CDAE ")] for k in kinds])
    assert np.isclose(e["CPU hours, sparse step (est.)"].iloc[-1], round(stepped.sum() / 3600, 1))
    assert plan.profile_estimate(p, [], tmp_path).empty

    # the recorded runs ran 60 epochs (over the profile's minimum of 50); ml-1m trained for at
    # least 120 costs twice as much, ml-100k the same
    longer = dataclasses.replace(p, min_epochs_for={("ml-1m", "cdae"): 120})
    e1, e2 = (
        plan.profile_estimate(q, [bench], tmp_path, step="sparse", digits=None).set_index(
            ["table", "dataset"]
        )
        for q in (p, longer)
    )
    hours = "CPU hours, dense step"
    assert np.isclose(e2.loc[("03_main", "ml-1m"), hours], 2 * e1.loc[("03_main", "ml-1m"), hours])
    assert np.isclose(e2.loc[("03_main", "ml-100k"), hours], e1.loc[("03_main", "ml-100k"), hours])


def test_estimate_check_sets_the_estimate_beside_the_hours_of_complete_tables_only():
    """`plan.estimate_check`: per cell, the tables whose every planned run is recorded get their
    estimated and recorded hours summed side by side; a table with a run to go is left out, and a
    cell without a complete table."""
    estimate = pd.DataFrame(
        {
            "table": ["00_tuning", "03_main", "00_tuning", "03_main", "00_tuning", "all"],
            "dataset": ["ml-100k", "ml-100k", "ml-1m", "ml-1m", "yelp", ""],
            "backbone": ["cdae"] * 5 + [""],
            "runs": [4, 2, 4, 2, 4, 16],
            "CPU hours, dense step": [9.0, 9.0, 9.0, 9.0, 9.0, 45.0],
            "CPU hours, deferred step (est.)": [1.0, 0.5, 3.0, 0.5, 7.0, 12.0],
        }
    )
    coverage = pd.DataFrame(
        {
            "table": ["00_tuning", "03_main", "00_tuning", "03_main", "00_tuning", "all"],
            "dataset": ["ml-100k", "ml-100k", "ml-1m", "ml-1m", "yelp", None],
            "backbone": ["cdae"] * 5 + [None],
            "runs": [4, 2, 4, 2, 4, 16],
            "recorded": [4, 2, 3, 2, 1, 12],
            "CPU hours": [2.0, 1.0, 5.0, 1.5, 1.0, 10.5],
        }
    )
    check = plan.estimate_check(estimate, coverage)
    assert check.to_dict("records") == [
        {
            "dataset": "ml-100k",
            "backbone": "cdae",
            "runs": 6,
            "CPU hours, estimated": 1.5,
            "CPU hours, recorded": 3.0,
            "recorded / estimated": 2.0,
        },
        {  # its tuning has a run to go: its main table alone
            "dataset": "ml-1m",
            "backbone": "cdae",
            "runs": 2,
            "CPU hours, estimated": 0.5,
            "CPU hours, recorded": 1.5,
            "recorded / estimated": 3.0,
        },
    ]


def test_hours_to_go_scale_the_estimate_by_what_complete_cells_took():
    """`plan.hours_to_go`: each row's estimate times its share of runs to go, and the same at the
    recorded / estimated ratio of the backbone's complete cells (none complete: no ratio)."""
    estimate = pd.DataFrame(
        {
            "table": ["00_tuning", "03_main", "00_tuning", "00_tuning", "all"],
            "dataset": ["ml-100k", "ml-100k", "ml-1m", "ml-1m", ""],
            "backbone": ["cdae", "cdae", "cdae", "neumf", ""],
            "runs": [4, 2, 4, 4, 14],
            "CPU hours, deferred step (est.)": [1.0, 0.5, 3.0, 2.0, 6.5],
        }
    )
    coverage = pd.DataFrame(
        {
            "table": ["00_tuning", "03_main", "00_tuning", "00_tuning", "all"],
            "dataset": ["ml-100k", "ml-100k", "ml-1m", "ml-1m", None],
            "backbone": ["cdae", "cdae", "cdae", "neumf", None],
            "runs": [4, 2, 4, 4, 14],
            "recorded": [4, 2, 3, 2, 11],
            "CPU hours": [2.0, 1.0, 5.0, 1.0, 9.0],
        }
    )
    t = plan.hours_to_go(estimate, coverage).set_index("backbone")
    assert t.loc["cdae"].tolist() == [1, 0.75, 2.0, 1.5]  # 3.0 x 1/4, at ml-100k's 3.0 / 1.5
    assert t.loc["neumf", "runs to go"] == 2 and t.loc["neumf", "CPU hours to go, estimated"] == 1.0
    assert t.loc["neumf"].iloc[2:].isna().all()  # no complete NeuMF cell: no ratio
    assert t.loc["all", "runs to go"] == 3 and t.loc["all", "CPU hours to go, estimated"] == 1.75
    assert np.isnan(t.loc["all", "CPU hours to go, at that ratio"])
    text = readme_steps._to_go_sentence(t.reset_index())
    assert "To go: 3 runs, an estimated **2 CPU hours**" in text
    assert "(cdae 2.00x; neumf none), not known yet." in text
    whole = plan.hours_to_go(estimate.iloc[[0, 1, 2, 4]], coverage.iloc[[0, 1, 2, 4]])
    assert "(cdae 2.00x), **2** (`plan.hours_to_go`)." in readme_steps._to_go_sentence(whole)
    # a row per cell, each at its backbone's ratio; their sum is the backbones'
    cells = plan.hours_to_go(estimate, coverage, by=("dataset", "backbone"))
    cells = cells.set_index(["dataset", "backbone"])
    assert cells.loc[("ml-100k", "cdae")].tolist() == [0, 0.0, 2.0, 0.0]
    assert cells.loc[("ml-1m", "cdae")].tolist() == [1, 0.75, 2.0, 1.5]
    assert cells.loc[("ml-1m", "neumf"), "CPU hours to go, estimated"] == 1.0
    assert np.isnan(cells.loc[("ml-1m", "neumf"), "recorded / estimated"])
    assert cells.loc[("all", "")].iloc[:2].tolist() == t.loc["all"].iloc[:2].tolist()
