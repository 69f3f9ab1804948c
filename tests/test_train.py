"""Training: deterministic on the CPU, resumable from records, atomic, every method runs."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from conftest import TINY

from cdlib import (
    analyses,
    audit,
    batches,
    config,
    index,
    loop,
    methods,
    metrics,
    paths,
    rowadam,
    runs,
    tables,
    train,
)


@pytest.mark.parametrize("backbone", ["cdae", "neumf"])
@pytest.mark.parametrize("method,extra", [("none", {}), ("rd", {}), ("cd", {"guide": "student"})])
def test_same_seed_same_numbers(results, one_thread, backbone, method, extra):
    """The same run twice on this machine, on one thread as every record: the same learning curve,
    metrics and weights, to the last bit. (On two threads two runs in one process can part by rounding,
    1e-8 in the weights of a 3-epoch RD run: the README's known issues.)"""
    cfg = train.Config(backbone=backbone, size=8, method=method, teacher_size=16, **TINY, **extra)
    a = train.run(cfg, results, progress=False)
    b = train.run(cfg, results, refresh=True, progress=False)
    assert a["curve"] == [dict(c, seconds=c2["seconds"]) for c, c2 in zip(b["curve"], a["curve"])]
    assert a["test_sampled"] == b["test_sampled"] and a["test_full"] == b["test_full"]
    assert a["weights_sha256"] == b["weights_sha256"]
    c = train.run(dataclasses.replace(cfg, seed=1), results, progress=False)
    assert c["curve"][0]["loss"] != a["curve"][0]["loss"]


def test_record_is_reused_and_complete(results, monkeypatch):
    cfg = train.Config(backbone="cdae", size=8, **TINY)
    rec = train.run(cfg, results, progress=False)
    files = list((results / "runs").iterdir())
    assert [p.name for p in files] == [f"{rec['key']}.json"]  # no temporary left behind
    for k in (
        "config",
        "test_sampled",
        "test_full",
        "valid_sampled",
        "curve",
        "n_params",
        "timing",
        "dataset",
        "provenance",
        "best_epoch",
    ):
        assert k in rec
    prov = rec["provenance"]
    assert {"git", "packages", "device", "python"} <= set(prov) and "commit" in prov["git"]
    # its cost: the process's CPU time, every thread, which a paused process does not add to
    t = rec["timing"]
    assert 0 < t["cpu_seconds"] <= t["wall_seconds"] * torch.get_num_threads() * 1.1 + 0.5
    assert runs.run_seconds(rec) == t["cpu_seconds"]
    assert rec["dataset"]["sha256"]["ml-100k.rating"].startswith("06416e59")
    assert json.loads(files[0].read_text())["key"] == rec["key"]

    def boom(*a, **k):
        raise AssertionError("trained again")

    monkeypatch.setattr(train, "fit_group", boom)
    assert train.run(cfg, results, progress=False)["key"] == rec["key"]
    with pytest.raises(train.NotRecorded):
        train.run(
            train.Config(backbone="cdae", size=9, **TINY),
            results,
            execution=config.Execution(train=False),
        )


def test_a_run_validated_on_disjoint_negatives_stops_on_them_and_is_tested_as_before(results):
    """valid_negatives="disjoint" (issue 23): a key of its own; validation (early stopping) scores the
    disjoint draw, and the test's candidates and metrics are those of any other run."""
    own = train.Config(backbone="cdae", size=8, **TINY)
    dis = dataclasses.replace(own, valid_negatives="disjoint")
    assert dis.key() != own.key() and dis.teacher().valid_negatives == "disjoint"
    a, b = (train.run(c, results, progress=False) for c in (own, dis))
    assert a["curve"][0]["loss"] == b["curve"][0]["loss"]  # the same training
    assert a["valid_sampled"] != b["valid_sampled"]  # validated on other candidates
    c = dis.canonical()
    ds = config.dataset_for(c)
    m = train.load_weights(c, ds)
    assert metrics.evaluate(m, ds, "valid", "sampled", valid_negatives="disjoint") == pytest.approx(
        b["valid_sampled"]
    )
    assert metrics.evaluate(m, ds, "test", "sampled") == pytest.approx(b["test_sampled"])


def test_every_committed_record_keeps_its_key():
    """Config is the run's fields plus each method's own (`methods.*.FIELDS`): every record in
    results/runs/ still keys to its name, so no committed run is orphaned by how Config is built."""
    records = [r for r in runs.all_records() if not r["config"].get("data_sha256")]
    assert len(records) > 500
    assert [r["key"] for r in records if train.Config(**r["config"]).key() != r["key"]] == []
    # (a field added after the first records is absent from theirs: config.ABSENT_MEANS)
    assert {f for unit in methods.METHODS.values() for f in unit.FIELDS} <= set(
        records[0]["config"]
    ) | set(config.ABSENT_MEANS)


def test_a_method_declares_its_fields_and_config_gains_them():
    assert (
        set(methods.CD.FIELDS) >= {"lambda_kd", "temperature", "mu", "guide"}
        and "lambda_kd" not in methods.RD.FIELDS
    )
    assert train.Config().lambda_kd == methods.CD.FIELDS["lambda_kd"]
    rd = train.Config(method="rd", lambda_kd=2.0, rd_rank="exact").canonical()
    assert (
        rd.lambda_kd is None and rd.rd_samples is None and rd.teacher_size == 200
    )  # CD's fields leave RD's key
    with pytest.raises(ValueError, match="rd_rank"):
        train.Config(method="rd", rd_rank="guess").canonical()


def test_canonical_config_ignores_unused_parameters():
    a = train.Config(method="none", mu=3.0, rd_k=7).canonical()
    b = train.Config(method="none").canonical()
    assert a.key() == b.key()
    c = train.Config(method="cd", guide="hybrid", epochs=400).canonical()
    assert (
        c.switch_epoch == methods.SWITCH_EPOCH
        and c.max_rank == 100
        and c.rd_k is None
        and c.teacher_size == 200
    )
    with pytest.raises(ValueError, match="method"):
        train.Config(method="kd").canonical()


def test_defer_names_only_runs_of_the_deferred_step():
    """defer is kept on the deferred step's runs and their teachers, dropped on the other steps'
    (and absent, so that older records keep their keys); a bad value is refused."""
    for kw in (dict(method="none"), dict(backbone="neumf", size=8, method="rd")):
        c = train.Config(**kw, step="deferred", defer="all").canonical()
        assert c.defer == "all" and c.key() != train.Config(**kw, step="deferred").key()
        assert c.teacher().defer == "all"
        d = train.Config(**kw, step="sparse", defer="all").canonical()
        assert d.defer is None and d.key() == train.Config(**kw, step="sparse").key()
    assert "defer" not in config.keyed_fields(config.fields_of(train.Config().canonical()))
    with pytest.raises(ValueError, match="defer"):
        train.Config(step="deferred", defer="some").canonical()


def test_the_refresh_tower_names_only_runs_whose_neumf_student_refreshes():
    """refresh_tower is kept where a NeuMF student ranks (CD, student or hybrid guide, rank or topk
    sampling) and dropped elsewhere, so that it splits no other run's key; a bad value is refused."""
    fm = dict(refresh_tower="feature-major")
    for kw in (
        dict(backbone="neumf", method="cd", guide="student"),
        dict(backbone="neumf", method="cd", guide="hybrid", sampling="topk"),
    ):
        c = train.Config(**kw, **fm).canonical()
        assert c.refresh_tower == "feature-major" and c.key() != train.Config(**kw).key()
    for kw in (
        dict(backbone="cdae", method="cd", guide="student"),
        dict(backbone="neumf", method="cd", guide="teacher"),
        dict(backbone="neumf", method="cd", guide="student", sampling="uniform"),
        dict(backbone="neumf", method="rd"),
        dict(backbone="neumf", method="none"),
    ):
        c = train.Config(**kw, **fm).canonical()
        assert c.refresh_tower is None and c.key() == train.Config(**kw).key()
    with pytest.raises(ValueError, match="refresh_tower"):
        train.Config(backbone="neumf", method="cd", refresh_tower="fast").canonical()


def test_a_feature_major_run_refreshes_with_the_feature_major_tower(results, monkeypatch):
    """The configuration's refresh_tower reaches the CD sampler: each refresh of a NeuMF student
    ranks through `score_all_feature_major`, and a run without it never does."""
    from cdlib import models

    calls = []
    fm = models.NeuMF.score_all_feature_major
    monkeypatch.setattr(
        models.NeuMF, "score_all_feature_major", lambda m, u: calls.append(len(u)) or fm(m, u)
    )
    kw = dict(TINY, epochs=2, backbone="neumf", size=4, method="cd", guide="student")
    for tower, refreshes in ((None, 0), ("feature-major", 2)):
        calls.clear()
        cfg = train.Config(**kw, refresh_tower=tower).canonical()
        train.run(cfg, results, progress=False)
        assert len(calls) == refreshes  # one batch of 200 users per epoch


def test_static_shapes_are_the_gpu_default_and_leave_the_cpu_records_keys_alone():
    assert train.Config(device="cpu").canonical().shapes == "dynamic"
    assert train.Config(device="cuda").canonical().shapes == "static"
    rec = runs.read_record("3fca3a2d44bff765")  # recorded before Config.shapes existed
    assert "shapes" not in rec["config"] and train.Config(**rec["config"]).key() == rec["key"]
    static = train.Config(**dict(rec["config"], shapes="static"))
    assert static.key() != rec["key"] and static.teacher().shapes == "static"


def test_bad_epoch_rules_and_names_are_refused_before_training():
    with pytest.raises(ValueError, match=r"epoch cap \(epochs=10\) is below min_epochs=50"):
        train.Config(epochs=10).canonical()
    for kw, name in (
        (dict(method="rd", rd_rank="guess"), "rd_rank"),
        (dict(method="cd", guide="both"), "guide"),
        (dict(method="cd", sampling="all"), "sampling"),
        (dict(valid_negatives="mine"), "valid_negatives"),
        (dict(shapes="fixed"), "shapes"),
    ):
        with pytest.raises(ValueError, match=name):
            train.Config(**kw).canonical()


def test_a_seed_is_a_whole_replicate_and_rd_defaults_are_the_authors():
    c = train.Config(method="cd", seed=3).canonical()
    assert c.teacher_seed == 3 and c.teacher().seed == 3
    assert train.Config(method="cd", seed=3, teacher_seed=0).teacher().seed == 0
    rd = train.Config(method="rd").canonical()  # Tang & Wang's distill_caser.py defaults
    assert (
        rd.lambda_rd,
        rd.rd_k,
        rd.rd_lambda,
        rd.rd_mu,
        rd.rd_warmup,
        rd.rd_renorm,
        rd.rd_rank,
        rd.rd_samples,
    ) == (1.0, 10, 1.0, 0.1, 10, False, "sampled", 100)


def test_early_stopping_waits_for_min_epochs_and_for_leaving_the_plateau(results, monkeypatch):
    from cdlib import metrics

    level = {"model": 0.5, "popularity": 0.40}

    def flat(model, *a, **k):  # never improves after epoch 1
        v = level["popularity" if isinstance(model, metrics.Popularity) else "model"]
        return {m: v for m in ("HR@5", "NDCG@5", "HR@10", "NDCG@10", "HR@20", "NDCG@20", "MRR")}

    monkeypatch.setattr(metrics, "evaluate", flat)
    run = dict(TINY, epochs=9, patience=1)
    rec = train.run(
        train.Config(backbone="cdae", size=8, **dict(run, min_epochs=6)), results, progress=False
    )
    assert (
        rec["best_epoch"] == 1
        and rec["epochs_run"] == 6
        and rec["popularity_valid_NDCG@10"] == 0.40
    )
    rec = train.run(
        train.Config(backbone="cdae", size=8, **dict(run, min_epochs=1)), results, progress=False
    )
    assert rec["epochs_run"] == 2
    level["popularity"] = 0.48  # 0.5 <= 1.05 x 0.48: still on the plateau
    rec = train.run(
        train.Config(backbone="cdae", size=8, **dict(run, min_epochs=1)),
        results,
        progress=False,
        refresh=True,
    )
    assert rec["epochs_run"] == 9  # the cap, not early stopping, ended it
    rec = train.run(
        train.Config(backbone="cdae", size=8, **dict(run, min_epochs=1, plateau=None)),
        results,
        progress=False,
    )
    assert rec["epochs_run"] == 2


def test_early_stopping_waits_while_validation_still_rises(results, monkeypatch):
    """An early peak, a dip, then a climb past the peak (yelp NeuMF's curves): patience alone ends
    the run in the dip; `Config.rise` keeps it going while the last `patience` epochs rise, then
    ends it `patience` epochs after its new best once the curve is flat."""
    from cdlib import metrics

    climb = [0.30 + 0.01 * k for k in range(22)]  # 0.51 > 0.5 at the 22nd epoch of the climb
    curve = [0.5, *climb, *[0.51] * 20]
    calls = {"n": 0}

    def scripted(model, ds, split="test", *a, **k):
        if isinstance(model, metrics.Popularity):
            v = 0.1
        else:
            v = curve[min(calls["n"], len(curve) - 1)] if split == "valid" else 0.2
            calls["n"] += split == "valid"
        return {m: v for m in ("HR@5", "NDCG@5", "HR@10", "NDCG@10", "HR@20", "NDCG@20", "MRR")}

    monkeypatch.setattr(metrics, "evaluate", scripted)
    run = dict(TINY, epochs=40, patience=5, min_epochs=1)
    rec = train.run(
        train.Config(backbone="cdae", size=8, **run, rise=None), results, progress=False
    )
    assert (rec["best_epoch"], rec["epochs_run"]) == (1, 6)  # in the dip
    calls["n"] = 0
    rec = train.run(train.Config(backbone="cdae", size=8, **run), results, progress=False)
    assert (rec["best_epoch"], rec["epochs_run"]) == (23, 28)  # past the peak, then flat
    assert audit.stopped_rising(rec["curve"], 5) == ""
    assert (
        train.Config(backbone="cdae", size=8, **run).key()
        != train.Config(backbone="cdae", size=8, **run, rise=None).key()
    )
    assert "rise" not in config.keyed_fields(config.fields_of(train.Config(**run).canonical()))


@pytest.mark.parametrize("backbone", ["cdae", "neumf"])
@pytest.mark.parametrize(
    "method,extra",
    [
        ("rd", {}),
        ("cd", {"guide": "teacher"}),
        ("cd", {"guide": "student"}),
        ("cd", {"guide": "hybrid", "sampling": "uniform"}),
    ],
)
def test_students_train_with_one_shared_teacher(results, backbone, method, extra):
    cfg = train.Config(backbone=backbone, size=4, method=method, teacher_size=16, **TINY, **extra)
    rec = train.run(cfg, results, progress=False)
    assert rec["teacher_n_params"] > rec["n_params"]
    teacher = runs.read_record(train.Config(backbone=backbone, size=16, **TINY).key(), results)
    assert teacher is not None and rec["teacher_key"] == teacher["key"]
    assert (
        rec["teacher_sha256"]
        == teacher["weights_sha256"]
        == paths.sha256(train.weights_path(cfg.teacher()))
    )
    assert rec["weights_sha256"] == paths.sha256(
        train.weights_path(cfg.canonical())
    )  # students are kept too
    assert 0.0 <= rec["test_sampled"]["HR@10"] <= 1.0
    assert torch.isfinite(torch.tensor(rec["curve"][-1]["loss"]))


def _teacher_and_student(results):
    student = train.Config(backbone="cdae", size=4, method="cd", teacher_size=16, **TINY)
    rec = train.run(student, results, progress=False)
    tpath = runs.record_path(rec["teacher_key"], results)
    return student, rec, tpath


def test_retrained_teacher_equal_to_its_record_keeps_the_record(results):
    student, rec, tpath = _teacher_and_student(results)
    before = tpath.read_bytes()
    wpath = train.weights_path(student.teacher())
    wpath.unlink()  # a fresh clone: no cached weights
    other = train.run(
        train.Config(**{**student.__dict__, "seed": 0, "lambda_kd": 0.3}), results, progress=False
    )
    assert tpath.read_bytes() == before  # the committed record is untouched
    assert wpath.is_file() and other["teacher_sha256"] == paths.sha256(wpath)
    note = json.loads(wpath.with_suffix(".json").read_text())
    assert (
        note["weights_sha256"] == other["teacher_sha256"]
        and "equals the record" in note["retrained"]
    )


def test_retrained_teacher_that_differs_stops_naming_record_and_difference(results):
    student, rec, tpath = _teacher_and_student(results)
    recorded = json.loads(tpath.read_text())
    recorded["test_sampled"]["HR@10"] += 0.01  # as if trained on other hardware
    recorded["curve"][0]["loss"] += 1e-3
    tpath.write_text(json.dumps(recorded))
    before = tpath.read_bytes()
    train.weights_path(student.teacher()).unlink()
    new_student = train.Config(**{**student.__dict__, "lambda_kd": 0.3})
    with pytest.raises(
        train.TeacherMismatch,
        match=rf"{tpath.name}.*test_sampled HR@10.*learning curve from epoch 1",
    ):
        train.run(new_student, results, progress=False)
    assert tpath.read_bytes() == before  # nothing recorded was touched
    assert not train.weights_path(student.teacher()).is_file()
    assert runs.read_record(new_student.key(), results) is None
    train.load_teacher(new_student, results, progress=False, refresh=True)  # asked for: replaced
    assert (
        json.loads(tpath.read_text())["test_sampled"]["HR@10"] != recorded["test_sampled"]["HR@10"]
    )


def test_retrained_teacher_from_another_cpu_is_used_with_a_warning(results, capsys):
    """A record made on another instruction set is not expected to reproduce bit for bit: the retrained
    teacher is used, its record kept, and the difference said, in a warning and beside the weights."""
    student, rec, tpath = _teacher_and_student(results)
    recorded = json.loads(tpath.read_text())
    recorded["curve"][0]["loss"] += 1e-7  # rounding of another instruction set
    recorded["provenance"]["cpu"]["capability"] = "OTHER"
    tpath.write_text(json.dumps(recorded))
    before = tpath.read_bytes()
    wpath = train.weights_path(student.teacher())
    wpath.unlink()
    new = train.run(train.Config(**{**student.__dict__, "lambda_kd": 0.3}), results, progress=False)
    assert tpath.read_bytes() == before
    assert "differs from its record" in capsys.readouterr().err
    note = json.loads(wpath.with_suffix(".json").read_text())
    assert (
        new["teacher_sha256"] == note["weights_sha256"]
        and "learning curve from epoch 1" in note["retrained"]
    )


def test_a_method_is_a_unit_the_loop_does_not_know(results, monkeypatch):
    class Scaled(methods.NoKD):  # a new method: distil the teacher's logits on 3 uniform items
        TEACHER = (
            True  # it distils a teacher: Config gives it teacher_size, teacher_seed, teacher_lr
        )

        def __init__(self, cfg, positives, teacher):
            super().__init__(cfg, positives, teacher)
            self.teacher, self.positives, self.calls = teacher, positives, 0

        def batch_items(self, users, generator):
            from cdlib.samplers import uniform_items

            self.calls += 1
            return uniform_items(self.positives, users, 3, generator)

        def loss(self, users, items, logits):
            return ((logits - self.teacher.score(users, items)) ** 2).mean()

    monkeypatch.setitem(methods.METHODS, "mse", Scaled)
    monkeypatch.setattr(config, "METHODS", tuple(methods.METHODS))
    rec = train.run(
        train.Config(backbone="cdae", size=4, method="mse", teacher_size=16, **TINY),
        results,
        progress=False,
    )
    assert rec["config"]["method"] == "mse" and rec["teacher_key"] is not None


def test_best_test_epoch_reproduces_the_record_and_reports_both_choices(results):
    cfg = train.Config(backbone="cdae", size=8, **dict(TINY, epochs=4, patience=4))
    rec = train.run(cfg, results, progress=False)
    out = analyses.best_test_epoch(cfg, results, progress=False)
    assert out["reproduced_record_curve"] and out["best_valid_epoch"] == rec["best_epoch"]
    assert out["test_at_best_valid_epoch"]["HR@10"] == rec["test_sampled"]["HR@10"]
    assert (
        out["curve"][rec["best_epoch"] - 1]["test_HR@10"] == rec["test_sampled"]["HR@10"]
    )  # the same model
    best = max(e["test_HR@10"] for e in out["curve"])
    assert out["test_at_best_test_epoch"]["HR@10"] == best >= rec["test_sampled"]["HR@10"]
    assert (results / "analysis" / f"best_test_epoch_{rec['key']}.json").is_file()


def test_no_run_starts_after_the_deadline(results, monkeypatch):
    cfg = train.Config(backbone="cdae", size=8, **TINY)
    done = train.run(cfg, results, progress=False)
    monkeypatch.setenv("CDLIB_DEADLINE", "1")  # long past, read at the entry point
    late = config.Execution.from_environment()
    assert late.deadline == 1.0
    assert (
        train.run(cfg, results, progress=False, execution=late)["key"] == done["key"]
    )  # recorded: still read
    with pytest.raises(train.DeadlineReached, match="time limit"):
        train.run(
            train.Config(backbone="cdae", size=9, **TINY), results, progress=False, execution=late
        )
    df = tables.collect(
        {"x": [train.Config(backbone="cdae", size=9, **TINY)]}, results, late, progress=False
    )
    assert (
        list(df.status) == ["missing"] and len(list((results / "runs").glob("*.json"))) == 1
    )  # nothing new


def test_ncf_protocol_trains_on_the_validation_item_for_a_fixed_number_of_epochs(results):
    cfg = train.Config(backbone="cdae", size=8, **dict(TINY, epochs=4, patience=4))
    rec = train.run(cfg, results, progress=False)
    out = analyses.best_test_epoch(cfg, results, progress=False, valid_in_train=True, epochs=3)
    assert out["valid_in_train"] and not out["reproduced_record_curve"] and len(out["curve"]) == 3
    assert (
        out["dataset"]["train_interactions"]
        == rec["dataset"]["train_interactions"] + rec["dataset"]["users"]
    )
    assert out["test_at_best_test_epoch"]["HR@10"] == max(e["test_HR@10"] for e in out["curve"])
    assert (results / "analysis" / f"ncf_protocol_{rec['key']}.json").is_file()
    with pytest.raises(ValueError, match="without distillation"):
        analyses.best_test_epoch(
            dataclasses.replace(cfg, method="cd", size=4, teacher_size=8),
            results,
            valid_in_train=True,
        )


def test_first_epochs_retrains_a_student_with_each_teacher_seed_and_its_plain_twin(results):
    cfg = train.Config(backbone="neumf", size=4, method="rd", **TINY)
    rec = train.run(cfg, results, progress=False)  # trains teacher seed 0 too
    train.run(
        dataclasses.replace(cfg, method="none", size=None, seed=1), results, progress=False
    )  # teacher seed 1
    out = analyses.first_epochs(cfg, [0, 1], epochs=2, results=results)
    assert [(r["method"], r["teacher_seed"]) for r in out["rows"]] == [
        ("none", None),
        ("rd", 0),
        ("rd", 1),
    ]
    assert out["reproduced_record_curve"] is True
    assert out["rows"][1]["curve"][0]["loss"] == rec["curve"][0]["loss"]
    assert (
        out["rows"][1]["curve"][0]["loss"] != out["rows"][2]["curve"][0]["loss"]
    )  # another teacher
    assert all(0 <= r["tower_units_active"] <= r["tower_units"] == 2 for r in out["rows"])
    assert (results / "analysis" / f"first_epochs_{rec['key']}.json").is_file()
    with pytest.raises(train.NotRecorded):  # no teacher is trained for it
        analyses.first_epochs(cfg, [7], results=results)
    plain = analyses.first_epochs(
        dataclasses.replace(cfg, method="none", seed=1), [], epochs=2, results=results
    )  # a plain student alone (this one not recorded)
    assert [(r["method"], r["student_seed"]) for r in plain["rows"]] == [("none", 1)]
    assert plain["reproduced_record_curve"] is None
    with pytest.raises(ValueError, match="takes no teacher_seeds"):
        analyses.first_epochs(dataclasses.replace(cfg, method="none"), [0], results=results)
    t = analyses.first_epochs_table(results)  # the plain twin once, both teachers' arms; seed 1's
    assert list(t["run"]) == ["RD λ=1", "RD λ=1", "plain student", "plain student"]
    assert list(t["teacher seed"]) == ["0", "1", "", ""] and list(t["student seed"]) == [0, 0, 0, 1]


@pytest.mark.parametrize(
    "backbone,method,extra",
    [
        ("cdae", "cd", {"guide": "student"}),
        ("neumf", "rd", {}),
        ("cdae", "none", {}),
        ("cdae", "cd", {"sampling": "uniform", "shapes": "static"}),
        ("neumf", "rd", {"rd_warmup": 2, "shapes": "static"}),
    ],
)
def test_a_member_of_a_group_trains_as_it_would_alone(results, backbone, method, extra):
    base = dict(TINY, epochs=6, patience=6, min_epochs=1)
    cfgs = [
        train.Config(
            backbone=backbone,
            size=4,
            method=method,
            teacher_size=8,
            seed=s,
            **dict(base, epochs=cap),
            **extra,
        ).canonical()
        for s, cap in zip(range(5), (6, 3, 6, 4, 5))
    ]
    ds = train.dataset_for(cfgs[0])
    teachers = [
        train.load_teacher(c, results, progress=False)[0] if method != "none" else None
        for c in cfgs
    ]
    alone = [loop.fit(c, ds, t, progress=False) for c, t in zip(cfgs, teachers)]
    group = loop.fit_group(cfgs, ds, teachers, progress=False)  # members leave as their caps end
    for a, g in zip(alone, group):
        assert len(a["curve"]) == len(g["curve"])
        assert max(abs(x["loss"] - y["loss"]) for x, y in zip(a["curve"], g["curve"])) < 1e-4
    ndcg = [
        [metrics.evaluate(o["model"], ds, "test")["NDCG@10"] for o in outs]
        for outs in (alone, group)
    ]
    assert abs(np.mean(ndcg[0]) - np.mean(ndcg[1])) <= np.std(ndcg[0])


def test_a_group_of_runs_is_recorded_run_by_run_naming_its_group(results):
    cfgs = [train.Config(backbone="cdae", size=8, seed=s, **TINY) for s in (0, 1)]
    recs = train.run_group(cfgs, results, progress=False, execution=config.Execution(group_size=2))
    keys = [c.key() for c in cfgs]
    assert [r["key"] for r in recs] == keys and all(r["group"] == keys for r in recs)
    assert recs[0]["timing"]["group_wall_seconds"] == 2 * recs[0]["timing"]["wall_seconds"]
    alone = train.run(cfgs[1], results, refresh=True, progress=False)  # a group of one
    assert alone["group"] == [keys[1]] and alone["curve"][0]["loss"] == pytest.approx(
        recs[1]["curve"][0]["loss"], abs=1e-4
    )


def test_runs_that_cannot_stack_are_refused_or_grouped_apart(results):
    a = train.Config(backbone="cdae", size=8, **TINY).canonical()
    for other, field in (
        (dict(size=9), "size"),
        (dict(dataset="ml-1m", subset_users=None), "dataset"),
        (dict(lr=0.1), "lr"),
    ):
        with pytest.raises(ValueError, match=field):
            loop.check_group([a, dataclasses.replace(a, **other)])
    recs = train.run_group(
        [a, train.Config(backbone="cdae", size=9, **TINY)],
        results,
        progress=False,
        execution=config.Execution(group_size=5),
    )
    assert [len(r["group"]) for r in recs] == [1, 1]  # two sizes: two groups of one


def test_a_group_out_of_gpu_memory_is_split_and_says_so(results, monkeypatch, capsys):
    fit_group = loop.fit_group

    def small_gpu(cfgs, *a, **kw):
        if len(cfgs) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return fit_group(cfgs, *a, **kw)

    monkeypatch.setattr(train, "fit_group", small_gpu)
    recs = train.run_group(
        [train.Config(backbone="cdae", size=8, seed=s, **TINY) for s in (0, 1, 2)],
        results,
        progress=False,
        execution=config.Execution(group_size=3),
    )
    assert [len(r["group"]) for r in recs] == [1, 1, 1]
    assert "split into groups of 1 and 2" in capsys.readouterr().err


def test_execution_is_read_from_the_environment_at_entry_points_only(monkeypatch):
    env = {
        "CDLIB_NO_TRAIN": "1",
        "CDLIB_GROUP_SIZE": "4",
        "CDLIB_DEADLINE": "12.5",
        "CDLIB_COMPILE": "default",
        "CDLIB_DETERMINISTIC": "1",
        "CDLIB_SYNC_DEBUG": "warn",
        "CDLIB_CHECKPOINT_EVERY": "60",
    }
    assert config.Execution.from_environment(env) == config.Execution(
        train=False,
        group_size=4,
        deadline=12.5,
        compile="default",
        deterministic=True,
        sync_debug="warn",
        checkpoint_every=60.0,
    )
    assert config.Execution.from_environment({}) == config.Execution()
    assert (
        config.Execution.from_environment({"CDLIB_CHECKPOINT_EVERY": "off"}).checkpoint_every
        is None
    )
    for var, bad in (("CDLIB_GROUP_SIZE", "0"), ("CDLIB_CHECKPOINT_EVERY", "-1")):
        with pytest.raises(ValueError, match=var):
            config.Execution.from_environment({var: bad})
    for var, value in env.items():  # the loop and the store read none of them
        monkeypatch.setenv(var, value)
    cfg = train.Config(backbone="cdae", size=4, **dict(TINY, epochs=1, min_epochs=1))
    out = loop.fit(cfg.canonical(), train.dataset_for(cfg.canonical()), progress=False)
    assert len(out["curve"]) == 1 and not torch.are_deterministic_algorithms_enabled()


COMMITTED = ["3fca3a2d44bff765", "59291c00cc9c76f6"]  # ml-100k CDAE / NeuMF students, one thread
FIRST_EPOCHS, LOSS_RTOL = 5, 1e-5


def _first_losses(cfg: train.Config) -> list[float]:
    out = loop.fit(
        dataclasses.replace(cfg, epochs=FIRST_EPOCHS), train.dataset_for(cfg), progress=False
    )
    return [e["loss"] for e in out["curve"]]


@pytest.mark.parametrize("key", COMMITTED)
def test_committed_records_follow_their_curve_on_any_cpu(key, one_thread):
    """Today's code retrains two committed runs (made by earlier commits) for their first 5 epochs: the
    losses lie within 1e-5 (relative) of the record's on any CPU. Another instruction set moves them by
    rounding alone (at most 1e-6 in these epochs, measured with PyTorch, MKL and oneDNN held to AVX2
    and to SSE4 against the AVX-512 records); a change to sampling, inputs or the loop moves them by far
    more: another seed, checked here, by 4e-4 to 8e-2."""
    rec = runs.read_record(key)
    cfg = train.Config(**rec["config"])
    recorded = [e["loss"] for e in rec["curve"][:FIRST_EPOCHS]]
    assert _first_losses(cfg) == pytest.approx(recorded, rel=LOSS_RTOL, abs=0)
    assert _first_losses(dataclasses.replace(cfg, seed=cfg.seed + 1)) != pytest.approx(
        recorded, rel=LOSS_RTOL, abs=0
    )


@pytest.mark.parametrize("key", COMMITTED)
def test_committed_records_are_reproduced_bit_for_bit_on_their_instruction_set(key):
    """On a CPU whose arithmetic the record names (instruction set, vendor, vector flags, torch, one
    thread: its own provenance or a `reproduced_on` entry), the whole run is retrained to the same
    learning curve and test metrics, bit for bit. Elsewhere runs agree only statistically: skipped, saying so."""
    rec = runs.read_record(key)
    threads = torch.get_num_threads()
    torch.set_num_threads(runs.threads(rec["provenance"]))
    try:
        here = runs.provenance("cpu")
    finally:
        torch.set_num_threads(threads)
    if not runs.bit_for_bit_expected(rec["provenance"], here):
        known = [
            runs.describe_arithmetic(p)
            for p in [rec["provenance"], *rec["provenance"].get("reproduced_on", [])]
        ]
        pytest.skip(
            f"record {key} was made or reproduced on {'; '.join(known)}, this machine is "
            f"{runs.describe_arithmetic(here)}: bit-for-bit agreement is not expected here"
        )
    assert train.check_record(key) == []


def test_bit_for_bit_is_expected_only_on_the_same_arithmetic():
    here = runs.provenance("cpu")
    assert runs.bit_for_bit_expected(here, here) is True
    other = json.loads(json.dumps(here))
    other["cpu"]["capability"] = "AVX2" if here["cpu"]["capability"] != "AVX2" else "AVX512"
    assert runs.bit_for_bit_expected(other, here) is False
    assert runs.bit_for_bit_expected({**other, "reproduced_on": [here]}, here) is True
    assert (
        runs.bit_for_bit_expected({"device": "cpu: AMD EPYC, 1 threads"}, here) is None
    )  # before cpu_info
    two = json.loads(json.dumps(here))
    two["cpu"]["threads"] += 1
    assert runs.bit_for_bit_expected(two, here) is False
    assert (
        runs.threads({"device": "cpu: AMD EPYC, 1 threads"}) == 1
        and runs.threads({"device": "NVIDIA H200"}) is None
    )


def test_group_agreement_trains_alone_and_as_a_group_and_writes_both(results):
    cfgs = [
        train.Config(backbone="cdae", size=4, seed=s, **dict(TINY, epochs=3, patience=3))
        for s in range(3)
    ]
    out = analyses.group_agreement(cfgs, results, progress=False)
    assert [r["seed"] for r in out["runs"]] == [0, 1, 2]
    assert all(
        r["first_epochs_max_loss_difference"] < 1e-4 and r["epochs_alone"] == r["epochs_group"] == 3
        for r in out["runs"]
    )
    assert out["within_one_sd"] == (
        abs(out["test_NDCG@10"]["alone_mean"] - out["test_NDCG@10"]["group_mean"])
        <= out["test_NDCG@10"]["alone_sd"]
    )
    saved = json.loads(
        (results / "analysis" / f"group_agreement_{cfgs[0].canonical().key()}.json").read_text()
    )
    assert saved["runs"] == out["runs"] and saved["provenance"]["git"]


def test_device_cuda_without_cuda_is_refused_before_training(results):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="no CUDA device"):
        train.run(
            train.Config(backbone="cdae", size=4, **dict(TINY, device="cuda")),
            results,
            progress=False,
        )
    assert not (results / "runs").exists()


def test_a_compiled_static_step_trains_as_the_eager_one(results, monkeypatch):
    """Execution(compile=...) (CDLIB_COMPILE) compiles the step's forward pass and loss as one graph (fullgraph: a host wait would
    fail to compile): the same losses as eager, for a plain and a CD student; refused for dynamic shapes."""
    if not any(shutil.which(c) for c in ("cc", "gcc", "clang")):
        pytest.skip("torch.compile on the CPU needs a C compiler")
    base = dict(TINY, epochs=2, min_epochs=2, patience=2, shapes="static")
    cfgs = [
        train.Config(backbone="cdae", size=4, **base).canonical(),
        train.Config(backbone="cdae", size=4, method="cd", teacher_size=8, **base).canonical(),
    ]
    ds = train.dataset_for(cfgs[0])
    teacher = train.load_teacher(cfgs[1], results, progress=False)[0]
    eager = [loop.fit(c, ds, t, progress=False) for c, t in zip(cfgs, (None, teacher))]
    compiled_step = config.Execution(compile="default")
    # a group (two plain members, two with CD's items): every member's shapes follow the group's, so the
    # step compiles a few times (4 graphs here; 9 when each member kept its own shapes), not at every
    # step; each member's losses are eager's alone (a run is a group of one: `loop.fit`)
    from torch._dynamo.utils import counters

    before = counters["stats"]["unique_graphs"]
    group = loop.fit_group(
        cfgs + [dataclasses.replace(c, seed=1) for c in cfgs],
        ds,
        [None, teacher] * 2,
        progress=False,
        execution=compiled_step,
    )
    assert 0 < counters["stats"]["unique_graphs"] - before <= 4
    for a, b in zip(eager, group):
        assert [x["loss"] for x in a["curve"]] == pytest.approx(
            [x["loss"] for x in b["curve"]], abs=1e-5
        )
    with pytest.raises(ValueError, match="static shapes"):
        loop.fit(
            dataclasses.replace(cfgs[0], shapes="dynamic"),
            ds,
            progress=False,
            execution=compiled_step,
        )


@pytest.mark.parametrize(
    "backbone,method,extra",
    [
        ("cdae", "none", {}),
        ("neumf", "none", {}),
        ("cdae", "cd", {"guide": "student"}),
        ("cdae", "cd", {"sampling": "uniform"}),
        ("neumf", "rd", {"rd_warmup": 0}),
        ("cdae", "cd", {"guide": "student", "step": "sparse"}),
        ("neumf", "none", {"step": "sparse"}),
        ("cdae", "none", {"step": "deferred"}),
    ],
)
def test_a_static_step_reads_no_value_from_the_device(backbone, method, extra, monkeypatch):
    """A whole static step (batch, inputs, method items, forward, loss, backward) runs on the meta device,
    whose tensors have shapes and no values: nothing in it waits for a value from a GPU. (The teacher's
    soft labels are a stand-in here; `test_scoring_paths_agree` checks the static scorer.)"""
    meta = torch.device("meta")
    cfg = train.Config(
        backbone=backbone,
        size=4,
        method=method,
        shapes="static",
        **dict(TINY, subset_users=None),
        **extra,
    ).canonical()
    ds = train.dataset_for(cfg)
    positives = index.UserItems(ds.train)
    teacher = (
        train.build_model(dataclasses.replace(cfg, size=8), ds).eval() if method != "none" else None
    )
    unit = methods.build(cfg, positives, teacher)
    unit.start_epoch(
        0, train.build_model(cfg, ds)
    )  # per-epoch work may read values; a step may not
    for owner in (
        unit,
        *([unit.sampler] if method == "cd" else []),
    ):  # then the method's state onto meta
        for name, v in list(vars(owner).items()):
            if isinstance(v, torch.Tensor):
                setattr(owner, name, v.to(meta))
            if isinstance(v, index.UserItems):
                setattr(owner, name, index.UserItems(ds.train, meta))
    if method == "cd":
        unit.teacher_score = lambda users, items: torch.zeros(items.shape, device=meta)
    model = train.build_model(cfg, ds, meta)
    member = batches.Member(
        cfg, model, unit, torch.Generator().manual_seed(0), torch.get_rng_state()
    )
    users = torch.randperm(ds.n_users)[: cfg.batch_size].to(meta)
    step = batches.static_batches([member], index.UserItems(ds.train, meta), [users], [4000])
    stack = loop.Stack([member])
    loss, _ = stack.loss(step)
    loss.backward()
    assert loss.device == meta and all(
        p.grad is not None for p in model.parameters() if p.requires_grad
    )
    if cfg.step != "dense":  # and RowAdam's masked step, its fused kernel stubbed (meta has none)
        calls = []
        monkeypatch.setattr(rowadam, "adam", lambda *a, **k: calls.append(a))
        stack.opt.step()
        assert len(calls) == 1
