"""What the grid costs (`costs`): the share of a guided CD run that refreshes its student's ranking.
(The plan's prices: tests/test_plan.py.)"""

import pytest

from cdlib import costs, runs


def _cd(key, backbone, guide, switch=None, tower=None, refresh=1.0):
    return {
        "key": key,
        "config": {
            "dataset": "x",
            "backbone": backbone,
            "method": "cd",
            "guide": guide,
            "switch_epoch": switch,
            "refresh_every": 1,
            **({"refresh_tower": tower} if tower else {}),
        },
        "epochs_run": 100,
        "timing": {
            "refresh_seconds_mean": refresh,
            "epoch_seconds_mean": 2.0,
            "train_seconds": 200.0,
        },
    }


def test_the_refresh_share_counts_refreshes_from_the_student_s_first_epoch(tmp_path):
    for rec in (
        _cd("a", "cdae", "student"),
        _cd("b", "cdae", "hybrid", switch=50),  # 50 refreshes of 1 s in 200 s
        _cd("c", "neumf", "student", tower="feature-major", refresh=0.5),
        _cd("d", "neumf", "student", refresh=1.5),
        _cd("e", "cdae", "teacher", refresh=None),  # no refresh: not listed
    ):
        runs.write_record(rec, tmp_path)
    t = costs.refresh_share(tmp_path).set_index(["backbone", "guide", "tower"])
    assert len(t) == 4 and (t.runs == 1).all() and (t["epoch s"] == 2.0).all()
    share = t["share of training"]
    assert share["cdae", "student", "item-major"] == 0.5
    assert share["cdae", "hybrid", "item-major"] == 0.25
    assert share["neumf", "student", "feature-major"] == 0.25
    assert share["neumf", "student", "item-major"] == 0.75
    assert costs.refresh_share(tmp_path / "none").empty


def test_the_kernels_a_record_s_refresh_had_come_from_its_code_s_commit():
    """`refresh_kernels` reads the record's commit: this checkout's has both kernels, the commit
    before the first had none, and a record without a commit is unknown."""
    head = runs.git_state()["commit"]
    if head is None or runs.has_commit(head, costs.REFRESH_KERNELS[1][1]) is None:
        pytest.skip("not a git clone with this project's history")
    before = "9c6e69f4bdedaec63fe75fdec1851b86fbb69aa5"  # the parent of the tower kernel's commit

    def rec(commit, backbone="neumf", tower="feature-major"):
        c = {"backbone": backbone, **({"refresh_tower": tower} if tower else {})}
        return {"config": c, "provenance": {"git": {"commit": commit}}}

    assert costs.refresh_kernels(rec(head)) == "tower + top-k"
    assert costs.refresh_kernels(rec(head, tower=None)) == "top-k"  # item-major: torch's tower
    assert costs.refresh_kernels(rec(head, "cdae", None)) == "top-k"
    assert costs.refresh_kernels(rec(costs.REFRESH_KERNELS[0][1])) == "tower"
    assert costs.refresh_kernels(rec(before)) == "none"
    assert costs.refresh_kernels(rec(None)) == "unknown"
    assert costs.refresh_kernels(rec("0" * 40)) == "unknown"  # a commit this clone lacks
