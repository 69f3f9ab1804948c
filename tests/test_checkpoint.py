"""Checkpoints within a run: a run stopped after any epoch and resumed is the run trained in one go,
bit for bit (one thread, this machine); a checkpoint that is not the run's is set aside, not used."""

import dataclasses
import json

import pytest
import torch

from cdlib import checkpoint, config, paths, rowadam, runs, train

TINY = dict(dataset="ml-100k", subset_users=200, patience=2, min_epochs=1, device="cpu")
EVERY_EPOCH = config.Execution(checkpoint_every=0.0)


class Stopped(Exception):
    """The process killed right after a checkpoint was written."""


def stop_after(monkeypatch, epoch: int) -> None:
    """Make the run stop right after writing its checkpoint of `epoch` epochs."""
    save = checkpoint.Resume.save

    def save_then_stop(self, state):
        save(self, state)
        if state["epoch"] == epoch:
            raise Stopped

    monkeypatch.setattr(checkpoint.Resume, "save", save_then_stop)


def stopped(cfgs, results, monkeypatch, epoch: int, execution=EVERY_EPOCH) -> dict:
    """Train `cfgs` (a group) until the checkpoint of `epoch` epochs, as a killed process would;
    returns that checkpoint, as saved."""
    with monkeypatch.context() as m:
        stop_after(m, epoch)
        with pytest.raises(Stopped):
            train.run_group(cfgs, results, progress=False, execution=execution)
    keys = [c.canonical().key() for c in cfgs]
    assert all(runs.read_record(k, results) is None for k in keys)
    return torch.load(checkpoint.path_of(keys), weights_only=True)


def same_run(a: dict, b: dict) -> None:
    assert train.differences(a, b) == []
    assert a["weights_sha256"] == b["weights_sha256"] and a["best_epoch"] == b["best_epoch"]


def forget(cfgs, results) -> None:
    for c in cfgs:
        runs.record_path(c.canonical().key(), results).unlink()


@pytest.fixture()
def deferring(monkeypatch):
    """Deferred Adam defers from its 5th step on, on tables of any size (a tiny run's 20 steps
    would otherwise all be whole-table warm-up steps)."""
    monkeypatch.setattr(rowadam, "DEFER_MIN", 0)
    monkeypatch.setattr(rowadam, "WARMUP", 0.005)


@pytest.mark.parametrize(
    "backbone,method,extra",
    [
        ("cdae", "cd", {"guide": "student", "refresh_every": 2}),  # a ranking kept across epochs
        ("cdae", "cd", {"guide": "hybrid", "switch_epoch": 2}),
        ("neumf", "rd", {"rd_warmup": 2}),
        ("cdae", "rd", {"rd_warmup": 2, "rd_rank": "exact"}),
        ("cdae", "none", {"step": "deferred"}),
        ("neumf", "cd", {"step": "deferred", "guide": "student", "refresh_every": 2}),
        ("neumf", "none", {"step": "sparse"}),
        ("cdae", "cd", {"sampling": "uniform", "shapes": "static"}),
    ],
)
def test_a_run_stopped_after_an_epoch_resumes_as_the_same_run(
    results, one_thread, monkeypatch, deferring, backbone, method, extra
):
    cfg = train.Config(
        backbone=backbone, size=8, method=method, teacher_size=16, epochs=5, **TINY, **extra
    )
    whole = train.run(cfg, results, progress=False, execution=config.Execution())
    assert "resumed" not in whole
    forget([cfg], results)
    saved = stopped([cfg], results, monkeypatch, 3)
    if cfg.step == "deferred":  # the optimiser's deferred state travels
        assert any(st.get("defer") for st in saved["optimizer"]["state"].values())
    resumed = train.run(cfg, results, progress=False, execution=EVERY_EPOCH)
    same_run(whole, resumed)
    assert [p["epochs"] for p in resumed["resumed"]] == [3]
    assert resumed["resumed"][0]["provenance"]["git"] == runs.provenance("cpu")["git"]
    for t in ("wall_seconds", "cpu_seconds"):  # the part before the stop counted
        assert resumed["timing"][t] > saved["elapsed"][t] > 0
    assert not checkpoint.path_of([cfg.canonical().key()]).exists()  # deleted once recorded


@pytest.mark.parametrize(
    "extra", [{}, {"method": "cd", "guide": "student", "teacher_size": 16, "shapes": "static"}]
)
def test_a_group_stopped_after_a_member_left_resumes_as_the_same_group(
    results, one_thread, monkeypatch, extra
):
    cfgs = [
        train.Config(backbone="cdae", size=8, seed=s, **dict(TINY, epochs=cap), **extra)
        for s, cap in zip(range(3), (5, 2, 4))
    ]
    ex = dataclasses.replace(EVERY_EPOCH, group_size=3)
    whole = train.run_group(cfgs, results, progress=False, execution=ex)
    assert whole[0]["group"] == [c.canonical().key() for c in cfgs]
    forget(cfgs, results)
    saved = stopped(cfgs, results, monkeypatch, 3, ex)  # the second member has left after 2 epochs
    assert saved["active"] == [0, 2] and saved["members"][1]["done"]
    resumed = train.run_group(cfgs, results, progress=False, execution=ex)
    for a, b in zip(whole, resumed):
        same_run(a, b)
        assert [p["epochs"] for p in b["resumed"]] == [3]


@pytest.mark.parametrize(
    "damage", ["teacher", "arithmetic", "bytes", "identity", "layout", "optimizer"]
)
def test_a_checkpoint_not_of_this_run_is_set_aside_and_the_run_starts_over(
    results, one_thread, monkeypatch, capsys, damage
):
    cfg = train.Config(backbone="cdae", size=8, method="cd", teacher_size=16, epochs=4, **TINY)
    whole = train.run(cfg, results, progress=False, execution=config.Execution())
    path = checkpoint.path_of([cfg.canonical().key()])
    forget([cfg], results)
    saved = stopped([cfg], results, monkeypatch, 2)
    if damage == "teacher":  # as if the teacher had been retrained on another machine
        saved["identity"]["teacher_sha256"] = ["0" * 64]
    elif damage == "arithmetic":  # written with two threads
        saved["identity"]["arithmetic"]["threads"] = 2
    elif damage == "identity":
        saved["identity"] = "x"
    elif damage == "layout":  # read, of this run, but not of its model
        saved["members"][0]["model"].popitem()
    elif damage == "optimizer":  # its moments of another shape
        saved["optimizer"]["state"][0]["exp_avg"] = torch.zeros(3)
    torch.save(saved, path)
    if damage == "bytes":
        path.write_bytes(path.read_bytes()[:100])
    again = train.run(cfg, results, progress=False, execution=EVERY_EPOCH)
    err = capsys.readouterr().err
    assert f"checkpoint {path} not used" in err and "starts from its first epoch" in err
    why = {
        "teacher": "its teacher_sha256 differs",
        "arithmetic": "its arithmetic differs",
        "bytes": "cannot be read",
        "identity": "cannot be read (TypeError: an identity of type str)",
        "layout": "does not fit these runs",
        "optimizer": "does not fit these runs (NotThisRun: its optimiser's exp_avg is (3,)",
    }
    assert why[damage] in err
    assert len(list(path.parent.glob(path.name + ".unused-*"))) == 1  # kept, not destroyed
    same_run(whole, again)
    assert "resumed" not in again and not path.exists()


def test_sweep_deletes_the_checkpoints_of_recorded_runs_only(results, one_thread):
    for name in ("recorded", "not-recorded", "group-abc"):
        path = checkpoint.folder() / f"{name}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    assert checkpoint.sweep(lambda key: key in ("recorded", "group-abc")) == 1
    assert sorted(p.name for p in checkpoint.folder().iterdir()) == [
        "group-abc.pt",
        "not-recorded.pt",
    ]


def test_a_teacher_retrained_for_its_weights_resumes_and_still_equals_its_record(
    results, one_thread, monkeypatch
):
    student = train.Config(backbone="cdae", size=4, method="cd", teacher_size=16, epochs=4, **TINY)
    rec = train.run(student, results, progress=False)
    wpath = train.weights_path(student.teacher())
    sha = paths.sha256(wpath)
    wpath.unlink()  # a machine without the teacher's weights
    with monkeypatch.context() as m:
        stop_after(m, 2)
        with pytest.raises(Stopped):
            train.load_teacher(student, results, progress=False, execution=EVERY_EPOCH)
    assert checkpoint.path_of([rec["teacher_key"]]).is_file() and not wpath.exists()
    _, again = train.load_teacher(student, results, progress=False, execution=EVERY_EPOCH)
    note = json.loads(wpath.with_suffix(".json").read_text())
    assert again == sha and "equals the record" in note["retrained"]
    assert not checkpoint.path_of([rec["teacher_key"]]).exists()


def test_row_adam_state_round_trips(monkeypatch):
    """Deferred RowAdam's state saved after `flush` and loaded into a new optimiser continues as the
    old one does, to the last bit, rows deferred again after the load."""
    monkeypatch.setattr(rowadam, "DEFER_MIN", 0)  # (a table this small is otherwise stepped whole)
    gen = torch.Generator().manual_seed(0)
    p = torch.randn(80, 4, generator=gen).requires_grad_()
    opt = rowadam.RowAdam([p], lr=0.01, betas=(0.9, 0.95), deferred=True)
    assert opt.warmup == 20
    grads = [
        (torch.randint(0, 80, (5,), generator=gen), torch.randn(5, 4, generator=gen))
        for _ in range(70)
    ]

    def step(opt, table, t):
        ids, values = grads[t]
        table.grad = torch.sparse_coo_tensor(ids[None], values, table.shape, check_invariants=False)
        opt.step()

    for t in range(40):
        step(opt, p, t)
    assert opt.state[p]["pending"]
    opt.flush()
    q = p.detach().clone().requires_grad_()
    new = rowadam.RowAdam([q], lr=0.01, betas=(0.9, 0.95), deferred=True)
    new.load_state_dict(opt.state_dict())
    for t in range(40, 70):
        step(opt, p, t)
        step(new, q, t)
    assert opt.state[p]["pending"] and new.state[q]["pending"]
    opt.flush()
    new.flush()
    assert torch.equal(p, q) and opt.clock[p] == new.clock[q] == 70
    for k in ("exp_avg", "exp_avg_sq", "last"):
        assert torch.equal(opt.state[p][k], new.state[q][k])
