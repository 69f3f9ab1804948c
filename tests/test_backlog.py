"""The backlog of a profile's runs and the workers that share it, on fake training (no training)."""

import multiprocessing

import pandas as pd
import pytest
import torch
from conftest import fake_training

from cdlib import audit, backlog, checkpoint, experiments, ials, plan, profiles, runs, train, tuning
from cdlib.backlog import summary
from cdlib.config import STUDENT, TEACHER_SIZE


@pytest.fixture(autouse=True)
def _no_time_limit(monkeypatch, tmp_path):
    monkeypatch.delenv("CDLIB_DEADLINE", raising=False)
    # a worker sweeps the checkpoints of recorded runs: never this machine's own
    monkeypatch.setenv("CDLIB_CACHE", str(tmp_path / "cache"))


def _profile(datasets=("ml-1m",), seeds=(0, 2), **kw):
    """Issue 23's profile on one backbone and two seeds (one dataset unless told): small grids."""
    return profiles.profile("next", datasets=datasets, backbones=["neumf"], seeds=seeds, **kw)


def test_the_backlog_opens_stage_by_stage_and_ranks_the_claims_first(tmp_path, monkeypatch):
    fake_training(monkeypatch)
    p = _profile()
    items = backlog.outstanding(p, tmp_path)
    stage = tuning.stage_grid(p, "ml-1m", "neumf", "Teacher", {})
    assert sorted(i.config.key() for i in items) == sorted(
        c.canonical().key() for cs in stage.values() for c in cs
    )
    # the later stages wait on the teacher's choice
    assert {i.table for i in items} == {"00_tuning"}
    tuning.tune(p, "ml-1m", "neumf", tmp_path, progress=False)
    items = backlog.outstanding(p, tmp_path)
    keys = [i.config.key() for i in items]
    assert len(keys) == len(set(keys))  # a run two tables share is listed once
    # the runs past the grid's edges of the choices at one (`tuning.edge_check`), the plan's aside
    _, choice = tuning.tune(p, "ml-1m", "neumf", tmp_path, progress=False)
    edges = tuning.beyond_edge_grid(p, "ml-1m", "neumf", choice)
    assert edges  # (the fake validation puts some choice at an edge)
    past = {c.canonical().key() for g in edges.values() for cs in g.values() for c in cs}
    assert past <= {i.config.key() for i in items}
    assert {i.tier for i in items if i.config.key() in past} == {0}  # the first tier's, all
    # a run a grid lists too keeps its table (here the sensitivity figure's lambda_kd = 2)
    shared = {i.table for i in items if i.config.key() in past and i.table != "00_edges"}
    assert shared == {"07_sensitivity"}
    items = [i for i in items if i.table != "00_edges"]
    cov = audit.profile_coverage(p, tmp_path).set_index("table")
    left = (cov.runs - cov.recorded)[lambda x: x > 0]
    assert len(items) == left["all"]  # every run the plan has left, each in the table it counts in
    assert summary(items).groupby("table").runs.sum().to_dict() == left.drop("all").to_dict()
    items = [i for i in items if i.config.key() not in past]  # the grid's own order below
    tiers = [i.tier for i in items]
    assert tiers == sorted(tiers) and set(tiers) == {0, 1, 2}
    first = [i for i in items if i.tier == 0]
    assert {i.table for i in first} == {"03_main", "04_sampling", "06_student_size"}
    assert {i.label for i in first if i.table == "06_student_size"} == {"BACD"}  # claim 6
    assert {i.table for i in items if i.tier == 2} == {"07_sensitivity"}
    # within a tier, seed by seed, the teacher before the students that distil it
    seeds = [i.config.seed for i in first]
    assert seeds == sorted(seeds)
    seed2 = [i.config for i in first if i.config.seed == 2]  # seed 0's teacher is the tuning's
    assert seed2[0].method == "none" and seed2[0].size == TEACHER_SIZE["neumf"]
    assert seed2[1].method == "none" and seed2[1].size == STUDENT["neumf"]  # the plain student
    assert all(c.has_teacher for c in seed2[2:])  # then the students that distil the teacher


def test_the_claims_go_cell_by_cell_and_the_cut_tables_seed_by_seed(tmp_path, monkeypatch):
    """A cell's claims complete before the next cell's start; the size table and the sensitivity
    figure, which the issue cuts first, fill every cell's first seed before any cell's next."""
    fake_training(monkeypatch)
    p = _profile(datasets=["ml-1m", "citeulike-t"])
    for d in p.datasets:
        tuning.tune(p, d, "neumf", tmp_path, progress=False)
    items = backlog.outstanding(p, tmp_path)
    for tier in (0, 1, 2):
        got = [(i.config.dataset, i.config.seed) for i in items if i.tier == tier]
        assert {d for d, _ in got} == set(p.datasets)
        if tier == 0:
            assert got == sorted(got, key=lambda x: (p.datasets.index(x[0]), x[1]))
        else:
            assert got == sorted(got, key=lambda x: (x[1], p.datasets.index(x[0])))


def test_the_cells_go_smallest_dataset_first_by_table_01(tmp_path, monkeypatch):
    """With table 01, the first tier takes the cell whose dataset has the fewest users x items
    first, whatever the profile's order; a dataset the table does not list comes last."""
    fake_training(monkeypatch)
    p = _profile(datasets=["ml-1m", "citeulike-t", "foursquare"], seeds=(0,))
    assert backlog.cell_order(p, tmp_path) == [(d, "neumf") for d in p.datasets]  # no table 01
    pd.DataFrame(
        {"dataset": ["ml-1m", "citeulike-t"], "users": [6040, 30], "items": [3706, 100]}
    ).to_csv(tmp_path / "01_datasets.csv", index=False)
    assert [d for d, _ in backlog.cell_order(p, tmp_path)] == ["citeulike-t", "ml-1m", "foursquare"]
    for d in p.datasets:
        tuning.tune(p, d, "neumf", tmp_path, progress=False)
    got = [i.config.dataset for i in backlog.outstanding(p, tmp_path) if i.tier == 0]
    assert list(dict.fromkeys(got)) == ["citeulike-t", "ml-1m", "foursquare"]


def test_workers_train_the_whole_plan_once_then_the_ials_rows(tmp_path, monkeypatch):
    fake_training(monkeypatch)
    called = []
    monkeypatch.setattr(ials, "main_rows", lambda p, results, execution: called.append(p.name))
    p = _profile(seeds=[0], train_missing=True)
    n = backlog.work(p, tmp_path, poll=0)
    cov = audit.profile_coverage(p, tmp_path)
    # the plan's runs and those past its tuning grid's edges that no grid lists
    _, choice = tuning.tune(p, "ml-1m", "neumf", tmp_path, progress=False)
    edges = tuning.beyond_edge_grid(p, "ml-1m", "neumf", choice).values()
    past = {c.canonical().key() for g in edges for cs in g.values() for c in cs}
    grids = [experiments.notebook_grid(nb, p, tmp_path) for nb in plan.TRAINING_NOTEBOOKS]
    listed = {c.canonical().key() for g in grids for cs in g.values() for c in cs}
    assert (cov.recorded == cov.runs).all() and n == len(plan.profile_runs(p)) + len(past - listed)
    assert past - listed and (tuning.edge_check(p, tmp_path).recorded == "2 / 2").all()
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


def test_a_run_stopped_mid_training_here_is_resumed_first(tmp_path, monkeypatch):
    """A run with a checkpoint on this machine (`checkpoint.path_of`) is claimed before the backlog's
    first run; the others keep their order."""
    fake_training(monkeypatch)
    p = _profile(train_missing=True)
    first, second, third = backlog.outstanding(p, tmp_path)[:3]
    path = checkpoint.path_of([third.config.key()])
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    assert backlog.work(p, tmp_path, poll=0, max_runs=1) == 1
    assert runs.record_path(third.config.key(), tmp_path).exists()
    assert not runs.record_path(first.config.key(), tmp_path).exists()
    path.unlink()  # (fake training writes no checkpoint and deletes none)
    assert backlog.work(p, tmp_path, poll=0, max_runs=1) == 1
    assert runs.record_path(first.config.key(), tmp_path).exists()
    assert not runs.record_path(second.config.key(), tmp_path).exists()


def test_a_worker_sweeps_the_checkpoints_of_finished_runs_only(tmp_path, monkeypatch):
    """Recorded with its weights cached: deleted. Recorded without them (a teacher being retrained
    for its weights) or not recorded: kept."""
    p = _profile()
    for key in ("done", "retraining", "running"):
        checkpoint.path_of([key]).parent.mkdir(parents=True, exist_ok=True)
        checkpoint.path_of([key]).write_bytes(b"")
    for key in ("done", "retraining"):
        runs.write_record({"key": key}, tmp_path)
    train.weights_file("done").parent.mkdir(parents=True)
    train.weights_file("done").write_bytes(b"")
    assert backlog.work(p, tmp_path, poll=0, max_runs=0) == 0
    assert [checkpoint.path_of([k]).exists() for k in ("done", "retraining", "running")] == [
        False,
        True,
        True,
    ]


def test_a_student_trains_its_teacher_first_unless_another_worker_holds_it(tmp_path, monkeypatch):
    fake_training(monkeypatch)
    p = _profile(train_missing=True)
    c = p.config("ml-1m", "neumf", 2, size=STUDENT["neumf"], method="cd").canonical()
    t = c.teacher().canonical()
    held = backlog.claim(t.key(), tmp_path)
    assert backlog._train(c, p, tmp_path, worker=0, failed=set()) == 0
    assert not runs.record_path(c.key(), tmp_path).exists()
    held.close()
    assert backlog._train(c, p, tmp_path, worker=0, failed=set()) == 2  # the teacher, the student
    assert all(runs.record_path(x.key(), tmp_path).exists() for x in (t, c))
    assert backlog._train(c, p, tmp_path, worker=0, failed=set()) == 0  # recorded: not again


def test_a_recorded_teacher_without_weights_here_is_retrained_by_one_worker_alone(
    tmp_path, monkeypatch
):
    """A new machine's cache holds no weights: a student's recorded teacher is retrained for them
    (`train.load_teacher`) under the teacher's claim, and a worker that finds the teacher claimed
    takes another run rather than wait on it; once the weights are cached, nothing is retrained."""
    fake_training(monkeypatch)
    retrained = []

    def retrain(student, *a, **k):
        retrained.append(student.key())
        train.weights_file(student.teacher().key()).parent.mkdir(parents=True, exist_ok=True)
        train.weights_file(student.teacher().key()).write_bytes(b"")
        return None, None

    monkeypatch.setattr(train, "load_teacher", retrain)
    p = _profile(train_missing=True)
    c, other = (
        p.config("ml-1m", "neumf", 2, size=STUDENT["neumf"], method=m).canonical()
        for m in ("cd", "rd")
    )
    t = c.teacher().canonical()
    train.run_group([t], tmp_path)  # recorded, its weights not cached here
    held = backlog.claim(t.key(), tmp_path)  # another worker retrains them
    assert backlog._train(c, p, tmp_path, worker=0, failed=set()) == 0 and retrained == []
    assert not runs.record_path(c.key(), tmp_path).exists()
    held.close()
    assert backlog._train(c, p, tmp_path, worker=0, failed=set()) == 1  # the student alone recorded
    assert retrained == [c.key()] and runs.record_path(c.key(), tmp_path).exists()
    assert backlog._train(other, p, tmp_path, worker=0, failed=set()) == 1
    assert retrained == [c.key()]  # cached now: not again


def test_the_dry_run_lists_what_is_left_per_tier_and_table(tmp_path, monkeypatch, capsys):
    fake_training(monkeypatch)
    monkeypatch.setenv("CDLIB_RESULTS", str(tmp_path))
    argv = ["--profile", "next", "--datasets", "ml-1m", "--backbones", "neumf", "--dry"]
    assert backlog.main(argv) == 0
    out = capsys.readouterr().out
    assert "00_tuning" in out and "12 runs can be trained now" in out
    assert "the grid to go cannot be priced here" in out  # no bench, no recorded run
    assert "half-trained" not in out
    assert not list(tmp_path.glob("runs/*.json"))  # a dry run trains nothing
    p = profiles.profile("next", datasets=["ml-1m"], backbones=["neumf"])
    first = backlog.outstanding(p, tmp_path)[3].config
    path = checkpoint.path_of([first.key()])
    path.parent.mkdir(parents=True)
    torch.save({"epoch": 7}, path)
    assert backlog.main(argv) == 0
    assert f"resumed first: {backlog._describe(first)} {first.key()} (7 epochs saved)" in (
        capsys.readouterr().out
    )


def test_the_dry_run_prices_the_whole_grid_to_go_at_the_ratio_of_complete_tables():
    """`backlog.to_go_line`: `plan.hours_to_go`'s totals in words, the wall hours on the cores."""
    left = pd.DataFrame(
        {
            "backbone": ["cdae", "neumf", "all"],
            "runs to go": [10, 20, 30],
            "CPU hours to go, estimated": [4.0, 6.0, 10.0],
            "recorded / estimated": [1.0, 1.5, 1.3],
            "CPU hours to go, at that ratio": [4.0, 9.0, 13.0],
        }
    )
    assert backlog.to_go_line(left, 2) == (
        "the whole grid: 30 runs to go, an estimated 10 CPU hours (13 at the ratio its complete "
        "tables took), about 6 h on 2 cores (`plan.hours_to_go`)"
    )
    left.loc[2, "CPU hours to go, at that ratio"] = float("nan")  # no complete table yet
    assert backlog.to_go_line(left, 4).endswith(
        "10 CPU hours, about 2 h on 4 cores (`plan.hours_to_go`)"
    )


def test_a_teacher_that_fails_is_tried_once_and_its_students_are_left(
    tmp_path, monkeypatch, capsys
):
    from cdlib import train

    fake_training(monkeypatch)
    called = []
    monkeypatch.setattr(ials, "main_rows", lambda p, results, execution: called.append(1))
    p = _profile(train_missing=True)
    tuning.tune(p, "ml-1m", "neumf", tmp_path, progress=False)
    teacher = next(i.config for i in backlog.outstanding(p, tmp_path) if i.config.seed == 2)
    assert teacher.method == "none" and teacher.size == TEACHER_SIZE["neumf"]
    fake, tries = train.run_group, []

    def failing(cfgs, results=None, refresh=False, progress=True, execution=None):
        if (execution is None or execution.train) and teacher in [c.canonical() for c in cfgs]:
            tries.append(1)
            raise FloatingPointError("loss is NaN")
        return fake(cfgs, results, refresh, progress, execution)

    monkeypatch.setattr(train, "run_group", failing)
    n = backlog.work(p, tmp_path, poll=0)
    out = capsys.readouterr()
    assert tries == [1] and "failed" in out.out and "loss is NaN" in out.err  # once, traceback
    left = backlog.outstanding(p, tmp_path)
    assert left[0].config == teacher and all(
        i.config.teacher().canonical() == teacher for i in left[1:]
    )  # what is left: the teacher and the students that distil it
    assert len(left) > 1 and n > 0 and called == []  # the iALS rows wait for a clean backlog


def test_the_time_limit_stops_a_worker(tmp_path, monkeypatch, capsys):
    from cdlib import train

    def late(cfgs, results=None, refresh=False, progress=True, execution=None):
        if execution is not None and execution.train:
            raise train.DeadlineReached("the time limit (CDLIB_DEADLINE) has passed")  # as train's
        return fake(cfgs, results, refresh, progress, execution)

    fake_training(monkeypatch)
    fake = train.run_group
    monkeypatch.setattr(train, "run_group", late)
    monkeypatch.setattr(ials, "main_rows", lambda *a: pytest.fail("iALS after the time limit"))
    p = _profile(train_missing=True)
    assert backlog.work(p, tmp_path, poll=0) == 0
    assert "stopped" in capsys.readouterr().out and backlog.outstanding(p, tmp_path)


def _hold(path, key, ready, release):
    """In another process: hold `key`'s lock until told to let go."""
    lock = backlog.claim(key, path)
    ready.set()
    release.wait(30)
    lock.close()


def test_a_lock_held_by_another_process_is_respected_until_it_ends(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    other = ctx.Process(target=_hold, args=(tmp_path, "k", ready, release))
    other.start()
    assert ready.wait(60)
    assert backlog.claim("k", tmp_path) is None
    release.set()
    other.join(30)
    lock = backlog.claim("k", tmp_path)
    assert lock is not None
    lock.close()
