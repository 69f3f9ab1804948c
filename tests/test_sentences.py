"""The results in sentences (`cdlib.sentences`), on small claims tables written out by hand."""

import pandas as pd
import pytest

from cdlib import effects, sentences


def test_primary_against_best_names_the_cells_that_disagree():
    def row(claim, d, e, lo, hi, held):
        r = {"claim": claim, "dataset": d, "backbone": "cdae"}
        for proto in ("sampled", "full"):
            r.update(
                {
                    f"effect % ({proto})": e,
                    f"CI low ({proto})": lo,
                    f"CI high ({proto})": hi,
                    f"held ({proto})": held,
                }
            )
        return r

    prim, best = (
        "3. CD beats RD (NDCG@10), primary: CD",
        "3. CD beats RD (NDCG@10), secondary: best",
    )
    table = pd.DataFrame(
        [
            row(prim, "a", -0.01, -1.0, 1.0, False),  # a sign near 0 against a sure one: disagree
            row(best, "a", 3.0, 1.0, 5.0, False),
            row(prim, "b", -0.01, -1.0, 1.0, False),  # both signs uncertain: noise, agree
            row(best, "b", 0.5, -1.0, 2.0, False),
            row(prim, "c", 2.0, 1.0, 3.0, False),  # held by CD-best only
            row(best, "c", 4.0, 3.0, 5.0, True),
            row(prim, "pooled", 1.0, 0.0, 2.0, False),
            row(best, "pooled", 2.0, 1.0, 3.0, True),
        ]
    )
    sampled, full = sentences.primary_against_best(table)
    assert (
        "in 2 of 3 cells: a/cdae (-0.0% against +3.0%), c/cdae (+2.0% against +4.0%; held by CD-best only)."
        in sampled
    )
    assert full.startswith("Full protocol, NDCG@10")
    assert sentences.primary_against_best(table, "HR@10") == []


def test_a_verdict_s_kind_ignores_its_reasons_and_refuses_other_text():
    assert effects.verdict_kind("holds overall; holds in 3 of 10 cells") == "holds"
    assert effects.verdict_kind("does not hold (the pooled effect is negative)") == "does not hold"
    assert effects.verdict_kind("inconclusive: the interval contains 0; holds in 1 of 2 cells") == (
        "inconclusive"
    )
    with pytest.raises(ValueError, match="not a verdict"):
        effects.verdict_kind("held")


def test_hartung_knapp_is_named_where_it_changes_the_verdict_s_kind_only():
    def pooled(v, vhk):
        return {
            "CI low HK (full)": -1.4,
            "CI high HK (full)": 15.1,
            "verdict (full)": v,
            "verdict HK (full)": vhk,
        }

    same = sentences._hartung_knapp(
        pooled("holds overall; holds in 3 of 10 cells", "holds overall; holds in 3 of 10 cells"),
        "full",
    )
    assert same == "; Hartung-Knapp interval [-1.4, +15.1]"
    changed = sentences._hartung_knapp(
        pooled("holds overall; holds in 3 of 10 cells", "inconclusive: the interval contains 0"),
        "full",
    )
    assert changed.endswith("under which the claim is inconclusive: the interval contains 0")


def test_at_a_glance_gives_each_claim_s_verdict_kind_and_cells_held_per_protocol():
    def row(d, e, held, p, verdict="", hk=None, cells=None):
        r = {"claim": "4. CD beats the plain student (NDCG@10)", "dataset": d, "paper": "better"}
        for proto in ("sampled", "full"):
            r |= {
                f"effect % ({proto})": e,
                f"CI low ({proto})": e - 1,
                f"CI high ({proto})": e + 1,
                f"held ({proto})": held,
                f"p ({proto})": p,
                f"verdict ({proto})": verdict,
                f"verdict HK ({proto})": hk,
                f"cells ({proto})": cells,
            }
        return r

    table = pd.DataFrame(
        [
            row("a", 3.0, True, 0.01),
            row("b", 1.0, False, 0.2),
            row("c", 9.0, True, float("nan")),  # one seed: no test, not counted (nor held)
            row(
                "pooled",
                2.0,
                True,
                0.01,
                "holds overall; holds in 1 of 2 cells",
                "inconclusive: x",
                2,
            ),
        ]
    )
    g = sentences.at_a_glance(table).iloc[0]
    assert g["sampled"] == "+2.0% [+1.0, +3.0]"
    assert g["sampled: verdict"] == "holds (fragile: inconclusive under Hartung-Knapp)"
    assert g["sampled: cells held"] == g["full: cells held"] == "1 of 2"
    table.loc[3, "verdict HK (full)"] = "holds overall"
    assert sentences.at_a_glance(table).iloc[0]["full: verdict"] == "holds"
    # a gain shown, but smaller than the paper's smallest: said beside the verdict
    table["paper range is (full)"] = ["", "", "", "above"]
    table.loc[3, "paper range is (sampled)"] = "overlapping"
    g = sentences.at_a_glance(table).iloc[0]
    assert g["full: verdict"] == "holds; the paper's range lies above the interval"
    assert g["sampled: verdict"] == "holds (fragile: inconclusive under Hartung-Knapp)"
    table.loc[3, "cells (full)"] = float("nan")  # no cell with two seeds: nothing pooled
    assert sentences.at_a_glance(table).iloc[0]["full"] == "no pooled estimate"
    assert sentences.at_a_glance(table[table.dataset != "pooled"]).empty


def test_a_verdict_that_rests_on_one_cell_names_it_and_many_such_cells_are_counted():
    r = {
        "cells (sampled)": 7,
        "changes without one cell (sampled)": "ml-1m/neumf: inconclusive; yelp/cdae: does not hold",
    }
    assert sentences._changes(r, "sampled") == (
        "inconclusive without ml-1m/neumf, does not hold without yelp/cdae"
    )
    assert sentences._without_one(r, "sampled") == (
        "; left out one cell at a time, the verdict changes without ml-1m/neumf: inconclusive; "
        "yelp/cdae: does not hold"
    )
    r["changes without one cell (sampled)"] = "; ".join(
        f"c{i}/cdae: inconclusive" for i in range(3)
    )
    assert sentences._changes(r, "sampled") == "inconclusive without any one of 3 of its 7 cells"
    r["changes without one cell (sampled)"] = "no cell"  # checked: none changes it
    assert sentences._changes(r, "sampled") == ""
    assert sentences._without_one(r, "sampled") == (
        "; left out one cell at a time, the verdict stands each time"
    )
    r["changes without one cell (sampled)"] = float("nan")  # one cell, or a table from before
    assert sentences._changes(r, "sampled") == sentences._without_one(r, "sampled") == ""
    table = pd.DataFrame(  # in the glance, beside the verdict's kind
        [
            {"claim": "4. x", "dataset": "a", "paper": "better", "p (sampled)": 0.01},
            {
                "claim": "4. x",
                "dataset": "pooled",
                "paper": "better",
                "effect % (sampled)": 2.0,
                "CI low (sampled)": 1.0,
                "CI high (sampled)": 3.0,
                "verdict (sampled)": "holds overall; holds in 0 of 1 cells",
                "cells (sampled)": 2,
                "changes without one cell (sampled)": "a/cdae: inconclusive",
            },
        ]
    )
    table["held (sampled)"] = False
    g = sentences.at_a_glance(table).iloc[0]
    assert g["sampled: verdict"] == "holds; inconclusive without a/cdae"
