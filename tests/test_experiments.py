"""Grids, tables and claims on synthetic run rows (no training)."""
import numpy as np
import pandas as pd
from scipy import stats

from cdlib import experiments as ex, report


def rows(label, values, dataset="d", backbone="cdae"):
    return [{"label": label, "dataset": dataset, "backbone": backbone, "seed": s, "status": "ok", "n_params": 10,
             "HR@10": v, "NDCG@10": v / 2} for s, v in enumerate(values)]


def test_summarize_and_compare_with_paired_t_test():
    cd, rd = [0.50, 0.52, 0.55], [0.45, 0.50, 0.50]
    df = pd.DataFrame(rows("CD-best", cd) + rows("RD", rd) + [{"label": "RD", "dataset": "d", "backbone": "cdae",
                                                              "seed": 9, "status": "missing"}])
    t = ex.summarize(df)
    assert abs(t.loc[("d", "cdae", "CD-best"), "HR@10 mean"] - np.mean(cd)) < 1e-12
    assert abs(t.loc[("d", "cdae", "RD"), "HR@10 std"] - np.std(rd, ddof=1)) < 1e-12
    assert t.loc[("d", "cdae", "RD"), "seeds"] == 3                      # the missing run is not counted
    g = ex.compare(df, "CD-best", "RD").iloc[0]
    assert abs(g["HR@10 gain %"] - 100 * (np.mean(cd) - np.mean(rd)) / np.mean(rd)) < 1e-9
    assert abs(g["HR@10 p"] - stats.ttest_rel(cd, rd).pvalue) < 1e-12


def test_best_cd_picks_the_best_guide_per_cell():
    df = pd.DataFrame(rows("CD-T", [0.3, 0.3]) + rows("CD-S", [0.4, 0.3]) + rows("CD-H", [0.1, 0.1]) +
                      rows("CD-T", [0.1, 0.1], backbone="neumf") + rows("CD-S", [0.5, 0.5], backbone="neumf"))
    out = ex.best_cd(df)
    best = out[out.label == "CD-best"].groupby("backbone").best_of.first()
    assert best["cdae"] == "CD-S" and best["neumf"] == "CD-S"
    assert (out[out.label == "CD-best"].groupby("backbone").size() == 2).all()   # both seeds of the best guide


def test_grids_share_configurations_across_notebooks():
    p = ex.profile("smoke")
    main, guid, samp = ex.main_grid(p), ex.guidance_grid(p), ex.sampling_grid(p)
    assert guid["CD-S"] == main["CD-S"]
    assert samp["rank/teacher"] == main["CD-T"]                         # same run, trained once
    size = ex.size_grid(p)
    assert {c.size for c in size["Student"] if c.backbone == "cdae"} == {5, 10, 20, 50}
    assert all(c.size == 200 and c.method == "cd" for c in size["BACD"] if c.backbone == "cdae")
    sens = ex.sensitivity_grid(p)
    assert len(sens) == sum(len(v) for v in ex.SENSITIVITY.values())


def test_claims_report_held_and_paper_range(tmp_path):
    gain = pd.DataFrame([{"dataset": "d", "backbone": "cdae", "better": "CD-best", "worse": "RD", "seeds": 3,
                          "HR@10 gain %": 40.0, "HR@10 p": 0.01, "NDCG@10 gain %": -1.0, "NDCG@10 p": 0.5}])
    ex.save_table(gain, "03_gain_cd_over_rd", tmp_path)
    main = pd.DataFrame(rows("Teacher", [0.6, 0.6]) + rows("CD-best", [0.5, 0.5]))
    ex.save_table(main, "03_main_runs", tmp_path)
    c = report.claims(tmp_path).set_index("claim")
    hr = c.loc["3. CD beats RD (HR@10)"]
    assert bool(hr["held"]) and not bool(hr["in paper range"])            # 40% is above the paper's 33.2%
    assert not bool(c.loc["3. CD beats RD (NDCG@10)"]["held"])
    close = c.loc["4. CD student comes close to the teacher (NDCG@10)"]
    assert not bool(close["held"]) and close["measured"].startswith("83.3%")


def test_claims_bacd_and_sampling_use_paired_seeds(tmp_path):
    teacher, bacd = [0.60, 0.62, 0.61], [0.63, 0.64, 0.65]
    ex.save_table(pd.DataFrame(rows("Teacher", teacher) + rows("BACD", bacd)), "06_size_runs", tmp_path)
    ex.save_table(pd.DataFrame(rows("rank/teacher", [0.50, 0.40, 0.52]) + rows("uniform/teacher", [0.49, 0.45, 0.50])),
                  "04_sampling_runs", tmp_path)
    c = report.claims(tmp_path).set_index("claim")
    hr = c.loc["6. born-again CD beats the teacher (HR@10)"]
    p = stats.ttest_rel(bacd, teacher).pvalue
    assert f"p = {p:.3g}" in hr["measured"] and bool(hr["held"]) == (p < 0.05)
    assert hr["measured"].startswith(f"{100 * (np.mean(bacd) - np.mean(teacher)) / np.mean(teacher):+.1f}%")
    samp = c.loc["2. rank-aware sampling beats uniform (teacher-guided, NDCG@10)"]
    assert not bool(samp["held"]) and "3 seeds" in samp["measured"]      # mean gain < 0


def test_readme_section_is_replaced_between_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.START}\nold\n{report.END}\nafter\n")
    ex.save_table(pd.DataFrame({"claim": ["x"], "held": [True]}).set_index("claim"), "claims", tmp_path)
    assert report.update_readme(tmp_path, readme)
    text = readme.read_text()
    assert "old" not in text and "| x | True |" in text and text.endswith("after\n")
    assert not report.update_readme(tmp_path, readme)                    # idempotent


def test_coverage_counts_seeds_and_shows_unrun_cells(tmp_path):
    main = pd.DataFrame(rows("Teacher", [0.6, 0.6, 0.6]) + rows("RD", [0.5])
                        + [{"label": "Teacher", "dataset": "e", "backbone": "neumf", "seed": 0, "status": "missing"}])
    ex.save_table(main, "03_main_runs", tmp_path)
    cov = report.coverage(tmp_path)
    assert cov.loc[("d", "cdae"), "Teacher"] == 3 and cov.loc[("d", "cdae"), "RD"] == 1
    assert cov.loc[("d", "cdae"), "seeds"] == "0, 1, 2"
    assert cov.loc[("e", "neumf"), "Teacher"] == 0 and cov.loc[("e", "neumf"), "seeds"] == "-"


def test_early_stops_lists_runs_stopped_on_their_initial_plateau(tmp_path):
    from cdlib import runs
    base = {"dataset": "d", "backbone": "neumf", "size": 8, "method": "rd", "seed": 0, "epochs": 200, "patience": 20}
    for seed, best, run in ((0, 4, 24), (1, 150, 170), (2, 20, 200)):   # plateau; trained; budget spent
        runs.write_record({"config": dict(base, seed=seed), "best_epoch": best, "epochs_run": run,
                           "test_sampled": {"HR@10": 0.4 + seed / 10},
                           "curve": [{"valid_NDCG@10": 0.2}, {"valid_NDCG@10": 0.25}]}, tmp_path)
    stops = report.early_stops(tmp_path)
    assert list(stops.seed) == [0] and stops.loc[0, "best epoch"] == 4 and stops.loc[0, "test HR@10"] == 0.4
    assert stops.loc[0, "best valid NDCG@10"] == 0.25
    assert "### Runs stopped early" in report.readme_section(tmp_path)


def test_claim_5_compares_teacher_and_student_on_the_same_device(tmp_path):
    def t(label, size, ms, device):
        return {"dataset": "d", "label": label, "backbone": "cdae", "size": size, "n_params": 10 * size,
                "latency_ms": ms, "device": device}
    eff = pd.DataFrame([t("Teacher", 200, 4.0, "cpu: x"), t("Student", 20, 1.0, "cpu: x"),
                        t("Teacher", 200, 0.1, "NVIDIA H100"), t("Student", 20, 0.2, "NVIDIA H100")])
    ex.save_table(eff, "08_efficiency", tmp_path)
    c = report.claims(tmp_path)
    c = c[c.claim == "5. the student is smaller and faster"].set_index(c.measured.str.contains("H100"))
    assert len(c) == 2
    assert bool(c.loc[False, "held"]) and "4.0x faster" in c.loc[False, "measured"]
    assert not bool(c.loc[True, "held"]) and "0.5x faster" in c.loc[True, "measured"]
