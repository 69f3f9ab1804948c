"""Two sets of records side by side (`cdlib.before_after`), on synthetic run tables."""

import numpy as np
import pandas as pd
import pytest
from test_experiments import rows

from cdlib import before_after, effects, plots, report, runs, sentences, tables


def test_verdict_change_compares_two_profiles_on_the_cells_both_pool(tmp_path):
    """`before_after.verdict_change`: each claim pooled under two sets of records on the cells both
    pool it on (a and b: cell c is the after profile's only, cell d has one seed before, so no
    variance to pool), matched by role (CD-T's rows before, CD's after), the kind of each verdict,
    under Hartung-Knapp too, and whether it changed; and its one-row-per-claim form
    (`sentences.verdict_change_glance`) after a CSV round trip."""
    rd = np.array([0.40, 0.42, 0.41, 0.43])
    noise = {"a": [1.01, 0.99, 1.0, 1.005], "b": [0.99, 1.01, 1.002, 0.995], "d": [1.3]}
    gain = {"a": [1.2, 1.22, 1.19, 1.21], "b": [1.1, 1.12, 1.11, 1.13], "c": [1.5, 1.6, 1.55, 1.5]}
    gain["d"] = [1.1, 1.2, 1.15, 1.1]
    before, after = tmp_path / "before", tmp_path / "after"
    for folder, arm, ratios in ((before, "CD-T", noise), (after, "CD", gain)):
        main = pd.DataFrame(
            [
                r
                for d, ratio in ratios.items()
                for r in rows("RD", list(rd[: len(ratio)]), d)
                + rows(arm, list(rd[: len(ratio)] * ratio), d)
            ]
        )
        tables.save_table(tables.best_cd(main), "03_main_runs", folder)
    change = before_after.verdict_change(before, after).set_index("claim")
    row = change.loc["3. CD beats RD (NDCG@10), primary CD arm"]
    assert (row["sampled: cells"], row["sampled: cell list"]) == (2, "a/cdae, b/cdae")
    assert (row["arm before"], row["arm after"]) == ("CD-T", "CD")
    name = "3. CD beats RD (NDCG@10), primary: CD, the tuned CD, guide included"
    pooled = {
        n: report.claims(after, cells=cells).set_index(["claim", "dataset"]).loc[(name, "pooled")]
        for n, cells in ((2, {("a", "cdae"), ("b", "cdae")}), (4, None))
    }
    pool = pooled[2]
    assert pool["cells (sampled)"] == 2 and pooled[4]["cells (sampled)"] == 4
    assert pool["effect % (sampled)"] < pooled[4]["effect % (sampled)"] - 5  # without c's +53%
    assert row["sampled: pooled after"].startswith(f"{pool['effect % (sampled)']:+.1f}% [")
    for k in ("effect %", "CI low", "CI high"):  # the same interval as numbers, for the figure
        assert row[f"sampled: {k} after"] == pool[f"{k} (sampled)"]
    assert row["sampled: verdict after"] == effects.verdict_kind(pool["verdict (sampled)"])
    assert row["sampled: verdict HK after"] == effects.verdict_kind(pool["verdict HK (sampled)"])
    assert row["sampled: verdict before"] == "does not hold"  # excludes the paper's 2.7%
    assert row["sampled: verdict after"] == "holds" and bool(row["sampled: changed"])
    # CD-best (of CD-T, CD-S, CD-H) is before's only: a claim one profile lacks has no row
    assert not change.index.str.contains("CD-best").any()
    assert change["arm before"].notna().equals(change.index.to_series().str.contains("primary"))
    assert before_after.by_role("4. gap recovered by CD-T (% of teacher - student, HR@10)") == (
        "4. gap recovered by the primary CD arm (% of teacher - student, HR@10)"
    )
    assert before_after.by_role("4. CD beats the plain student (HR@10)") == (
        "4. the primary CD arm beats the plain student (HR@10)"
    )
    # the figure: per protocol, each claim's interval before (first) and after (second); the claims
    # in % of the gap on a row of panels of their own
    fig = plots.verdict_change(change.reset_index())
    assert len(fig.axes) == 2
    before_bars, after_bars = fig.axes[0].containers
    assert np.allclose(after_bars.lines[0].get_xdata(), change["sampled: effect % after"])
    assert np.allclose(before_bars.lines[0].get_xdata(), change["sampled: effect % before"])
    plots.close(fig)
    gap = change.iloc[:1].rename(index=lambda c: "4. gap recovered by RD (% of teacher - student)")
    fig = plots.verdict_change(pd.concat([change, gap]).reset_index())
    assert len(fig.axes) == 4 and len(fig.axes[2].get_yticks()) == 1
    plots.close(fig)
    # a protocol on which no cell is pooled under both: no verdicts, and no change
    change["full: changed"] = change["full: changed"].astype(object)
    change.loc["3. CD beats RD (NDCG@10), primary CD arm", ["full: cells", "full: changed"]] = [
        0,
        None,
    ]
    tables.save_table(change, "verdict_change", after)
    back = runs.read_table("verdict_change", after)
    glance = sentences.verdict_change_glance(back).set_index("claim")
    g = glance.loc["3. CD beats RD (NDCG@10), primary CD arm (CD-T → CD)"]
    assert g["sampled"].startswith("2 cells: does not hold ") and " → holds" in g["sampled"]
    assert g["full"] == "no cell pooled under both" and g["kind changed on"] == "sampled"
    assert before_after.verdict_change(before, tmp_path / "nothing").empty  # no records: no rows


def test_main_change_compares_each_role_s_mean_on_the_cells_both_tables_have(tmp_path):
    """`before_after.main_change`: per cell both main tables have and role, the mean test NDCG@10
    over each one's seeds on both protocols, the primary CD arm matched by role, CD-best chosen per
    protocol (after: CD-T on the sampled validation, CD-S on the full one); and its
    one-row-per-cell form (`main_glance`)."""
    before, after = tmp_path / "before", tmp_path / "after"
    for folder, arm, cells, cd in (
        (before, "CD-T", "ab", [0.50, 0.52, 0.51]),
        (after, "CD", "bc", [0.55, 0.56]),
    ):
        n = len(cd)
        main = pd.DataFrame(
            [
                r
                for d in cells
                for r in rows("Teacher", [0.6] * n, d, full=[0.9] * n)
                + rows("RD", [0.45] * n, d)
                + rows(arm, cd, d, full=[v + 0.1 for v in cd])
                + (  # two guides, which the two protocols' validations rank differently
                    rows("CD-T", [0.3] * n, d, valid=[0.9] * n, full=[0.1] * n)
                    + rows("CD-S", [0.2] * n, d, valid=[0.1] * n, full=[0.8] * n)
                    if folder == after
                    else []
                )
            ]
        )
        tables.save_table(tables.best_cd(main), "03_main_runs", folder)
    change = before_after.main_change(before, after)
    assert set(change.dataset) == {"b"}  # the one cell both have
    roles = list(change.role)
    assert roles == ["Teacher", "RD", "primary CD arm", "CD-best"]  # MAIN_ROLES' order
    cd = change.set_index("role").loc["primary CD arm"]
    before_cd, after_cd = np.mean([0.50, 0.52, 0.51]) / 2, np.mean([0.55, 0.56]) / 2
    assert cd["NDCG@10 before (sampled)"] == pytest.approx(before_cd)
    assert cd["NDCG@10 after (sampled)"] == pytest.approx(after_cd)
    assert cd["change % (sampled)"] == pytest.approx(100 * (after_cd / before_cd - 1))
    assert (cd["seeds before (sampled)"], cd["seeds after (sampled)"]) == (3, 2)
    full = np.mean([0.6, 0.62, 0.61]) / 2, np.mean([0.65, 0.66]) / 2
    assert (cd["NDCG@10 before (full)"], cd["NDCG@10 after (full)"]) == pytest.approx(full)
    best = change.set_index("role").loc["CD-best"]
    assert best["NDCG@10 after (sampled)"] == pytest.approx(0.15)  # CD-T's test
    assert best["NDCG@10 after (full)"] == pytest.approx(0.4)  # CD-S's
    assert (best["seeds after (sampled)"], best["seeds after (full)"]) == (2, 2)
    assert best["NDCG@10 before (full)"] == pytest.approx(full[0])  # CD-T's, the only guide
    assert change.set_index("role").loc["Teacher", "NDCG@10 after (full)"] == pytest.approx(0.45)
    glance = before_after.main_glance(change, "sampled")
    assert list(glance.columns) == ["dataset", "backbone", *roles]
    assert glance.loc[0, "primary CD arm"] == (
        f"{before_cd:.4f} → {after_cd:.4f} ({100 * (after_cd / before_cd - 1):+.1f}%)"
    )
    assert before_after.main_change(before, tmp_path / "nothing").empty


def test_cell_change_sets_each_cell_s_effect_before_beside_after(tmp_path):
    """`before_after.cell_change`: a row per claim (by role) and cell both claims tables have (cell
    b is before's only), each protocol's seeds, paired effect with its interval and raw p, before
    and after, the values of each folder's own claims table."""
    rd = [0.40, 0.42, 0.41, 0.43]
    before, after = tmp_path / "before", tmp_path / "after"
    for folder, cells in ((before, {"a": 1.01, "b": 1.3}), (after, {"a": 1.2})):
        main = pd.DataFrame(
            [
                r
                for d, ratio in cells.items()
                for r in rows("RD", rd, d, "neumf")
                + rows("CD", [x * ratio + 0.001 * i for i, x in enumerate(rd)], d, "neumf")
            ]
        )
        tables.save_table(tables.best_cd(main), "03_main_runs", folder)
        tables.save_table(report.claims(folder).set_index("claim"), "claims", folder)
    change = before_after.cell_change(before, after)
    assert set(change.dataset) == {"a"} and set(change.backbone) == {"neumf"}
    row = change.set_index("claim").loc["3. CD beats RD (NDCG@10), primary CD arm"]
    name = "3. CD beats RD (NDCG@10), primary: CD, the tuned CD, guide included"
    for folder, when in ((before, "before"), (after, "after")):
        own = runs.read_table("claims", folder).set_index(["claim", "dataset"]).loc[(name, "a")]
        assert row[f"sampled: {when}"] == report.interval_text(own, "sampled")
        assert row[f"sampled: p {when}"] == own["p (sampled)"]
    assert row["sampled: seeds"] == "4 → 4"
    assert row["sampled: before"].startswith("+1.") and row["sampled: after"].startswith("+20.")
    assert before_after.cell_change(before, tmp_path / "none").empty


def test_init_change_shows_next_s_neumf_cells_under_both_initialisations(tmp_path):
    """`readme_next.init_change`: `cell_change` of results/next-torch-init (PyTorch's
    initialisation) against results/next (NCF's), NeuMF's cells only, the claims the README shows
    (`NEXT_CLAIMS`); and its section names the cells and both protocols' main tables."""
    from cdlib import claim_tables, readme_next

    rd = [0.40, 0.42, 0.41, 0.43]
    for folder, ratio in ((claim_tables.TORCH_INIT, 1.01), ("next", 1.2)):
        main = pd.DataFrame(
            [
                r
                for b in ("cdae", "neumf")
                for r in rows("RD", rd, "a", b)
                + rows("CD", [x * ratio + 0.001 * i for i, x in enumerate(rd)], "a", b)
            ]
        )
        tables.save_table(tables.best_cd(main), "03_main_runs", tmp_path / folder)
        claims = report.claims(tmp_path / folder).set_index("claim")
        tables.save_table(claims, "claims", tmp_path / folder)
    change = readme_next.init_change(tmp_path)
    assert set(change.backbone) == {"neumf"} and len(change)
    assert change.claim.str.startswith(("3. CD beats RD", "4. the primary CD arm beats")).all()
    assert not change.claim.str.contains("HR@10\\)$|gap recovered").any()
    section = "\n".join(readme_next._init_section(tmp_path))
    assert "(a/neumf)" in section and "full protocol" in section
    assert readme_next.init_change(tmp_path / "nothing").empty
