import dataclasses
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("CDLIB_DATA", str((ROOT / ".." / "shared" / "data").resolve()))


# a run small enough for a unit test: 200 users of ml-100k, 3 epochs
TINY = dict(dataset="ml-100k", subset_users=200, epochs=3, patience=2, min_epochs=1, device="cpu")


@pytest.fixture()
def results(tmp_path, monkeypatch):
    """A results folder of the test's own, with a weights cache of its own (CDLIB_CACHE)."""
    monkeypatch.setenv("CDLIB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "results"


@pytest.fixture()
def one_thread():
    """One torch thread, as every record: two runs on two threads can part by rounding."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def ml100k():
    from cdlib import data

    return data.load("ml-100k")


def _cpu_record(results, key: str, config: dict, ndcg: float) -> None:
    """A record of a CPU run with its test NDCG@10 (sampled), what the agreement tables read."""
    from cdlib import runs

    runs.write_record(
        {
            "key": key,
            "config": {"dataset": "a", "backbone": "cdae", "size": 20, "device": "cpu", **config},
            "test_sampled": {"NDCG@10": ndcg},
            "provenance": {"device": "cpu: x, 1 threads"},
        },
        results,
    )


@pytest.fixture
def cpu_record():
    """`_cpu_record`: writes a minimal CPU run record (agreement tables, the README's step section)."""
    return _cpu_record


def fake_record(c, valid: float, test: float = 0.5) -> dict:
    """A record of canonical config `c` as train.run returns it, every metric 0.5 but the validation
    and test NDCG@10 (sampled): what the tuning stage reads."""
    from cdlib import tables

    m = {k: 0.5 for k in tables.METRICS}
    return {
        "key": c.key(),
        "n_params": 1,
        "best_epoch": 1,
        "epochs_run": 1,
        "timing": {"train_seconds": 0},
        "provenance": {"device": "cpu: x"},
        "test_sampled": {**m, "NDCG@10": test},
        "test_full": m,
        "valid_sampled": {**m, "NDCG@10": valid},
        "valid_full": m,
    }


def fake_training(monkeypatch, paper_lr: float = 3e-3, valid=None):
    """train.run_group writes a fake record for each run not recorded (none when training is off), and
    train.load_teacher gives no teacher (the backlog's retraining of a teacher's weights):
    validation prefers learning rate 3e-3 (`paper_lr` with the paper profile's validation
    negatives), and CD at lambda_kd 1.0 with 20 distilled items; or, given, `valid(config)` is each
    run's validation NDCG@10."""
    from cdlib import runs, train

    def preferred(c):
        lr = paper_lr if c.valid_negatives == "own" else 3e-3
        good = c.lr == lr if c.method == "none" else c.method != "cd" or c.lambda_kd == 1.0
        return 0.9 if good and (c.method != "cd" or c.n_distill in (None, 20)) else 0.1

    def fake_group(cfgs, results=None, refresh=False, progress=True, execution=None):
        out = []
        for c in (c.canonical() for c in cfgs):
            rec = runs.read_record(c.key(), results)
            if rec is None:
                if execution is not None and not execution.train:
                    raise train.NotRecorded(c.key())
                v = (valid or preferred)(c)
                rec = {**fake_record(c, valid=v), "config": dataclasses.asdict(c)}
                runs.write_record(rec, results)
            out.append(rec)
        return out

    monkeypatch.setattr(train, "run_group", fake_group)
    # a fake teacher has no weights to cache or load
    monkeypatch.setattr(train, "load_teacher", lambda *a, **k: (None, None))
