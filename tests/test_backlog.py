"""The backlog of a profile's runs and the workers that share it, on fake training (no training)."""

import dataclasses

from conftest import fake_training

from cdlib import audit, backlog, costs, ials, profiles, runs
from cdlib import experiments as ex
from cdlib.config import STUDENT, TEACHER_SIZE


def _profile(datasets=("ml-1m",), **kw):
    """Issue 23's profile on one backbone and two seeds (one dataset unless told): small grids."""
    return profiles.profile("next", datasets=datasets, backbones=["neumf"], seeds=[0, 2], **kw)


def test_the_backlog_opens_stage_by_stage_and_ranks_the_claims_first(tmp_path, monkeypatch):
    fake_training(monkeypatch)
    p = _profile()
    items = backlog.outstanding(p, tmp_path)
    stage = ex.stage_grid(p, "ml-1m", "neumf", "Teacher", {})
    assert sorted(i.config.key() for i in items) == sorted(
        c.canonical().key() for cs in stage.values() for c in cs
    )
    assert {i.table for i in items} == {
        "00_tuning"
    }  # the later stages wait on the teacher's choice
    ex.tune(p, "ml-1m", "neumf", tmp_path, progress=False)
    items = backlog.outstanding(p, tmp_path)
    keys = [i.config.key() for i in items]
    assert len(keys) == len(set(keys))  # a run two tables share is listed once
    cov = audit.profile_coverage(p, tmp_path).set_index("table").loc["all"]
    assert len(items) == cov.runs - cov.recorded  # every run the plan has left
    tiers = [i.tier for i in items]
    assert tiers == sorted(tiers) and set(tiers) == {0, 1, 2}
    first = [i for i in items if i.tier == 0]
    assert {i.table for i in first} == {"02_teachers", "03_main", "04_sampling", "06_student_size"}
    assert {i.label for i in first if i.table == "06_student_size"} == {"BACD"}  # claim 6
    assert {i.table for i in items if i.tier == 2} == {"07_sensitivity"}
    # within a tier, seed by seed, the teacher before the students that distil it
    seeds = [i.config.seed for i in first]
    assert seeds == sorted(seeds)
    seed2 = [i.config for i in first if i.config.seed == 2]  # seed 0's teacher is the tuning's
    assert seed2[0].method == "none" and seed2[0].size == TEACHER_SIZE["neumf"]
    assert all(c.has_teacher for c in seed2[2:])  # the teacher, then the plain student
    assert all(not runs.record_path(k, tmp_path).exists() for k in keys)


def test_the_claims_go_cell_by_cell_and_the_cut_tables_seed_by_seed(tmp_path, monkeypatch):
    """A cell's claims complete before the next cell's start; the size table and the sensitivity
    figure, which the issue cuts first, fill every cell's first seed before any cell's next."""
    fake_training(monkeypatch)
    p = _profile(datasets=["ml-1m", "citeulike-t"])
    for d in p.datasets:
        ex.tune(p, d, "neumf", tmp_path, progress=False)
    items = backlog.outstanding(p, tmp_path)
    for tier in (0, 1, 2):
        got = [(i.config.dataset, i.config.seed) for i in items if i.tier == tier]
        assert {d for d, _ in got} == set(p.datasets)
        if tier == 0:
            assert got == sorted(got, key=lambda x: (p.datasets.index(x[0]), x[1]))
        else:
            assert got == sorted(got, key=lambda x: (x[1], p.datasets.index(x[0])))


def test_workers_train_the_whole_plan_once_then_the_ials_rows(tmp_path, monkeypatch):
    fake_training(monkeypatch)
    called = []
    monkeypatch.setattr(ials, "main_rows", lambda p, results, execution: called.append(p.name))
    p = _profile(train_missing=True)
    n = backlog.work(p, tmp_path, poll=0)
    cov = audit.profile_coverage(p, tmp_path)
    assert (cov.recorded == cov.runs).all() and n == len(costs.profile_runs(p)) > 0
    assert called == ["next"] and backlog.outstanding(p, tmp_path) == []
    assert backlog.work(p, tmp_path, poll=0) == 0  # resumes: nothing is trained twice


def test_a_claimed_run_is_left_to_its_worker(tmp_path, monkeypatch):
    fake_training(monkeypatch)
    p = _profile(train_missing=True)
    first, second = backlog.outstanding(p, tmp_path)[:2]
    held = backlog.claim(first.config.key(), tmp_path)
    assert held is not None and backlog.claim(first.config.key(), tmp_path) is None
    assert backlog.work(p, tmp_path, poll=0, max_runs=1) == 1
    assert not runs.record_path(first.config.key(), tmp_path).exists()
    assert runs.record_path(second.config.key(), tmp_path).exists()
    held.close()  # the worker holding it stops (a lock dies with its process)
    assert backlog.claim(first.config.key(), tmp_path) is not None


def test_a_student_trains_its_teacher_first_unless_another_worker_holds_it(tmp_path, monkeypatch):
    fake_training(monkeypatch)
    p = _profile(train_missing=True)
    c = p.config("ml-1m", "neumf", 2, size=STUDENT["neumf"], method="cd").canonical()
    t = c.teacher().canonical()
    held = backlog.claim(t.key(), tmp_path)
    assert not backlog._train(c, p, tmp_path, worker=0)
    assert not runs.record_path(c.key(), tmp_path).exists()
    held.close()
    assert backlog._train(c, p, tmp_path, worker=0)
    assert all(runs.record_path(x.key(), tmp_path).exists() for x in (t, c))
    assert not backlog._train(c, p, tmp_path, worker=0)  # recorded: not trained again


def test_the_dry_run_lists_what_is_left_per_tier_and_table(tmp_path, monkeypatch, capsys):
    fake_training(monkeypatch)
    monkeypatch.setenv("CDLIB_RESULTS", str(tmp_path))
    argv = ["--profile", "next", "--datasets", "ml-1m", "--backbones", "neumf", "--dry"]
    assert backlog.main(argv) == 0
    out = capsys.readouterr().out
    assert "00_tuning" in out and "12 runs can be trained now" in out
    assert not list(tmp_path.glob("runs/*.json"))  # a dry run trains nothing


def test_a_run_that_fails_is_logged_and_left_and_the_time_limit_stops_a_worker(
    tmp_path, monkeypatch, capsys
):
    from cdlib import train

    fake_training(monkeypatch)
    monkeypatch.setattr(ials, "main_rows", lambda p, results, execution: None)
    p = _profile(train_missing=True)
    first, second = backlog.outstanding(p, tmp_path)[:2]
    fake = train.run_group

    def failing(cfgs, results=None, refresh=False, progress=True, execution=None):
        training = execution is None or execution.train
        if training and execution is not None and execution.deadline is not None:
            raise train.DeadlineReached("the time limit (CDLIB_DEADLINE) has passed")  # as train's
        if training and any(c.canonical().key() == first.config.key() for c in cfgs):
            raise FloatingPointError("loss is NaN")
        return fake(cfgs, results, refresh, progress, execution)

    monkeypatch.setattr(train, "run_group", failing)
    assert backlog.work(p, tmp_path, poll=0, max_runs=1) == 1
    out = capsys.readouterr()
    assert "failed" in out.out and "loss is NaN" in out.err  # the traceback
    assert runs.record_path(second.config.key(), tmp_path).exists()
    assert not runs.record_path(first.config.key(), tmp_path).exists()
    late = dataclasses.replace(p, execution=dataclasses.replace(p.execution, deadline=0.0))
    assert backlog.work(late, tmp_path, poll=0) == 0
    assert "stopped" in capsys.readouterr().out
