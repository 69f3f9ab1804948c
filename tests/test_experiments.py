"""Grids, tables and claims on synthetic run rows (no training)."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from conftest import fake_training as _fake_training
from scipy import stats

from cdlib import (
    analyses,
    audit,
    claim_tables,
    costs,
    effects,
    plan,
    plots,
    profiles,
    readme,
    readme_next,
    readme_steps,
    report,
    runs,
    sentences,
    tables,
    tuning,
)
from cdlib import experiments as ex
from cdlib.config import Execution


def rows(label, values, dataset="d", backbone="cdae", valid=None, full=None):
    valid = valid or values
    full = full or values
    return [
        {
            "label": label,
            "dataset": dataset,
            "backbone": backbone,
            "seed": s,
            "status": "ok",
            "n_params": 10,
            "HR@10": v,
            "NDCG@10": v / 2,
            "valid NDCG@10": w / 2,
            "HR@10 (full)": f,
            "NDCG@10 (full)": f / 2,
            "valid NDCG@10 (full)": f / 3,
        }
        for s, (v, w, f) in enumerate(zip(values, valid, full))
    ]


def test_summarize_and_compare_with_paired_t_test():
    cd, rd = [0.50, 0.52, 0.55], [0.45, 0.50, 0.50]
    df = pd.DataFrame(
        rows("CD-best", cd)
        + rows("RD", rd)
        + [{"label": "RD", "dataset": "d", "backbone": "cdae", "seed": 9, "status": "missing"}]
    )
    t = tables.summarize(df)
    assert abs(t.loc[("d", "cdae", "CD-best"), "HR@10 mean"] - np.mean(cd)) < 1e-12
    assert abs(t.loc[("d", "cdae", "RD"), "HR@10 std"] - np.std(rd, ddof=1)) < 1e-12
    assert t.loc[("d", "cdae", "RD"), "seeds"] == 3  # the missing run is not counted
    g = tables.compare(df, "CD-best", "RD").iloc[0]
    assert abs(g["HR@10 gain %"] - 100 * (np.mean(cd) - np.mean(rd)) / np.mean(rd)) < 1e-9
    assert abs(g["HR@10 p"] - stats.ttest_rel(cd, rd).pvalue) < 1e-12


def test_best_cd_is_chosen_on_validation_never_on_test():
    # CD-S is best on test, CD-T on validation: the choice must follow validation
    df = pd.DataFrame(
        rows("CD-T", [0.3, 0.3], valid=[0.5, 0.5])
        + rows("CD-S", [0.4, 0.4], valid=[0.2, 0.2])
        + rows("CD-H", [0.1, 0.1], valid=[0.1, 0.1], full=[0.9, 0.9])
    )
    out = tables.best_cd(df)
    best = out[out.label == "CD-best"]
    assert set(best.best_of) == {"CD-T"} and len(best) == 2  # both seeds of the chosen guide
    assert set(out[out.label == "CD-best (full)"].best_of) == {
        "CD-H"
    }  # its own protocol's validation


def test_grids_share_configurations_across_notebooks(tmp_path, monkeypatch):
    monkeypatch.setenv("CDLIB_CACHE", str(tmp_path / "cache"))
    p = profiles.profile("smoke")
    main, guid, samp = (
        ex.main_grid(p, tmp_path),
        ex.guidance_grid(p, tmp_path),
        ex.sampling_grid(p, results=tmp_path),
    )
    assert guid["CD-S"] == main["CD-S"]
    assert samp["rank/teacher"] == main["CD-T"]  # same run, trained once
    assert samp["uniform/student"] == samp["uniform/teacher"]  # uniform sampling reads no guide
    assert samp["rank/student"] != samp["rank/teacher"]
    size = ex.size_grid(p, results=tmp_path)
    assert {c.size for c in size["Student"] if c.backbone == "cdae"} == {5, 10, 20, 50}
    assert all(c.size == 200 and c.method == "cd" for c in size["BACD"] if c.backbone == "cdae")
    sens = ex.sensitivity_grid(p, results=tmp_path)
    assert len(sens) == sum(len(v) for v in ex.SENSITIVITY.values())
    rd = ex.rd_variant_grid(p, tmp_path)
    assert rd["RD"] == main["RD"]  # the main table's RD, beside its v1 form
    v1 = rd["RD-v1"][0].canonical()
    assert (v1.rd_renorm, v1.lambda_rd, v1.rd_warmup, v1.rd_rank) == (
        True,
        0.5,
        5,
        "exact",
    ) and v1.lr == main["RD"][0].canonical().lr
    # the main table's runs are those the tuning stage chose, and its seeds reuse the tuning runs
    tuned_runs, choice = tuning.tune(
        dataclasses.replace(p, execution=Execution(train=False)), "ml-100k", "cdae", tmp_path
    )
    assert choice is not None and (tuned_runs.status == "ok").all()
    assert {c.key() for c in main["CD-T"] if c.backbone == "cdae"} <= set(tuned_runs.key)


def test_holm_against_its_definition():
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = rng.random(7) ** 3
        p[rng.random(7) < 0.2] = np.nan
        got = report.holm(p)
        ok = ~np.isnan(p)
        q, m = p[ok], ok.sum()
        order = np.argsort(q)
        want = np.empty(m)
        for rank, i in enumerate(order):  # step-down: max over the smaller ones
            want[i] = min(1.0, max((m - r) * q[order[r]] for r in range(rank + 1)))
        assert np.allclose(got[ok], want) and np.isnan(got[~ok]).all()


def test_claims_on_both_protocols_with_holm_adjustment(tmp_path):
    # cell a: CD beats RD clearly; cells b and c: p < 0.05 each alone, not after Holm over the three
    rd = [0.40, 0.42, 0.41, 0.43]
    cds = {
        "a": [0.50, 0.53, 0.51, 0.52],
        "b": [0.41, 0.44, 0.415, 0.445],
        "c": [0.412, 0.44, 0.416, 0.44],
    }
    main = pd.DataFrame(
        [
            r
            for d, cd in cds.items()
            for r in rows("Teacher", [0.6] * 4, d) + rows("RD", rd, d) + rows("CD-T", cd, d)
        ]
    )
    tables.save_table(tables.best_cd(main), "03_main_runs", tmp_path)
    c = report.claims(tmp_path)
    hr = c[
        c.claim == "3. CD beats RD (HR@10), primary: CD-T, the tuned CD, its guide untuned"
    ].set_index("dataset")
    rel = {d: 100 * (np.array(cd) / np.array(rd) - 1) for d, cd in cds.items()}  # per seed, %
    p = {d: stats.ttest_1samp(x, 0).pvalue for d, x in rel.items()}
    for d, x in rel.items():  # effect and interval against their definitions
        half = stats.t.ppf(0.975, 3) * x.std(ddof=1) / 2
        assert hr.loc[d, "effect % (sampled)"] == pytest.approx(x.mean())
        assert hr.loc[d, "CI low (sampled)"] == pytest.approx(x.mean() - half)
        assert hr.loc[d, "CI high (sampled)"] == pytest.approx(x.mean() + half)
        assert hr.loc[d, "p (sampled)"] == pytest.approx(p[d], abs=1e-12)
        assert hr.loc[d, "MDE % (sampled)"] == pytest.approx(
            effects.mde(x.std(ddof=1), 4, 0.05 / 3)
        )
    assert np.allclose(
        hr.loc[list(cds), "p Holm (sampled)"].to_numpy(), report.holm(list(p.values()))
    )
    assert bool(hr.loc["a", "held (sampled)"]) and bool(hr.loc["a", "held (full)"])
    assert p["b"] < 0.05 and p["c"] < 0.05
    assert not bool(hr.loc["b", "held (sampled)"]) and not bool(
        hr.loc["c", "held (sampled)"]
    )  # Holm
    assert bool(hr.loc["a", "in paper range (sampled)"]) == (
        2.7 <= hr.loc["a", "effect % (sampled)"] <= 33.2
    )
    pool = effects.pooled(
        [x.mean() for x in rel.values()], [x.var(ddof=1) / 4 for x in rel.values()]
    )
    assert hr.loc["pooled", "effect % (sampled)"] == pytest.approx(pool["effect"])
    assert hr.loc["pooled", "cells (sampled)"] == 3
    assert hr.loc[list(cds), "pooled (sampled)"].astype(bool).all()  # each cell has a variance
    assert hr.loc["pooled", "CI low HK (sampled)"] == pytest.approx(pool["ci_low_hk"])
    assert hr.loc["pooled", "verdict HK (sampled)"] == effects.verdict(
        {"ci_low": pool["ci_low_hk"], "ci_high": pool["ci_high_hk"]}, 2.7
    )
    assert hr.loc["pooled", "verdict (sampled)"] == effects.verdict(pool, 2.7, 1, 3)  # 1 of 3 held
    # leave one cell out: the cells without which the verdict's kind changes, and to what
    kind = effects.verdict_kind(effects.verdict(pool, 2.7))
    changes = []
    for d in cds:
        rest = [x for o, x in rel.items() if o != d]
        k = effects.verdict_kind(
            effects.verdict(
                effects.pooled([x.mean() for x in rest], [x.var(ddof=1) / 4 for x in rest], [4, 4]),
                2.7,
            )
        )
        if k != kind:
            changes.append(f"{d}/cdae: {k}")
    assert changes  # without cell a, the clear one, the claim is no longer held
    assert hr.loc["pooled", "changes without one cell (sampled)"] == "; ".join(changes)
    # a verdict that stands without each cell says so, and still does once the CSV is read back
    alike = [{"dataset": d, "backbone": "cdae"} for d in "xyz"]
    pool3 = effects.pooled([3.0, 3.2, 2.9], [0.1, 0.1, 0.1])
    drops = effects.without_each([3.0, 3.2, 2.9], [0.1, 0.1, 0.1])
    assert report._changes_without_one(pool3, drops, alike, 2.7) == "no cell"
    c.loc[c.dataset == "pooled", "changes without one cell (full)"] = "no cell"
    tables.save_table(c.set_index("claim"), "claims", tmp_path)  # as the notebooks save it
    back = runs.read_table("claims", tmp_path)
    assert (
        back.loc[back.dataset == "pooled", "changes without one cell (full)"] == "no cell"
    ).all()
    assert "the verdict stands each time" in sentences.verdicts(back)[0]
    assert hr.loc["pooled", "paper range is (sampled)"] == effects.against_range(pool, (2.7, 33.2))
    close = c[c.claim == "4. CD student comes close to the teacher (description)"].set_index(
        "dataset"
    )
    assert close.loc["a", "measured"].startswith(
        f"sampled: {100 * np.mean(cds['a']) / 0.6:.1f}% of its teacher"
    )
    assert pd.isna(close.loc["a", "held (sampled)"])  # a description, not a verdict
    assert not c.claim.str.startswith(
        "4. gap recovered"
    ).any()  # no plain student: no gap to recover
    assert "verdict (sampled)" in c and sentences.verdicts(c)[0].startswith(
        "**3. CD beats RD (HR@10), primary"
    )


def test_claims_bacd_and_sampling_use_paired_seeds(tmp_path):
    teacher, bacd = [0.60, 0.62, 0.61], [0.63, 0.64, 0.65]
    tables.save_table(
        pd.DataFrame(rows("Teacher", teacher) + rows("BACD", bacd)), "06_size_runs", tmp_path
    )
    tables.save_table(
        pd.DataFrame(
            rows("rank/teacher", [0.50, 0.40, 0.52]) + rows("uniform/teacher", [0.49, 0.45, 0.50])
        ),
        "04_sampling_runs",
        tmp_path,
    )
    c = report.claims(tmp_path)
    c = c[c.dataset != "pooled"].set_index("claim")
    hr = c.loc["6. born-again CD beats the teacher (HR@10)"]
    rel = 100 * (np.array(bacd) / np.array(teacher) - 1)
    p = stats.ttest_1samp(rel, 0).pvalue
    assert f"p {p:.2g}" in hr["measured"] and bool(hr["held (sampled)"]) == (p < 0.05)
    assert hr["measured"].startswith(f"sampled: {rel.mean():+.1f}%")
    samp = c.loc["2. rank-aware sampling beats uniform (teacher-guided, NDCG@10)"]
    assert not bool(samp["held (sampled)"]) and "3 seeds" in samp["measured"]  # mean gain < 0


def test_each_protocol_counts_its_own_seeds(tmp_path):
    """CD-best's guide is chosen per protocol, so the two protocols may pair different seeds with
    RD: each protocol's MDE and pooled variance use its own count."""
    rd = [0.50, 0.51, 0.52, 0.50, 0.51]
    cd = {"sampled": [0.53, 0.52, 0.55], "full": [0.52, 0.53, 0.56, 0.52, 0.54]}
    main = pd.DataFrame(
        rows("RD", rd)
        + [dict(r, label="CD-best") for r in rows("x", cd["sampled"])]
        + [dict(r, label="CD-best (full)") for r in rows("x", cd["full"])]
    )
    main["NDCG@10 (full)"] = main["NDCG@10"]
    tables.save_table(main, "03_main_runs", tmp_path)
    c = report.claims(tmp_path)
    row = c[c.claim.str.contains("secondary") & c.claim.str.contains("NDCG") & (c.dataset == "d")]
    row = row.iloc[0]
    assert (row["seeds (sampled)"], row["seeds (full)"]) == (3, 5)
    for proto, k in (("sampled", 3), ("full", 5)):
        rel = 100 * (np.array(cd[proto]) / np.array(rd[:k]) - 1)
        assert row[f"MDE % ({proto})"] == pytest.approx(effects.mde(rel.std(ddof=1), k, 0.05))
        assert f"{k} seeds" in row["measured"].split(";")[0 if proto == "sampled" else 1]


def test_gap_recovered_and_cd_against_the_plain_student(tmp_path):
    teacher, student, rd, cd = (
        [0.60, 0.62, 0.61],
        [0.50, 0.50, 0.52],
        [0.52, 0.53, 0.53],
        [0.55, 0.56, 0.56],
    )
    main = pd.DataFrame(
        rows("Teacher", teacher) + rows("Student", student) + rows("RD", rd) + rows("CD-T", cd)
    )
    tables.save_table(tables.best_cd(main), "03_main_runs", tmp_path)
    c = report.claims(tmp_path)
    c = c[c.dataset != "pooled"].set_index("claim")
    t, s = np.array(teacher), np.array(student)
    for method, m in (("CD-T", cd), ("RD", rd)):
        a, b = 100 * (np.array(m) - s), t - s  # ratio of means, not mean of ratios
        row = c.loc[f"4. gap recovered by {method} (% of teacher - student, NDCG@10)"]
        assert row["effect % (sampled)"] == pytest.approx(a.mean() / b.mean())
        assert row["seeds (sampled)"] == 3 and row["CI low (sampled)"] < row["effect % (sampled)"]
    vs = c.loc["4. CD beats the plain student (NDCG@10)"]
    assert vs["effect % (sampled)"] == pytest.approx(np.mean(100 * (np.array(cd) / s - 1)))


def test_readme_section_is_replaced_between_markers(tmp_path):
    path = tmp_path / "README.md"
    path.write_text(f"intro\n{readme.START}\nold\n{readme.END}\nafter\n")
    tables.save_table(
        pd.DataFrame({"claim": ["x"], "held (sampled)": [True]}).set_index("claim"),
        "claims",
        tmp_path,
    )
    assert readme.update_readme(tmp_path, path)
    text = path.read_text()
    assert "old" not in text and "| x | True |" in text and text.endswith("after\n")
    assert not readme.update_readme(tmp_path, path)  # idempotent


def test_coverage_says_what_each_table_rests_on(tmp_path):
    main = pd.DataFrame(
        rows("Teacher", [0.6, 0.6, 0.6])
        + rows("RD", [0.5])
        + [
            {
                "label": "Teacher",
                "dataset": "e",
                "backbone": "neumf",
                "seed": 0,
                "status": "untuned",
            }
        ]
    )
    main["device"] = "cpu"
    tables.save_table(main, "03_main_runs", tmp_path)
    cov = audit.coverage(tmp_path).set_index(["table", "dataset", "backbone"])
    assert (
        cov.loc[("main (03)", "d", "cdae"), "runs"] == 4
        and cov.loc[("main (03)", "d", "cdae"), "seeds"] == "0, 1, 2"
    )
    assert (
        cov.loc[("main (03)", "e", "neumf"), "runs"] == 0
        and cov.loc[("main (03)", "e", "neumf"), "not recorded"] == 1
    )


def test_violations_flag_capped_and_stalled_runs_per_table(tmp_path, monkeypatch):
    from cdlib import runs

    monkeypatch.setattr(audit, "popularity_valid_ndcg", lambda config: 0.24)
    base = {
        "dataset": "d",
        "backbone": "neumf",
        "size": 8,
        "method": "rd",
        "epochs": 1000,
        "data_seed": 0,
    }
    table = []
    for seed, best, ran, valid in ((0, 40, 80, 0.245), (1, 150, 180, 0.35), (2, 950, 1000, 0.36)):
        key = f"k{seed}"  # stalled; fine; capped
        runs.write_record(
            {
                "key": key,
                "config": dict(base, seed=seed),
                "best_epoch": best,
                "epochs_run": ran,
                "valid_sampled": {"NDCG@10": valid},
            },
            tmp_path,
        )
        table += [dict(r, key=key) for r in rows("RD", [0.5], backbone="neumf")]
        table[-1]["seed"] = seed
    tables.save_table(pd.DataFrame(table), "03_main_runs", tmp_path)
    bad = audit.violations(tmp_path)
    assert list(bad.seed) == [0, 2]
    assert bad.problem[0].startswith("stalled (valid NDCG@10 0.2450, popularity 0.2400)")
    assert bad.problem[1].startswith("capped (best epoch 950 of cap 1000)") and set(bad.table) == {
        "main (03)"
    }
    assert "### Runs that break the fair protocol" in readme.readme_section(tmp_path)


def test_a_run_stopped_while_its_validation_still_rose_is_flagged():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.002, 50)

    def curve(values):
        return [{"valid_NDCG@10": float(x)} for x in values]

    peak = np.r_[0.2, 0.34, np.full(48, 0.32)]  # an early peak, then a dip that ended it
    climbing = peak + np.r_[np.zeros(20), np.linspace(0, 0.02, 30)] + noise
    got = audit.stopped_rising(curve(climbing), 30)
    assert got.startswith("stopped rising (valid NDCG@10 +") and "over its last 30 epochs" in got
    assert audit.stopped_rising(curve(peak + noise), 30) == ""  # a plateau after its best
    slow = peak + np.r_[np.zeros(20), np.linspace(0, 0.004, 30)] + noise / 10
    assert audit.stopped_rising(curve(slow), 30) == ""  # +1.2% of its best: under the 2%
    assert audit.stopped_rising(curve(climbing), 30, rise=0.1) == ""
    zigzag = 0.03 * (-1.0) ** np.arange(50)
    noisy = peak + np.r_[np.zeros(20), np.linspace(0, 0.02, 30)] + zigzag
    assert audit.stopped_rising(curve(noisy), 30) == ""  # a rise the epochs' noise explains
    assert audit.stopped_rising(None, 30) == audit.stopped_rising(curve(climbing), None) == ""
    assert audit.stopped_rising(curve(climbing[:20]), 30) == ""
    assert audit.stopped_rising(curve(climbing), 2) == ""  # a window under 3 epochs: not judged


def test_violations_flag_a_run_stopped_rising_unless_its_cap_ended_it(tmp_path, monkeypatch):
    from cdlib import runs

    monkeypatch.setattr(audit, "popularity_valid_ndcg", lambda config: 0.01)
    rising = [{"valid_NDCG@10": 0.3 + 0.001 * i} for i in range(60)]
    table = []
    for seed, cap in ((0, 1000), (1, 60)):
        key = f"k{seed}"
        config = {"dataset": "d", "backbone": "neumf", "size": 8, "epochs": cap, "patience": 30}
        rec = {"key": key, "config": config, "best_epoch": 10, "epochs_run": 60, "curve": rising}
        runs.write_record(rec | {"valid_sampled": {"NDCG@10": 0.36}}, tmp_path)
        table += [dict(r, key=key, seed=seed) for r in rows("RD", [0.36], backbone="neumf")]
    tables.save_table(pd.DataFrame(table), "03_main_runs", tmp_path)
    bad = audit.violations(tmp_path)
    assert list(bad.seed) == [0] and bad.problem[0].startswith("stopped rising")
    assert bad.fix[0] == ""
    # in the tuning stage's table: what became of the run's point
    tuned = pd.DataFrame(table).assign(stage="Teacher", label="Teacher lr=0.001")
    tuned["valid NDCG@10"] = 0.36
    other = tuned.assign(label="Teacher lr=0.003", key="k1")  # (a run that breaks nothing)
    other["valid NDCG@10"] = 0.4
    both = pd.concat([tuned[tuned.seed == 0], other], ignore_index=True)
    tables.save_table(both, "00_tuning_runs", tmp_path)
    got = audit.violations(tmp_path)
    got = got[got.table == "tuning (00)"].reset_index()
    assert len(got) == 1 and got.fix[0] == (
        "not chosen: its stage chose Teacher lr=0.003 (mean valid NDCG@10 0.4000 against 0.3600)"
    )
    both.loc[1, "status"] = "missing"
    tables.save_table(both, "00_tuning_runs", tmp_path)
    got = audit.violations(tmp_path)
    assert list(got[got.table == "tuning (00)"].fix) == ["its stage is not recorded whole yet"]


def test_violations_list_a_teacher_below_its_plain_student_with_its_fix(tmp_path, monkeypatch):
    from cdlib import runs

    monkeypatch.setattr(audit, "popularity_valid_ndcg", lambda config: 0.01)
    table = []
    students = (("Student", 8, [0.20, 0.36]), ("Student", 16, [0.50, 0.50]))  # 16: not its own
    for label, size, valid in (("Teacher", 64, [0.40, 0.30]), *students):
        for r in rows(label, valid, backbone="neumf"):
            key = f"{label}{size}{r['seed']}"
            config = {"dataset": "d", "backbone": "neumf", "size": size, "epochs": 1000}
            rec = {"key": key, "config": config, "best_epoch": 14, "epochs_run": 60}
            runs.write_record(rec | {"valid_sampled": {"NDCG@10": r["valid NDCG@10"]}}, tmp_path)
            table.append(dict(r, key=key, size=size))
    tables.save_table(pd.DataFrame(table), "03_main_runs", tmp_path)
    bad = audit.violations(tmp_path)
    assert len(bad) == 1 and bad.seed[0] == 1 and bad.label[0] == "Teacher" and bad["size"][0] == 64
    assert bad.problem[0] == "below its plain student (valid NDCG@10 0.1500 < 0.1800)"
    assert bad.fix[0] == "" and bad["best epoch"][0] == 14
    monkeypatch.setitem(audit.FIXES, ("d", "neumf"), "learning rate tuned on d")
    assert audit.violations(tmp_path).fix[0] == "learning rate tuned on d"
    # a profile's tables from its records (results/next/), the records where they always are
    tables.save_table(pd.DataFrame(table), "03_main_runs", tmp_path / "next")
    (tmp_path / "03_main_runs.csv").unlink()
    assert audit.violations(tmp_path).empty
    assert audit.violations(tmp_path, folder="next").equals(
        bad.assign(fix="learning rate tuned on d")
    )


def test_claim_5_compares_teacher_and_student_on_the_same_device(tmp_path):
    def t(label, size, ms, device):
        return {
            "dataset": "d",
            "label": label,
            "backbone": "cdae",
            "size": size,
            "n_params": 10 * size,
            "latency_ms": ms,
            "device": device,
        }

    eff = pd.DataFrame(
        [
            t("Teacher", 200, 4.0, "cpu: x"),
            t("Student", 20, 1.0, "cpu: x"),
            t("Teacher", 200, 0.1, "NVIDIA H100"),
            t("Student", 20, 0.2, "NVIDIA H100"),
        ]
    )
    tables.save_table(eff, "08_efficiency", tmp_path)
    c = report.claims(tmp_path)
    c = c[c.claim.str.startswith("5. the student is smaller and faster")].set_index(
        c.measured.str.contains("H100")
    )
    assert len(c) == 2 and c.loc[True, "claim"].endswith("(on the GPU)")
    assert bool(c.loc[False, "held (sampled)"]) and "4.0x faster" in c.loc[False, "measured"]
    assert not bool(c.loc[True, "held (sampled)"]) and "0.5x faster" in c.loc[True, "measured"]


def test_teacher_variants_set_the_best_test_epoch_beside_the_record(tmp_path):
    from cdlib import runs

    base = {
        "dataset": "ml-1m",
        "backbone": "neumf",
        "method": "none",
        "size": 64,
        "seed": 0,
        "min_epochs": 50,
        "weight_decay": 0.0,
    }
    for key, lr, scale, hr in (("a", 1e-3, 1, 0.68), ("b", 1e-3, 2, 0.67), ("c", 3e-4, 1, 0.69)):
        runs.write_record(
            {
                "key": key,
                "config": dict(base, lr=lr, mlp_scale=scale),
                "best_epoch": 15,
                "valid_sampled": {"HR@10": hr + 0.03},
                "test_sampled": {"HR@10": hr},
            },
            tmp_path,
        )
    old = {k: v for k, v in base.items() if k != "min_epochs"}  # a record of the first protocol
    runs.write_record(
        {
            "key": "v1",
            "config": dict(old, lr=1e-3, mlp_scale=1),
            "best_epoch": 15,
            "valid_sampled": {"HR@10": 0.7},
            "test_sampled": {"HR@10": 0.7},
        },
        tmp_path,
    )
    (tmp_path / "analysis").mkdir()
    (tmp_path / "analysis" / "best_test_epoch_a.json").write_text(
        '{"key": "a", "best_test_epoch": 9, "test_at_best_test_epoch": {"HR@10": 0.695}}'
    )
    (tmp_path / "analysis" / "ncf_protocol_a.json").write_text(
        '{"key": "a", "best_test_epoch": 12, "epochs": 30, "test_at_best_test_epoch": {"HR@10": 0.6991}}'
    )
    t = analyses.teacher_variants(results=tmp_path)
    assert len(t) == 3 and 0.7 not in set(t["test HR@10"])  # the v1 record is not mixed in
    row = t[(t.lr == 1e-3) & (t.mlp_scale == 1)].iloc[0]
    assert row["test HR@10 at the best test epoch"] == 0.695 and row["best test epoch"] == 9
    assert row["test HR@10, NCF protocol"] == 0.6991 and row["its best test epoch"] == "12 of 30"
    other = t[(t.lr == 1e-3) & (t.mlp_scale == 2)].iloc[0]
    assert np.isnan(other["test HR@10, NCF protocol"]) and other["its best test epoch"] == ""
    assert "### The NeuMF teacher on ml-1m" in readme.readme_section(tmp_path)
    assert analyses.protocol_gap(t) == (
        "Over the 1 runs trained both ways (lr=0.001, mlp_scale=1, seed 0): test HR@10 "
        "0.6800 under this project's protocol, 0.6991 under NCF's, so +0.0191 of the gap "
        "to 0.70 is protocol and +0.0009 remains."
    )
    assert analyses.protocol_gap(t[t.mlp_scale == 2]) == ""
    three = pd.DataFrame(
        {
            "seed": [0, 1, 0],
            "lr": [3e-4, 3e-4, 1e-3],
            "mlp_scale": [1, 1, 1],
            "weight_decay": ["0"] * 3,
            "test HR@10": [0.68, 0.69, 0.67],
            "test HR@10, NCF protocol": [0.70, 0.71, np.nan],
        }
    )
    assert analyses.protocol_gap(three).endswith(  # one setting: no per-setting clause
        "test HR@10 0.6850 under this project's protocol, 0.7050 under NCF's, so +0.0200 of the gap to 0.70 is "
        "protocol and none remains (NCF's protocol exceeds it by 0.0050)."
    )
    three.loc[2, "test HR@10, NCF protocol"] = 0.69
    assert analyses.protocol_gap(three).endswith(
        "Per setting: lr=0.0003, mlp_scale=1 (seeds 0, 1): 0.6850 under ours, 0.7050 under NCF's; "
        "lr=0.001, mlp_scale=1 (seed 0): 0.6700 under ours, 0.6900 under NCF's."
    )


def test_tables_of_cells_without_runs_are_empty_not_errors():
    df = pd.DataFrame(
        [
            {
                "label": "CD",
                "dataset": "d",
                "backbone": "cdae",
                "size": 20,
                "seed": 0,
                "status": "untuned",
            },
            {
                "label": "Student",
                "dataset": "d",
                "backbone": "cdae",
                "size": 20,
                "seed": 0,
                "status": "missing",
            },
        ]
    )
    t = tables.summarize(df)
    assert t.empty and t.index.names == ["dataset", "backbone", "label"]
    assert t[
        ["HR@10 mean", "HR@10 std", "NDCG@10 mean", "seeds"]
    ].empty  # the columns a notebook shows
    assert t.drop(index="CD-best (full)", level="label", errors="ignore").empty
    assert tables.fmt(t).empty and tables.best_cd(df).drop(columns="best_of").equals(df)
    assert sentences.verdict_pairs(df, "CD", "Student", ["size"], "x") == "No runs recorded yet."
    assert sentences.verdict_best(df, ["CD"], "x") == "No runs recorded yet."


def _two_datasets(results, items_b: int = 100) -> None:
    """Table 01 of datasets a and b: b has 4x a's users (and 4x its users x items at 100 items)."""
    tables.save_table(
        pd.DataFrame(
            {"dataset": ["a", "b"], "users": [10, 40], "items": [100, items_b], "train": [500, 800]}
        ),
        "01_datasets",
        results,
    )


def _cd_rows() -> list[dict]:
    """Table 03's CD-T rows of the cost tests: dataset a's seeds 0 and 1 recorded (keys k0 and k1,
    100 and 300 epochs run), its seed 2 missing, and dataset b untuned."""
    cell = {"label": "CD-T", "backbone": "cdae", "size": 20, "method": "cd"}
    return [
        *(
            {**cell, "dataset": "a", "seed": s, "status": "ok", "key": f"k{s}", "epochs_run": n}
            for s, n in ((0, 100), (1, 300))
        ),
        {**cell, "dataset": "a", "seed": 2, "status": "missing", "key": "k2"},
        {**cell, "dataset": "b", "seed": 0, "status": "untuned"},
    ]


def test_compute_sums_recorded_wall_time_and_estimates_the_rest(tmp_path):
    from cdlib import runs

    _two_datasets(tmp_path)
    for seed, wall in ((0, 3600.0), (1, 7200.0)):  # 36 s/epoch and 24 s/epoch
        runs.write_record({"key": f"k{seed}", "timing": {"wall_seconds": wall}}, tmp_path)
    rows_ = _cd_rows()
    tables.save_table(pd.DataFrame(rows_), "03_main_runs", tmp_path)
    tables.save_table(
        pd.DataFrame(rows_[:1]), "04_sampling_runs", tmp_path
    )  # one run in two tables counts once
    c = costs.compute(tmp_path).set_index(["dataset", "backbone"])
    assert c.loc[("a", "cdae"), "runs recorded"] == 2 and c.loc[("a", "cdae"), "CPU hours"] == 3.0
    assert c.loc[("a", "cdae"), "est. CPU hours to go"] == round(
        200 * 30 / 3600, 1
    )  # median epochs x s/epoch
    assert c.loc[("b", "cdae"), "est. CPU hours to go"] == round(
        4 * 200 * 30 / 3600, 1
    )  # 4x the users x items
    assert c.loc[("all", ""), "runs to go"] == 2


def test_device_estimate_prices_every_run_at_the_bench_seconds_per_epoch(tmp_path):
    _two_datasets(tmp_path, items_b=50)
    tables.save_table(pd.DataFrame(_cd_rows()), "03_main_runs", tmp_path)
    seconds = {
        "CDAE teacher (H=200) epoch": 1.0,
        "CDAE student (H=20) epoch, method none": 2.0,
        "CDAE student (H=20) epoch, CD student-guided": 3.0,
    }
    bench_record = {
        "seconds": seconds,
        "dataset": {"name": "a"},
        "provenance": {"device": "NVIDIA H200"},
    }
    gpu = costs.device_estimate(bench_record, tmp_path)
    # epochs 100 + 300 recorded, 200 (their median) for each run to go; 3 s per CD epoch; on a GPU dataset
    # b costs 4x (its users: steps per epoch)
    assert gpu["runs"] == 4 and gpu["epochs"] == 800
    assert gpu["hours"] == round((100 + 300 + 200 + 4 * 200) * 3.0 / 3600, 2)
    cpu = costs.device_estimate(
        {**bench_record, "provenance": {"device": "cpu: x, 2 threads"}}, tmp_path
    )
    assert cpu["hours"] == round(
        (100 + 300 + 200 + 2 * 200) * 3.0 / 3600, 2
    )  # on a CPU: 2x its users x items
    assert cpu["hours_per_dataset"] == {
        "a": round(600 * 3.0 / 3600, 2),
        "b": round(400 * 3.0 / 3600, 2),
    }


def test_gain_over_rd_is_empty_for_a_cell_with_its_teachers_only():
    out = tables.best_cd(pd.DataFrame(rows("Teacher", [0.6, 0.6])))
    assert tables.gain_over(out, "RD").empty
    # notebook 03 lists the chosen guides: none here, and no error
    assert (
        out[out.label.str.startswith("CD-best")]
        .groupby(["dataset", "backbone", "label"])
        .best_of.first()
        .empty
    )


def test_notebook_defaults_match_the_committed_notebooks_parameters():
    """reproduce --no-notebooks trains what the notebooks train only while their parameters agree."""
    import json
    from pathlib import Path

    for nb, defaults in ex.NOTEBOOK_DEFAULTS.items():
        cells = json.loads(
            (Path(ex.__file__).parent.parent / "notebooks" / f"{nb}.ipynb").read_text()
        )["cells"]
        src = next(
            "".join(c["source"])
            for c in cells
            if "parameters" in c.get("metadata", {}).get("tags", [])
        )
        values = {}
        exec(src, {}, values)
        assert {k: values[k] for k in defaults} == defaults, nb
    with pytest.raises(ValueError, match="not a training notebook"):
        ex.notebook_grid("05_guidance", profiles.profile("smoke"))


def test_a_profile_s_step_is_every_run_s_and_the_default_keeps_the_keys():
    p = profiles.PROFILES["smoke"]
    c = p.config("ml-100k", "cdae", 0, method="cd", size=20)
    assert c.canonical().step == "dense"
    assert (
        c.key()
        == dataclasses.replace(c, step=None).key()
        == dataclasses.replace(c, step="dense").key()
    )
    d = dataclasses.replace(p, step="deferred").config("ml-100k", "cdae", 0, method="cd", size=20)
    assert d.canonical().step == d.teacher().step == "deferred" and d.key() != c.key()


def test_step_estimate_divides_each_run_by_its_kind_s_benched_ratio(tmp_path):
    from cdlib import runs

    _two_datasets(tmp_path)
    rows_ = []
    for label, size, method, wall in (
        ("Teacher", 200, "none", 3600.0),
        ("CD-T", 20, "cd", 7200.0),
        ("CD-S", 20, "cd", 3600.0),
    ):
        runs.write_record({"key": label, "timing": {"wall_seconds": wall}}, tmp_path)
        rows_.append(
            dict(label=label, dataset="a", backbone="cdae", size=size, seed=0, method=method)
            | {"status": "ok", "key": label, "epochs_run": 100}
        )
    rows_.append(  # to go on b, 4x a's work: 4 x the median 54 s/epoch of a's CD runs x 100 epochs
        dict(label="CD-T", dataset="b", backbone="cdae", size=20, seed=0, method="cd")
        | {"status": "missing", "key": "k"}
    )
    tables.save_table(pd.DataFrame(rows_), "03_main_runs", tmp_path)
    ratios = {"teacher": 4.0, "student, CD teacher-guided": 2.0, "student, CD student-guided": 1.0}
    bench = {
        "steps": [
            {"dataset": "a", "run": f"CDAE {k}", "dense / sparse, validation included": v}
            for k, v in ratios.items()
        ]
    }
    # iALS (the teachers table's baseline, size 128: neither the teacher's nor the student's) has no
    # step: its hour stays an hour with every step, not divided by a CD student's ratio
    runs.write_record({"key": "iALS", "timing": {"wall_seconds": 3600.0}}, tmp_path)
    ials = dict(label="iALS (teacher budget)", dataset="a", backbone="cdae", size=128, seed=0)
    rows_.append(ials | {"method": "ials", "status": "ok", "key": "iALS", "epochs_run": 15})
    tables.save_table(pd.DataFrame(rows_), "03_main_runs", tmp_path)
    e = costs.step_estimate([bench], tmp_path).set_index("dataset")
    assert e.loc["a", "CPU hours, dense step"] == 5.0
    assert e.loc["a", "CPU hours, sparse step (est.)"] == round(1 / 4 + 2 / 2 + 1 / 1 + 1, 1)
    assert e.loc["b", "CPU hours, dense step"] == 6.0 and e.loc["b", "ratios of"] == "a"
    assert e.loc["b", "CPU hours, sparse step (est.)"] == 3.0
    assert e.loc["all", "CPU hours, sparse step (est.)"] == round(3.25 + 3.0, 1)
    no_student = {"steps": bench["steps"][:1]}  # a kind without a benched ratio: no estimate
    assert np.isnan(
        costs.step_estimate([no_student], tmp_path).set_index("dataset").loc["a"].iloc[3]
    )
    assert costs.step_estimate([], tmp_path).empty


def test_the_deferred_estimate_prices_the_warm_up_epochs_at_their_own_ratio(tmp_path, monkeypatch):
    """step="deferred": a run's epochs in the deferred Adam's warm-up (here its first 50 steps, one a
    epoch: half of a 100-epoch run) at the warm-up's benched ratio, the rest at the deferred one's."""
    from cdlib import rowadam, runs

    monkeypatch.setattr(rowadam, "WARMUP", 0.05)
    assert rowadam.warmup_steps() == 50
    _two_datasets(tmp_path)
    rows_ = []
    for label, size, method, wall in (("Teacher", 200, "none", 3600.0), ("CD-S", 20, "cd", 7200.0)):
        runs.write_record({"key": label, "timing": {"wall_seconds": wall}}, tmp_path)
        rows_.append(
            dict(label=label, dataset="a", backbone="cdae", size=size, seed=0, method=method)
            | {"status": "ok", "key": label, "epochs_run": 100}
        )
    tables.save_table(pd.DataFrame(rows_), "03_main_runs", tmp_path)
    ratios = {"teacher": (8.0, 2.0), "student, CD student-guided": (4.0, 1.0)}
    bench = {
        "steps": [
            {
                "dataset": "a",
                "run": f"CDAE {k}",
                "dense / deferred, validation included": after,
                "dense / deferred warm-up, validation included": warm,
            }
            for k, (after, warm) in ratios.items()
        ]
    }
    e = costs.step_estimate([bench], tmp_path, step="deferred").set_index("dataset")
    expected = 1 * (0.5 / 8 + 0.5 / 2) + 2 * (0.5 / 4 + 0.5 / 1)
    assert e.loc["a", "CPU hours, deferred step (est.)"] == round(expected, 1) == 1.6
    assert costs.step_estimate([bench], tmp_path).empty  # no sparse column benched


def test_run_kind_names_the_benched_kind_of_each_grid_run():
    kind = costs.run_kind
    assert kind("cdae", 200, "none", "Teacher") == kind("cdae", 200, "cd", "BACD") == "teacher"
    assert kind("neumf", 8, "none", "Student") == "student, none"
    for label in ("CD-S", "CD-H", "rank/student", "topk/student"):
        assert kind("cdae", 20, "cd", label) == "student, CD student-guided"
    teacher_guided = (("CD-T", "cd"), ("rank/teacher", "cd"), ("RD", "rd"), ("mu=5.0", "cd"))
    for label, method in (*teacher_guided, ("uniform/student", "cd")):  # (uniform ranks nothing)
        assert kind("cdae", 20, method, label) == "student, CD teacher-guided"


def test_the_readme_shows_every_step_s_bench_and_agreement(tmp_path, cpu_record, monkeypatch):
    """The README's sparse-step section: the bench's four steps per kind of run with the process's
    peak memory, and one agreement table per sparse step recorded beside the dense one."""
    import json

    assert readme_steps.sparse_step_section(tmp_path) == []
    row = {"dataset": "a", "run": "CDAE teacher", "size": 200}
    for i, name in enumerate(("dense", "sparse", "deferred", "deferred warm-up")):
        row[f"{name} s/epoch"] = 8.0 / (i + 1)
        if name != "dense":
            row[f"dense / {name}, validation included"] = i + 1.0
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "steps_a_cpu.json").write_text(
        json.dumps({"steps": [row], "peak_rss_gib": 1.5, "dataset": {"name": "a"}})
    )
    for seed, values in enumerate(((0.30, 0.29, 0.31), (0.32, 0.30, 0.33))):
        for step, value in zip(("dense", "sparse", "deferred"), values):
            cfg = {"method": "none", "seed": seed, **({"step": step} if step != "dense" else {})}
            cpu_record(tmp_path, f"{step}{seed}", cfg, value)
    text = "\n".join(readme_steps.sparse_step_section(tmp_path))
    assert "| a | CDAE teacher | 200 | 8.0 | 4.0 | 2.667 | 2.0 | 2.0 | 3.0 | 4.0 | 1.5 |" in text
    assert 'with step="sparse"' in text and 'with step="deferred"' in text
    assert "| sparse - dense |" in text and "| deferred - dense |" in text
    assert "| TOST p | equivalent |" in text and "agreement.step_equivalence" in text
    assert "| a | 1 | 2 |" in text  # pooled: dataset a, one configuration, two seeds
    said = 'Profile `next` (issue 23\'s grid) trains with step="deferred"'
    assert said in text  # +3.1% and +3.3%, beyond ±1.35%:
    assert "within ±1.35% on no dataset; not on a (2 seeds)." in text
    dense = dataclasses.replace(profiles.PROFILES["next"], step=None)
    monkeypatch.setitem(profiles.PROFILES, "next", dense)
    assert "Profile `next`" not in "\n".join(readme_steps.sparse_step_section(tmp_path))


def test_the_sentence_on_next_s_step_names_where_it_was_shown_equivalent():

    pooled = pd.DataFrame(
        {
            "dataset": ["a", "b", "c"],
            "seeds": [5, 4, 1],
            "margin %": [1.35] * 3,
            "equivalent": [True, False, np.nan],
        }
    )
    mixed = readme_steps.next_step_sentence("deferred", pooled)
    assert (
        "within ±1.35% on a (5 seeds); not on b (4 seeds); untested (under 2 paired seeds) on "
        "c (1 seed)." in mixed
    )
    assert "within ±1.35% on a (5 seeds). " in readme_steps.next_step_sentence(
        "deferred", pooled[:1]
    )
    none = readme_steps.next_step_sentence("deferred", pooled[1:2])
    assert "within ±1.35% on no dataset; not on b (4 seeds). " in none


@pytest.mark.parametrize(
    "name, dataset, chosen",
    [
        (
            "next",
            "citeulike-t",
            {"Teacher": {"lr": 3e-3}, "CD": {"lambda_kd": 1.0, "n_distill": 20}},
        ),
        ("smoke", "ml-100k", {"Teacher": {"lr": 3e-3}}),  # its grid leaves out NeuMF's default lr
    ],
)
def test_profile_coverage_counts_each_run_once_and_complete_means_complete(
    tmp_path, monkeypatch, name, dataset, chosen
):
    """A profile's grid against its records: nothing recorded, then the tuning stage (chosen away
    from the first points `plan.profile_runs` plans at, or from the backbone's defaults where the
    grid leaves them out), then every table's runs: each count reaches its plan exactly, a run two
    tables share counted once."""
    _fake_training(monkeypatch)
    p = profiles.profile(name, datasets=[dataset], backbones=["neumf"], seeds=[0, 2])
    planned = plan.profile_runs(p)
    cov = audit.profile_coverage(p, tmp_path).set_index("table")
    assert cov.loc["all", "runs"] == len(planned) and cov.recorded.sum() == 0
    runs_df, choice = tuning.tune(p, dataset, "neumf", tmp_path, progress=False)
    assert all(choice[stage] == want for stage, want in chosen.items())
    cov = audit.profile_coverage(p, tmp_path).set_index("table")
    distinct = runs_df.key.nunique()  # the guide stage's teacher-guided point is CD's chosen run
    assert cov.loc["00_tuning", "recorded"] == cov.loc["00_tuning", "runs"] == distinct
    assert cov.loc["03_main", "recorded"] == 0 < cov.loc["03_main", "runs"]
    for nb in plan.TRAINING_NOTEBOOKS:
        tables.collect(ex.notebook_grid(nb, p, tmp_path), tmp_path, progress=False)
    cov = audit.profile_coverage(p, tmp_path)
    assert (cov.recorded == cov.runs).all() and (cov["recorded %"] == 100).all()
    assert (cov["CPU hours"] == 0).all()  # the fake records carry no wall time
    rec = runs.read_record(runs_df.key.iloc[0], tmp_path)
    runs.write_record({**rec, "timing": {**rec["timing"], "wall_seconds": 7200.0}}, tmp_path)
    cov = audit.profile_coverage(p, tmp_path).set_index("table")
    assert cov.loc["00_tuning", "CPU hours"] == cov.loc["all", "CPU hours"] == 2.0


def test_a_renamed_claim_leaves_no_forest_plot_behind(tmp_path):
    claims = pd.DataFrame({"claim": ["3. CD beats RD (HR@10), primary: CD"]})
    now = plots.forest_name(claims.claim[0])
    for name in (now, "09_forest_3_cd_beats_rd_hr_10_primary_cd_t_the_tuned_cd"):
        for ext in ("png", "pdf"):
            (tmp_path / f"{name}.{ext}").write_text("x")
    (tmp_path / "03_main_ndcg10.png").write_text("x")  # not a forest plot: kept
    removed = plots.remove_stale_forests(claims, tmp_path)
    assert removed == [
        f"09_forest_3_cd_beats_rd_hr_10_primary_cd_t_the_tuned_cd.{e}" for e in ("pdf", "png")
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["03_main_ndcg10.png", f"{now}.pdf", f"{now}.png"]
    )


def test_recorded_tables_say_what_a_profile_s_records_say_without_training(tmp_path, monkeypatch):
    """`next`'s claims while it is recorded: its run tables from the records alone (a run not
    recorded is 'missing', never trained), then, once its tables' runs are recorded, claim 3's
    primary arm is the CD whose guide its tuning chose."""
    _fake_training(monkeypatch)
    monkeypatch.setattr(audit, "popularity_valid_ndcg", lambda config: 0.01)
    p = profiles.profile("next", datasets=["ml-100k"], backbones=["neumf"], seeds=[0, 2])
    tuning.tune(p, "ml-100k", "neumf", tmp_path, progress=False)
    before = len(list((tmp_path / "runs").glob("*.json")))
    got = claim_tables.recorded_tables(p, tmp_path)
    assert set(got) == set(claim_tables.CLAIM_TABLES)
    assert len(list((tmp_path / "runs").glob("*.json"))) == before  # nothing trained
    main = got["03_main_runs"]
    trained = main[~main.label.str.startswith("iALS")]
    assert (trained[trained.seed == 2].status == "missing").all()  # beyond the tuning seeds
    assert (main[main.label.str.startswith("iALS")].status == "untuned").all()  # not run: no iALS
    for nb in claim_tables.CLAIM_TABLES.values():
        tables.collect(ex.notebook_grid(nb, p, tmp_path), tmp_path, progress=False)
    got = claim_tables.recorded_tables(p, tmp_path)
    main = got["03_main_runs"]
    assert (main[~main.label.str.startswith("iALS")].status == "ok").all()
    assert {"CD", "CD-T", "CD-S", "CD-H", "CD-best", "RD"} <= set(main.label)
    assert claim_tables.save_recorded_tables(p, tmp_path) == "next"
    # beside them the claims before and after: none here, where the repository has no tables
    assert runs.read_table("next/verdict_change", tmp_path).empty
    # the tuning stage's runs and choices too, from the records (for `audit.violations`)
    tuned = pd.read_csv(tmp_path / "next" / "00_tuning_runs.csv")
    assert len(tuned) > 0 and (tuned.status == "ok").all() and set(tuned.dataset) == {"ml-100k"}
    chosen = pd.read_csv(tmp_path / "next" / "00_tuning.csv")
    assert chosen.groupby("stage").chosen.sum().eq(1).all()  # each stage chose one point
    claims = report.claims(tmp_path / "next")
    assert claims.claim.str.startswith(
        "3. CD beats RD (NDCG@10), primary: CD, the tuned CD, guide included"
    ).any()
    shown = readme_next.next_claims(tmp_path)  # what the README shows of them
    assert set(shown.dataset) == {"ml-100k"} and shown.claim.str.startswith("3. CD beats RD").any()
    section = "\n".join(readme_next._next_claims_section(tmp_path))
    assert "What `next`'s recorded runs say so far" in section
    assert "break the fair protocol" in section  # next's own violations (`audit.violations`)
    assert claims.claim.str.startswith("6. born-again CD beats the teacher").any()


def test_engine_targets_compares_each_measurement_with_issue_22s_target():
    """`readme_steps.engine_targets`: each target met or not from the bench's ratios, the peak
    memory on yelp (bench and distillation card, the larger), the grid's estimate and the card's
    time; a target with nothing measured (yelp's epochs, here) gets no row."""

    def step_row(dataset, run, sparse, deferred):
        return {
            "dataset": dataset,
            "run": run,
            "dense / sparse": sparse,
            "dense / deferred": deferred,
        }

    records = [
        {
            "dataset": {"name": "citeulike-t"},
            "peak_rss_gib": 1.0,
            "steps": [step_row("citeulike-t", "CDAE teacher", 12.0, 4.0)],
        },
        {
            "dataset": {"name": "ml-1m"},
            "peak_rss_gib": 1.0,
            "steps": [
                step_row("ml-1m", "CDAE teacher", 1.2, 1.1),
                step_row("ml-1m", "x", 1.0, 0.9),
            ],
        },
        {"dataset": {"name": "yelp"}, "peak_rss_gib": 3.0, "steps": []},
    ]
    card = {
        "data": {"name": "yelp.inter"},
        "wall_seconds": 1800.0 + 60,
        "peak_rss_gib": 4.5,
        "models": {"teacher": {"config": {"step": "sparse"}}},
    }
    t = readme_steps.engine_targets(records, [card], {"sparse": 29.0, "deferred": 31.0})
    met = {(r.target.split(" (")[0], r.step): r.met for r in t.itertuples()}
    assert met == {
        ("citeulike-t CDAE teacher epoch >= 10x faster", "sparse"): True,
        ("citeulike-t CDAE teacher epoch >= 10x faster", "deferred"): False,
        ("no kind of epoch slower on ml-1m", "sparse"): True,
        ("no kind of epoch slower on ml-1m", "deferred"): False,
        ("peak memory of any yelp run <= 4 GiB", "every step benched; distill's"): False,
        ("the paper profile <= 30 CPU hours", "sparse"): True,
        ("the paper profile <= 30 CPU hours", "deferred"): False,
        ("python -m cdlib.distill on yelp <= 30 minutes", "sparse"): False,
    }
    assert "slowest: x" in t.target[t.step == "deferred"].iloc[1]
    assert t.measured[t.target.str.startswith("peak")].iloc[0] == "4.5 GiB"


def test_first_epoch_drops_count_neumf_students_whose_first_epoch_falls_below_popularity(tmp_path):
    """A NeuMF student whose first validation NDCG@10 is under half the most-popular ranking's
    counts as dropped, one above does not; teachers and CDAE runs are not counted; a run two
    tables list counts once; the seeds that dropped are named."""
    from cdlib import runs

    table = []
    for key, backbone, size, method, seed, first in [
        ("a", "neumf", 8, "none", 0, 0.19),
        ("b", "neumf", 8, "none", 1, 0.05),
        ("c", "neumf", 8, "rd", 1, 0.09),
        ("d", "neumf", 64, "none", 1, 0.01),  # a teacher
        ("e", "cdae", 20, "none", 1, 0.01),
    ]:
        config = {
            "dataset": "d",
            "backbone": backbone,
            "size": size,
            "method": method,
            "seed": seed,
        }
        curve = [{"epoch": 1, "valid_NDCG@10": first}, {"epoch": 2, "valid_NDCG@10": 0.3}]
        runs.write_record(
            {"key": key, "config": config, "curve": curve, "popularity_valid_NDCG@10": 0.2},
            tmp_path,
        )
        table.append(dict(config, label=method, status="ok", key=key))
    t = pd.DataFrame(table)
    tables.save_table(t, "03_main_runs", tmp_path)
    tables.save_table(t, "04_sampling_runs", tmp_path)  # the same runs again
    got = audit.first_epoch_drops(tmp_path).set_index("method")
    assert list(got.index) == ["none", "rd"] and list(got.runs) == [2, 1]
    assert list(got.dropped) == [1, 1] and list(got["seeds dropped"]) == ["1", "1"]
    assert list(got.retrained) == [0, 0] and list(got["tower dead"]) == [0, 0]
    assert audit.first_epoch_drops(tmp_path, below=0.2).dropped.sum() == 0
    # what `analyses.first_epochs` measured: b (dropped) retrained with a dead tower, c (dropped)
    # with a live one, a (not dropped) with a dead one; a run retrained for two epochs is not read
    (tmp_path / "analysis").mkdir()
    for name, epochs, units in (("x", 1, {"a": 0, "b": 0, "c": 2}), ("y", 2, {"c": 0})):
        rows = [{"key": k, "tower_units_active": u} for k, u in units.items()]
        (tmp_path / "analysis" / f"first_epochs_{name}.json").write_text(
            json.dumps({"epochs": epochs, "rows": rows})
        )
    got = audit.first_epoch_drops(tmp_path).set_index("method")
    assert list(got.retrained) == [1, 1] and list(got["tower dead"]) == [1, 0]


def test_past_stop_section_counts_the_runs_stopped_at_the_minimum_and_names_those_that_rose(
    tmp_path,
):
    assert readme_next.past_stop_section(tmp_path) == []  # nothing probed: no section
    config = dict(dataset="a", backbone="neumf", method="none", size=8, lr=1e-3, mlp_init="ncf")
    config |= dict(valid_negatives="disjoint", epochs=1000, min_epochs=50, subset_users=None)
    for seed, stopped in enumerate((50, 52, 80)):
        runs.write_record(
            {
                "key": f"r{seed}",
                "config": dict(config, seed=seed),
                "epochs_run": stopped,
                "best_epoch": stopped - 30,
                "timing": {"wall_seconds": 1.0},
            },
            tmp_path,
        )
    m = {"HR@10": 0.5, "NDCG@10": 0.2}
    (tmp_path / "analysis").mkdir()
    # r1 stopped at the minimum and climbs past it; r2, patience's later stop, probed as a control,
    # does not
    for seed, stopped, best, late in ((1, 52, 61, 0.25), (2, 80, 50, 0.19)):
        curve = [{"epoch": e + 1, "valid_NDCG@10": 0.2 if e < 60 else late} for e in range(100)]
        (tmp_path / "analysis" / f"past_stop_r{seed}_100.json").write_text(
            json.dumps(
                {
                    "key": f"r{seed}",
                    "config": dict(config, seed=seed),
                    "epochs": 100,
                    "recorded": {
                        "epochs_run": stopped,
                        "best_epoch": stopped - 30,
                        "valid_sampled": m,
                        "test_sampled": m,
                        "test_full": m,
                    },
                    "best_epoch": best,
                    "valid_sampled": {"HR@10": 0.6, "NDCG@10": max(0.2, late)},
                    "test_sampled": {"HR@10": 0.55, "NDCG@10": 0.21},
                    "test_full": m,
                    "curve": curve,
                    "reproduced_record_curve": True,
                }
            )
        )
    text = "\n".join(readme_next.past_stop_section(tmp_path))
    assert (
        "ended 2 runs recorded for profile `next` within 5 epochs of the minimum (of the 3 it"
        in text
    )
    assert "1 of them were trained on to 100 epochs" in text
    assert "1 of them reproduced their recorded epochs bit for bit" in text
    assert "Profile `next` now trains yelp neumf for at least 100 epochs" in text
    assert "trained on too (`at_min` False, `--control`): 0 of 1 climbed more than 1%" in text
    assert (
        "1 climbed more than 1% above their best up to the stop (a neumf none lr 0.001 seed 1: "
        "+25.0% by epoch 61, more than 1% above from epoch 61)" in text
    )
    assert (
        "| a | neumf | none | 8 | 0.001 | 1 | r1 | 52 | True | 22 | True | 100 | 61 | +25.0% | +25.0% | +0.0% | +5.0% | +0.0% | False |"
        in text
    )
    assert "still rising when the probe ended" not in text  # both probes end flat
    assert "| a | neumf | none | 8 | 0.001 | 2 | r2 | 80 | False | 50 | True | 100 | 50 |" in text
