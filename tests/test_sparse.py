"""The sparse steps (`Config.step` "sparse" and "deferred", cdlib/sparse.py): the same function as
the dense step, its gradients the same numbers as the dense ones' rows; the deferred step trains as
the dense one (its Adam alone: tests/test_rowadam.py)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cdlib import index, loop, models, rowadam, rowkernel, sparse, train
from cdlib.config import Config, Execution


def _pair(ds, backbone, size, seed=1):
    """The same initial model with the dense and the sparse step."""
    torch.manual_seed(seed)
    dense = models.build(backbone, ds.train, size, 0.5, "cpu")
    torch.manual_seed(seed)
    return dense, models.build(backbone, ds.train, size, 0.5, "cpu", sparse=True)


def _dense_grads(model) -> dict:
    out = {}
    for name, p in model.named_parameters():
        g = p.grad.to_dense() if p.grad.is_sparse else p.grad
        out["encoder.weight" if name == "encoder_items" else name] = (
            g.T if name == "encoder_items" else g
        )
    out["encoder.bias"] = out.pop("encoder_bias", out.get("encoder.bias"))
    return out


@pytest.mark.parametrize("name", ["ml-100k", "citeulike-t"])
@pytest.mark.parametrize("pairwise", [True, False])
def test_sparse_cdae_is_the_dense_function_with_the_same_gradients(name, pairwise, monkeypatch):
    """Logits at the pairs and every parameter's gradient equal the dense CDAE's to 1e-5, on both
    of the sparse decoder's paths (pair by pair; over the batch's distinct items), with the same
    dropout draws."""
    from cdlib import data

    monkeypatch.setattr(models, "PAIRWISE_COST", 0 if pairwise else 10**9)
    ds = data.load(name)
    dense, sp = _pair(ds, "cdae", 50)
    assert torch.equal(sp.encoder_items, dense.encoder.weight.T)
    g = torch.Generator().manual_seed(0)
    users = torch.randperm(ds.n_users, generator=g)[:64]
    pairs = index.UserItems(ds.train).pairs(users)
    rows = torch.cat([pairs[0], torch.randint(0, 64, (500,), generator=g)])
    items = torch.cat([pairs[1], torch.randint(0, ds.n_items, (500,), generator=g)])
    torch.manual_seed(5)
    zd = dense.pair_logits(users, rows, items, dense.batch_inputs(users, pairs))
    torch.manual_seed(5)
    zs = sp.pair_logits(users, rows, items, sp.batch_inputs(users, pairs))
    torch.testing.assert_close(zs, zd, rtol=0, atol=1e-5)
    weight = torch.randn(len(zd), generator=g)
    (zd * weight).sum().backward()
    (zs * weight).sum().backward()
    assert all(p.grad.is_sparse for n, p in sp.named_parameters() if n != "encoder_bias")
    gd, gs = _dense_grads(dense), _dense_grads(sp)
    assert gd.keys() == gs.keys()
    for k in gd:
        torch.testing.assert_close(gs[k], gd[k], rtol=0, atol=1e-5, msg=k)
    with torch.no_grad():  # and every scoring path of a trained-no-further model
        u = users[:8]
        torch.testing.assert_close(sp.score_all(u), dense.score_all(u), rtol=0, atol=1e-5)
        cand = torch.randint(0, ds.n_items, (8, 100), generator=g)
        torch.testing.assert_close(sp.scorer()(u, cand), dense.scorer()(u, cand), rtol=0, atol=1e-5)


def test_sparse_neumf_is_the_dense_function_with_the_same_gradients(ml100k):
    dense, sp = _pair(ml100k, "neumf", 8)
    users = torch.arange(16)
    rows = torch.arange(16).repeat_interleave(20)
    items = torch.randint(0, ml100k.n_items, (320,), generator=torch.Generator().manual_seed(0))
    zd, zs = dense.pair_logits(users, rows, items), sp.pair_logits(users, rows, items)
    torch.testing.assert_close(zs, zd, rtol=0, atol=0)
    zd.sum().backward()
    zs.sum().backward()
    for (n, a), b in zip(dense.named_parameters(), sp.parameters()):
        assert b.grad.is_sparse == (
            "embedding" in type(getattr(sp, n.split(".")[0])).__name__.lower()
        )
        torch.testing.assert_close(b.grad.to_dense(), a.grad, rtol=0, atol=1e-6, msg=n)


@pytest.mark.parametrize("m,n", [(300, 50), (12, 50), (13, 50), (16, 30351), (0, 10)])
def test_distinct_is_unique(m, n):
    """Both ways (a mask for many ids, a sort for few), the integers of torch.unique."""
    ids = torch.randint(0, n, (m,), generator=torch.Generator().manual_seed(0))
    rows, where = sparse.distinct(ids, n)
    u, inv = torch.unique(ids, return_inverse=True)
    assert torch.equal(rows, u) and torch.equal(where, inv)
    assert rows.dtype == where.dtype == torch.long


@pytest.mark.parametrize("through_numpy", [False, True])
def test_put_rows_is_index_copy(through_numpy, monkeypatch):
    """Both ways (numpy's row assignment, torch's index_copy_), the same table; a parameter too, and
    rows given as a strided view."""
    monkeypatch.setattr(sparse, "PUT_NUMPY_MIN", 0 if through_numpy else 1 << 62)
    gen = torch.Generator().manual_seed(0)
    table = torch.randn(50, 6, generator=gen).requires_grad_()
    rows = torch.randperm(50, generator=gen)[:17]
    new = torch.randn(6, 17, generator=gen).T  # (not contiguous)
    want = table.detach().clone().index_copy_(0, rows, new)
    with torch.no_grad():
        sparse.put_rows(table, rows, new)
    assert torch.equal(table.detach(), want)


def test_take_has_a_sparse_gradient_of_its_rows():
    b = torch.arange(5.0, requires_grad=True)
    (sparse.take(b, torch.tensor([1, 3, 3])) * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert b.grad.is_sparse
    assert torch.equal(b.grad.to_dense(), torch.tensor([0.0, 1.0, 0.0, 5.0, 0.0]))


def test_the_step_enters_the_key_only_when_sparse():
    base = Config(dataset="ml-100k", device="cpu")
    assert base.canonical().step == "dense"
    assert Config(dataset="ml-100k", device="cpu", step="dense").key() == base.key()
    s = Config(dataset="ml-100k", device="cpu", step="sparse", method="cd", size=20)
    assert s.key() != dataclasses.replace(s, step=None).key()
    assert s.teacher().step == "sparse"
    d = dataclasses.replace(s, step="deferred")
    assert len({d.key(), s.key(), dataclasses.replace(s, step=None).key()}) == 3
    with pytest.raises(ValueError, match="step must be one of"):
        Config(step="lazy").canonical()


TINY = dict(dataset="ml-100k", subset_users=200, epochs=2, patience=2, min_epochs=1, device="cpu")


@pytest.mark.parametrize("step", sparse.SPARSE_STEPS)
def test_the_sparse_step_is_refused_in_a_group_or_compiled(step):
    cfgs = [Config(**TINY, step=step, seed=s).canonical() for s in (0, 1)]
    ds = train.dataset_for(cfgs[0])
    with pytest.raises(ValueError, match=f"step='{step}'.*group of 2"):
        loop.fit_group(cfgs, ds, progress=False)
    static = dataclasses.replace(cfgs[0], shapes="static")
    with pytest.raises(ValueError, match=f"step='{step}'.*compiled"):
        loop.fit(static, ds, progress=False, execution=Execution(compile="default"))


@pytest.mark.parametrize("step", sparse.SPARSE_STEPS)
@pytest.mark.parametrize("backbone", ["cdae", "neumf"])
@pytest.mark.parametrize("shapes", ["dynamic", "static"])
def test_a_sparse_run_trains_and_repeats_itself(step, backbone, shapes, one_thread):
    """Both shapes of step train with either sparse step (the static one through RowAdam's masked
    form), to finite losses, and the same seed gives the same weights."""
    cfg = Config(**TINY, backbone=backbone, size=8, step=step, shapes=shapes).canonical()
    ds = train.dataset_for(cfg)
    a, b = (loop.fit(cfg, ds, progress=False) for _ in range(2))
    assert all(torch.isfinite(torch.tensor(c["loss"])) for c in a["curve"])
    assert a["curve"][-1]["loss"] < a["curve"][0]["loss"]
    for (n, x), y in zip(a["model"].state_dict().items(), b["model"].state_dict().values()):
        assert torch.equal(x, y), n


@pytest.mark.parametrize("backbone", ["cdae", "neumf"])
def test_the_deferred_step_trains_as_the_dense_one(backbone, monkeypatch):
    """The same configuration trained with the dense and the deferred step, steps of 4 users so that
    rows are deferred after the warm-up's 1,000 steps: the same validation curve and weights to
    float rounding (the sparse CDAE's gradients sum in another order), where the lazy step trains
    otherwise. `Config.defer="all"`: tables this small are otherwise stepped whole."""
    deferred = []
    catch_up, kernel = rowadam.RowAdam._catch_up, rowkernel.Kernels.catch_up  # (either path)
    monkeypatch.setattr(rowadam.RowAdam, "_catch_up", lambda *a: deferred.append(1) or catch_up(*a))
    monkeypatch.setattr(rowkernel.Kernels, "catch_up", lambda *a: deferred.append(1) or kernel(*a))
    ds = train.dataset_for(Config(**TINY).canonical())
    out = {}
    for step in ("dense", "deferred", "sparse"):
        cfg = Config(
            **dict(TINY, epochs=21, patience=21, batch_size=4),
            backbone=backbone,
            size=8,
            step=step,
            defer="all",
            lr=1e-3,
        )
        out[step] = loop.fit(cfg.canonical(), ds, progress=False)
    curve = {s: [c["valid_NDCG@10"] for c in out[s]["curve"]] for s in out}
    weights = {}
    for s in out:
        sd = dict(out[s]["model"].state_dict())
        if "encoder_items" in sd:
            sd["encoder.weight"] = sd.pop("encoder_items").T
            sd["encoder.bias"] = sd.pop("encoder_bias")
        weights[s] = sd
    assert len(deferred) > 100
    assert curve["deferred"] == pytest.approx(curve["dense"], abs=1e-4)
    for n, w in weights["dense"].items():
        torch.testing.assert_close(weights["deferred"][n], w, rtol=0, atol=1e-4)
    assert max((weights["sparse"][n] - w).abs().max() for n, w in weights["dense"].items()) > 1e-3
