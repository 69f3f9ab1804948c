"""The tuning stage on synthetic records (no training): stages in order with equal budgets, each
choice made on validation, a stage's frontier, and the choices beside another profile's."""

import dataclasses

import pandas as pd
import pytest
from conftest import fake_record as _fake_record
from conftest import fake_training as _fake_training

from cdlib import config, profiles, readme_next, tables, tuning
from cdlib import experiments as ex


def test_tuning_chooses_on_validation_in_stages_with_equal_budgets(tmp_path, monkeypatch):
    from cdlib import train

    assert len(tuning._points(profiles.TUNING["CD"])) == len(
        tuning._points(profiles.TUNING["RD"])
    )  # equal budgets
    assert len(tuning._points(profiles.TUNING["Teacher"])) == len(
        tuning._points(profiles.TUNING["Student"])
    )
    assert tuning._points(profiles.TUNING["RD"])[0] == {
        "lambda_rd": 1.0,
        "rd_k": 10,
    }  # the authors' defaults first
    seen = []

    def fake_run(cfg, results=None, refresh=False, progress=True, train=None):
        c = cfg.canonical()
        seen.append(c)
        # validation prefers lr 1e-2 for teachers, 3e-4 for students, lambda 0.1 for both methods;
        # test prefers the opposite, and must not matter
        good = {
            "none": (c.lr == (1e-2 if c.size == 200 else 3e-4)),
            "rd": c.lambda_rd == 0.1 and c.rd_k == 20,
            "cd": c.lambda_kd == 0.1 and c.n_distill == 20,
        }[c.method]
        return _fake_record(c, valid=0.9 if good else 0.1, test=0.1 if good else 0.9)

    monkeypatch.setattr(train, "run_group", lambda cfgs, *a, **kw: [fake_run(c) for c in cfgs])
    p = profiles.profile("quick")
    runs_df, choice = tuning.tune(p, "ml-100k", "cdae", tmp_path)
    assert choice == {
        "Teacher": {"lr": 1e-2},
        "Student": {"lr": 3e-4},
        "RD": {"lambda_rd": 0.1, "rd_k": 20},
        "CD": {"lambda_kd": 0.1, "n_distill": 20},
    }
    students = [c for c in seen if c.method != "none"]
    assert all(c.teacher_lr == 1e-2 and c.lr == 3e-4 for c in students)  # stages feed the next
    assert {c.seed for c in seen} == set(p.tune_seeds) and all(
        c.min_epochs == p.min_epochs for c in seen
    )
    t = tuning.tuning_table(runs_df, {("ml-100k", "cdae"): choice})
    assert t.chosen.sum() == 4 and len(t) == 4 + 4 + 6 + 6
    s = tuning.settings(p, "citeulike-t", "cdae", tmp_path)  # untuned: the nearest tuned
    assert s["RD"] == {"lr": 3e-4, "teacher_lr": 1e-2, "lambda_rd": 0.1, "rd_k": 20}


def test_the_next_profile_tunes_every_dataset_and_the_cd_guide_with_equal_budgets(
    tmp_path, monkeypatch
):
    """Issue 23: validation negatives disjoint from the test's, each dataset tuned on its own, and the
    CD guide chosen in tuning (the primary CD arm, the main table's "CD" row); CD and RD 8 each."""
    from cdlib import train

    nxt = profiles.PROFILES["next"]
    assert set(nxt.tuned) == set(nxt.datasets) and all(
        nxt.tuning_dataset(d) == d for d in nxt.datasets
    )
    rd = len(tuning._points(nxt.tuning["RD"]))
    cd = len(tuning._points(nxt.tuning["CD"])) + len(nxt.tuning["CD guide"]["guide"]) - 1
    assert rd == cd == 8  # the teacher-guided point of the guide stage is CD's chosen run
    assert len(tuning._points(nxt.ials_grid)) == 8  # iALS, the main table's reference rows, too
    paper = profiles.PROFILES["paper"]
    assert len(tuning._points(paper.ials_grid)) == len(tuning._points(paper.tuning["RD"])) == 6
    assert paper.ials_grid == {"regularization": [1.0, 10.0, 100.0], "alpha": [1.0, 10.0]}
    seen = {}

    def fake_run(cfg):
        c = cfg.canonical()
        seen[c.key()] = c
        good = {  # validation prefers lr 1e-3, lambda 0.1 and the student guide
            "none": c.lr == 1e-3,
            "rd": c.lambda_rd == 0.1,
            "cd": c.lambda_kd == 0.1 and c.guide == "student",
        }[c.method]
        v = 0.9 if good else (0.5 if c.method == "cd" and c.lambda_kd == 0.1 else 0.1)
        return _fake_record(c, valid=v)

    monkeypatch.setattr(train, "run_group", lambda cfgs, *a, **kw: [fake_run(c) for c in cfgs])
    p = profiles.profile("next", datasets=["citeulike-t"], backbones=["neumf"], seeds=[0])
    runs_df, choice = tuning.tune(p, "citeulike-t", "neumf", tmp_path)
    assert choice["CD"] == {"lambda_kd": 0.1, "n_distill": 10} and choice["CD guide"] == {
        "guide": "student"
    }
    per_method = pd.Series([c.method for c in seen.values()]).value_counts() / len(p.tune_seeds)
    assert per_method["rd"] == per_method["cd"] == 8  # distinct configurations
    assert {c.valid_negatives for c in seen.values()} == {"disjoint"}
    assert {c.dataset for c in seen.values()} == {"citeulike-t"}  # tuned on itself
    guide_stage = runs_df[runs_df.stage == "CD guide"]
    assert len(guide_stage) == 3 * len(p.tune_seeds)
    main = ex.main_grid(p, tmp_path)
    assert [c.key() for c in main["CD"]] == [c.key() for c in main["CD-S"]]  # the primary arm
    assert main["CD-T"][0].guide == "teacher" and main["CD-T"][0].lambda_kd == 0.1
    assert "CD" not in ex.main_grid(profiles.profile("quick"), tmp_path)  # guide not tuned there
    from cdlib import report

    assert report.primary_cd(pd.DataFrame({"label": ["CD-T", "CD", "RD"]})) == "CD"
    assert report.primary_cd(pd.DataFrame({"label": ["CD-T", "RD"]})) == "CD-T"


def test_bad_tuning_grids_and_epoch_rules_are_refused():

    with pytest.raises(ValueError, match="unknown parameter 'lamda'"):
        profiles.check_tuning({"CD": {"lamda": [1.0]}})
    with pytest.raises(ValueError, match="the grid of RD is empty"):
        profiles.check_tuning({"RD": {}})
    with pytest.raises(ValueError, match="'lambda_rd' has no values"):
        profiles.check_tuning({"RD": {"lambda_rd": []}})
    with pytest.raises(ValueError, match="unknown stage 'KD'"):
        profiles.check_tuning({"KD": {"lr": [1e-3]}})
    with pytest.raises(ValueError, match="RD may not vary 'lr'"):  # the student's stage chooses it
        profiles.check_tuning({"RD": {"lr": [1e-3]}})
    with pytest.raises(ValueError, match="CD may not vary 'guide'"):  # the guide stage's
        profiles.check_tuning({"CD": {"guide": ["student"]}})
    with pytest.raises(ValueError, match="CD guide may not vary 'lambda_kd'"):
        profiles.check_tuning({"CD": {"lambda_kd": [1.0]}, "CD guide": {"lambda_kd": [0.1]}})
    for p in profiles.PROFILES.values():
        profiles.check_tuning(p.tuning)
    with pytest.raises(ValueError, match="epoch cap epochs=20 is below min_epochs=50"):
        profiles.profile("quick", epochs=20)


def test_a_cell_s_longer_minimum_of_epochs_holds_for_all_its_runs_and_no_other_cell():
    p = profiles.profile("next")
    assert p.min_epochs_for == {("yelp", "neumf"): 100}
    student = p.config("yelp", "neumf", 0, size=8, method="cd").canonical()
    assert student.min_epochs == student.teacher().min_epochs == 100  # each arm alike
    assert p.config("yelp", "cdae", 0).min_epochs == p.config("ml-1m", "neumf", 0).min_epochs == 50
    with pytest.raises(ValueError, match=r"below min_epochs=300 \(\('ml-100k', 'cdae'\)\)"):
        profiles.profile("quick", epochs=200, min_epochs_for={("ml-100k", "cdae"): 300})


def test_a_cell_that_defers_every_table_does_so_in_all_its_runs_and_no_other_cell():
    """`Profile.defer_for`: yelp NeuMF's runs, its students' teachers among them, defer every
    table; the other cells keep the size rule, and with it the keys of their recorded runs."""
    p = profiles.profile("next")
    assert p.defer_for == {("yelp", "neumf"): "all"}
    student = p.config("yelp", "neumf", 0, size=8, method="cd").canonical()
    assert student.defer == student.teacher().defer == "all"
    for d, b in (("yelp", "cdae"), ("ml-1m", "neumf")):
        c = p.config(d, b, 0).canonical()
        assert c.defer is None and "defer" not in config.keyed_fields(config.fields_of(c))


def test_the_torch_init_tables_read_next_s_records_under_the_epoch_rules_they_were_made_with(
    monkeypatch,
):
    from cdlib import claim_tables

    seen = []
    monkeypatch.setattr(claim_tables, "save_recorded_tables", lambda p, *a, **kw: seen.append(p))
    claim_tables.save_torch_init_tables()
    (p,) = seen
    assert p.mlp_init is None and p.backbones == ["neumf"] and p.min_epochs_for == {}
    assert p.config("yelp", "neumf", 0).min_epochs == 50 and p.defer_for == {}
    assert p.config("yelp", "neumf", 0).defer is None


def test_tuning_change_sets_each_cell_s_new_choices_beside_the_borrowed_ones(tmp_path, monkeypatch):
    """Issue 23's closing note: the tuned settings per dataset under `next`, and how far they moved
    from those the paper profile borrowed from ml-1m (whose validation, here, prefers lr 1e-3)."""
    _fake_training(monkeypatch, paper_lr=1e-3)
    paper, nxt = (
        profiles.profile(n, datasets=["citeulike-t"], backbones=["neumf"])
        for n in ("paper", "next")
    )
    assert tuning.tuning_change(paper, nxt, tmp_path).empty  # nothing tuned under next yet
    tuning.tune(nxt, "citeulike-t", "neumf", tmp_path, progress=False)
    t = tuning.tuning_change(paper, nxt, tmp_path).set_index("stage")
    assert list(t.index) == ["Teacher", "Student", "RD", "CD", "CD guide"]
    assert (t.before == "").all() and t.moved.isna().all()  # ml-1m's tuning not recorded
    assert t["largest grid step"].isna().all()
    assert (t["after tuned on"] == "citeulike-t").all()
    tuning.tune(paper, "ml-1m", "neumf", tmp_path, progress=False)
    t = tuning.tuning_change(paper, nxt, tmp_path).set_index("stage")
    assert (t["before tuned on"] == "ml-1m").all()
    assert t.loc["Teacher", "before"] == "Teacher lr=0.001" and t.loc["Teacher", "moved"]
    assert t.loc["Teacher", "after"] == "Teacher lr=0.003"
    assert t.loc["Teacher", "grid steps"] == "lr +1"  # 1e-3 to 3e-3 on 1e-4, 3e-4, 1e-3, 3e-3, ...
    assert (t.loc[~t.moved.astype(bool), "grid steps"] == "").all()
    assert t.loc["Teacher", "largest grid step"] == 1
    assert (t.loc[~t.moved.astype(bool), "largest grid step"] == 0).all()
    assert readme_next._moved_sentence(t.reset_index()) == (
        " In the 1 cell that borrowed ml-1m's settings before, 2 of 5 stage choices moved (a "
        "setting by at most 1 grid step)."
    )
    assert t.loc["Teacher", "after at grid edge"] == ""  # 3e-3 is inside 3e-4 ... 1e-2
    assert (
        t.loc["RD", "after at grid edge"] == "lambda_rd"
    )  # 1.0, the top of RD's grid (rd_k: 2 values)
    assert t.loc["CD", "after"] == "CD lambda_kd=1, n_distill=20" and not t.loc["CD", "moved"]
    assert t.loc["CD guide", "before"] == "CD guide guide=teacher (fixed)"
    assert t.loc["CD guide", "after"] == "CD guide guide=teacher" and not t.loc["CD guide", "moved"]
    assert tuning.tuning_change(nxt, dataclasses.replace(paper, tuning=None), tmp_path).empty


def test_grid_moves_counts_each_numeric_setting_s_move_along_its_sorted_grid():
    grid = {"lambda_kd": [0.5, 0.1, 1.0], "n_distill": [10, 20], "guide": ["teacher", "student"]}
    was = {"lambda_kd": 0.1, "n_distill": 20, "guide": "teacher"}
    moves = tuning.grid_moves(grid, was, {**was, "lambda_kd": 1.0, "n_distill": 10})
    assert moves == {"lambda_kd": 2, "n_distill": -1}
    assert tuning.steps_text(moves) == "lambda_kd +2, n_distill -1"
    assert tuning.grid_moves(grid, was, {**was, "guide": "student"}) == {}  # not a number
    assert tuning.grid_moves(grid, was, dict(was)) == {} and tuning.steps_text({}) == ""
    off = tuning.grid_moves(grid, {**was, "lambda_kd": 0.3}, {**was, "n_distill": 10})
    assert off == {"lambda_kd": None, "n_distill": -1}  # 0.3 is not on the grid
    assert tuning.steps_text(off) == "lambda_kd off the grid, n_distill -1"


def test_the_tuning_frontier_is_the_first_stage_not_recorded_whole(tmp_path, monkeypatch):
    """What the tuning stage needs next (`cdlib.backlog`'s first runs): the teacher's stage, then,
    once it is recorded, the student's at the teacher's choice; nothing once every stage is."""
    _fake_training(monkeypatch)
    p = profiles.profile("smoke", train_missing=True)
    q = dataclasses.replace(p, tuning={**p.tuning, "Student": {"lr": [1e-3, 3e-3]}})
    teacher = tuning.stage_grid(q, "ml-100k", "cdae", "Teacher", {})
    assert tuning.tuning_frontier(q, "ml-100k", "cdae", tmp_path) == [
        c for cs in teacher.values() for c in cs
    ]
    tables.collect(teacher, tmp_path, progress=False)
    student = tuning.stage_grid(q, "ml-100k", "cdae", "Student", {"Teacher": {"lr": 3e-3}})
    want = [c for cs in student.values() for c in cs]
    tables.collect({"one": want[:1]}, tmp_path, progress=False)  # a stage recorded in part
    assert tuning.tuning_frontier(q, "ml-100k", "cdae", tmp_path) == want[1:]
    tuning.tune(q, "ml-100k", "cdae", tmp_path, progress=False)
    assert tuning.tuning_frontier(q, "ml-100k", "cdae", tmp_path) == []


def test_a_tie_on_validation_goes_to_the_earlier_point():
    p = profiles.profile("next")
    rows = pd.DataFrame(
        {"label": ["a", "a", "b", "b", "c", "c"], "valid NDCG@10": [0.2, 0.4, 0.3, 0.3, 0.1, 0.5]}
    )
    assert tuning.chosen_point(p, "Teacher", rows) == {"lr": profiles.LEARNING_RATES_NEXT[0]}
    rows.loc[5, "valid NDCG@10"] = 0.6
    assert tuning.chosen_point(p, "Teacher", rows) == {"lr": profiles.LEARNING_RATES_NEXT[2]}


def test_read_once_reads_each_cell_s_tuning_once_and_never_a_training_one(tmp_path, monkeypatch):
    """`tuning.read_once` (a planning pass): a tuning that trains nothing is walked once per
    cell within the block, whatever scope asks for it, its answer the same as unmemoised; a
    record written after the block is seen; a profile that trains is walked every time."""
    _fake_training(monkeypatch)
    p = profiles.profile("smoke", train_missing=True)
    look = dataclasses.replace(p, execution=dataclasses.replace(p.execution, train=False))
    walks = []
    walk = tuning._walk
    monkeypatch.setattr(tuning, "_walk", lambda *a: walks.append(a[1:3]) or walk(*a))
    before = tuning.tune(look, "ml-100k", "cdae", tmp_path, progress=False)
    assert before[1] is None and len(walks) == 1
    with tuning.read_once():
        first = tuning.tune(look, "ml-100k", "cdae", tmp_path, progress=False)
        again = tuning.tune(look.scoped("size"), "ml-100k", "cdae", tmp_path, progress=False)
        tuning.tune(look, "ml-1m", "cdae", tmp_path, progress=False)
        tuning.tune(p, "ml-100k", "cdae", tmp_path, progress=False)  # trains: walked, not kept
        tuning.tune(p, "ml-100k", "cdae", tmp_path, progress=False)
        stale = tuning.tune(look, "ml-100k", "cdae", tmp_path, progress=False)
    assert walks[1:] == [("ml-100k", "cdae"), ("ml-1m", "cdae")] + [("ml-100k", "cdae")] * 2
    pd.testing.assert_frame_equal(first[0], before[0])
    pd.testing.assert_frame_equal(again[0], before[0])
    assert stale[1] is None  # the block's first reading, though the runs were trained meanwhile
    after = tuning.tune(look, "ml-100k", "cdae", tmp_path, progress=False)
    assert after[1] is not None and len(walks) == 6


def test_beyond_is_the_next_value_of_a_grid_s_progression_past_its_edge():
    rd = profiles.TUNING_NEXT["RD"]["lambda_rd"]  # 1, 0.3, 0.1, 0.03
    assert tuning.beyond(rd, 1.0) == 3.3 and tuning.beyond(rd, 0.03) == 0.009
    assert tuning.beyond(rd, 0.3) is None and tuning.beyond([1.0], 1.0) is None
    lrs = profiles.LEARNING_RATES_NEXT  # 3e-4 ... 1e-2, then 1e-4 and 3e-2
    assert tuning.beyond(lrs, 3e-2) == 0.09 and tuning.beyond(lrs, 1e-4) == 3.3e-5


def test_edge_check_runs_each_choice_at_an_edge_one_step_past_it(tmp_path, monkeypatch):
    """A choice at an edge of its grid gets the stage's point one step past that edge, at the
    choices of the stages before it, on the tuning seeds; the check says whether validation still
    rises there (an edge of a two-value dimension, or a guide, is none)."""
    from cdlib import runs

    _fake_training(monkeypatch)
    p = profiles.profile("next", datasets=["ml-100k"], backbones=["cdae"], train_missing=True)
    _, choice = tuning.tune(p, "ml-100k", "cdae", tmp_path, progress=False)
    # fake validation: every RD point ties (the first, lambda_rd = 1, an edge); CD's best is
    # lambda_kd = 1 (the largest) with 20 items (a two-value dimension: no edge)
    assert choice["RD"] == {"lambda_rd": 1.0, "rd_k": 10}
    assert choice["CD"] == {"lambda_kd": 1.0, "n_distill": 20}
    grids = tuning.beyond_edge_grid(p, "ml-100k", "cdae", choice)
    assert list(grids) == [("RD", "lambda_rd"), ("CD", "lambda_kd")]
    (rd,) = grids[("RD", "lambda_rd")].values()
    (cd,) = grids[("CD", "lambda_kd")].values()
    assert [c.seed for c in rd] == p.tune_seeds
    assert {(c.lambda_rd, c.rd_k, c.lr, c.teacher_lr) for c in rd} == {
        (3.3, 10, choice["Student"]["lr"], choice["Teacher"]["lr"])
    }
    assert {(c.lambda_kd, c.n_distill, c.guide) for c in cd} == {(2.0, 20, "teacher")}
    assert tuning.edge_frontier(p, "ml-100k", "cdae", tmp_path) == rd + cd
    off = dataclasses.replace(p, execution=dataclasses.replace(p.execution, train=False))
    t = tuning.edge_check(off, tmp_path, progress=False).set_index("stage")
    assert list(t.recorded) == ["0 / 2", "0 / 2"] and t["past better"].isna().all()
    for c in rd:  # RD still rises past its edge; CD (fake validation 0.1 off its best) does not
        runs.write_record({**_fake_record(c.canonical(), valid=0.95), "config": {}}, tmp_path)
    t = tuning.edge_check(p, tmp_path, progress=False).set_index("stage")
    assert (
        list(t.recorded) == ["2 / 2", "2 / 2"]
        and tuning.edge_frontier(p, "ml-100k", "cdae", tmp_path) == []
    )
    assert t.loc["RD", "past better"] and not t.loc["CD", "past better"]
    assert t.loc["RD", "past the edge"] == "RD lambda_rd=3.3, rd_k=10"
    assert t.loc["RD", "past - chosen %"] == pytest.approx(100 * (0.95 - 0.9) / 0.9)
    assert t.loc["CD", "valid NDCG@10, past"] == pytest.approx(0.1)
    text = readme_next._edge_section(tmp_path)[0]  # the README's sentence, from these records
    assert text.startswith("Of these choices, 2 settings lie at an edge of their grid.")
    assert "validation NDCG@10 still rises in 1 of the 2 recorded: ml-100k cdae " in text
    assert "RD lambda_rd=3.3, rd_k=10 (+5.6% over RD lambda_rd=1, rd_k=10)" in text


def test_teacher_margin_sets_the_chosen_teacher_against_the_chosen_student_per_seed(
    tmp_path, monkeypatch
):
    """Issue 23's weak teachers, seen from the tuning stage: the chosen teacher's validation NDCG@10
    against the chosen plain student's, as means and seed by seed, once those two stages are
    recorded (RD's and CD's need not be)."""

    def valid(c):
        if c.method != "none":
            return 0.1
        if c.size == 200:  # the teacher: lr 3e-3 chosen, 0.5 and 0.3 on seeds 0 and 1
            return {3e-3: 0.5 - 0.2 * c.seed, 1e-3: 0.35}[c.lr]
        return {3e-3: 0.2 + 0.2 * c.seed, 1e-3: 0.1}[c.lr]  # the student: 0.2 and 0.4

    _fake_training(monkeypatch, valid=valid)
    p = profiles.profile("smoke", backbones=["cdae"], train_missing=True)
    p = dataclasses.replace(
        p,
        tune_seeds=[0, 1],
        tuning={**p.tuning, "Teacher": {"lr": [1e-3, 3e-3]}, "Student": {"lr": [1e-3, 3e-3]}},
    )
    assert tuning.teacher_margin(p, tmp_path).empty  # nothing recorded
    teacher = tuning.stage_grid(p, "ml-100k", "cdae", "Teacher", {})
    tables.collect(teacher, tmp_path, progress=False)
    assert tuning.teacher_margin(p, tmp_path).empty  # the student's stage is not recorded
    student = tuning.stage_grid(p, "ml-100k", "cdae", "Student", {"Teacher": {"lr": 3e-3}})
    tables.collect(student, tmp_path, progress=False)
    margin = tuning.teacher_margin(p, tmp_path)
    (row,) = margin.to_dict("records")
    assert row["teacher"] == "Teacher lr=0.003" and row["student"] == "Student lr=0.003"
    assert row["teacher valid NDCG@10"] == pytest.approx(0.4)
    assert row["student valid NDCG@10"] == pytest.approx(0.3)
    assert row["seeds"] == 2 and row["margin %"] == pytest.approx(100 / 3)
    assert row["smallest seed margin %"] == pytest.approx(-25.0)  # seed 1: 0.3 against 0.4
    text = readme_next._teacher_margin_section(margin)
    assert "A chosen teacher below its student on a tuning seed: ml-100k cdae (-25.0%" in text[0]
