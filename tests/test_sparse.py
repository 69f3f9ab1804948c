"""The sparse step (`Config.step = "sparse"`, cdlib/sparse.py): the same function as the dense
step, its gradients the same numbers as the dense ones' rows, and a lazy Adam checked against a
row-by-row definition."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cdlib import index, loop, models, sparse, train
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


def _lazy_adam_reference(p0, grads, lr, b1=0.9, b2=0.999, eps=1e-8):
    """Row by row: a row with a gradient at step t takes Adam's update with the bias corrections
    of t; a row without one keeps its value and moments."""
    p, m, v = p0.clone(), torch.zeros_like(p0), torch.zeros_like(p0)
    for t, g in enumerate(grads, 1):
        for r in range(len(p)):
            if not g["touched"][r]:
                continue
            m[r] = b1 * m[r] + (1 - b1) * g["dense"][r]
            v[r] = b2 * v[r] + (1 - b2) * g["dense"][r] ** 2
            p[r] -= lr / (1 - b1**t) * m[r] / ((v[r] / (1 - b2**t)).sqrt() + eps)
    return p


@pytest.mark.parametrize("n_ids", [3, 20, 40])
@pytest.mark.parametrize("masked", [False, True])
def test_row_adam_is_lazy_adam_row_by_row(n_ids, masked):
    """Few rows (gathered), many (2 x ids >= rows: the table in place, the rest restored) and the
    masked form
    all give the row-by-row lazy Adam; a row touched twice in a step has its gradients summed."""
    gen = torch.Generator().manual_seed(n_ids)
    p0 = torch.randn(60, 3, generator=gen)
    grads = []
    for _ in range(4):
        ids = torch.randint(0, 60, (n_ids,), generator=gen)
        values = torch.randn(n_ids, 3, generator=gen)
        grads.append(
            {
                "ids": ids,
                "values": values,
                "dense": torch.zeros(60, 3).index_add_(0, ids, values),
                "touched": torch.zeros(60, dtype=torch.bool).index_fill_(0, ids, True),
            }
        )
    assert not grads[0]["touched"].all()  # some row is left out, so lazy differs from Adam
    p = p0.clone().requires_grad_()
    opt = sparse.RowAdam([p], lr=0.05, masked=masked)
    for g in grads:
        p.grad = torch.sparse_coo_tensor(
            g["ids"][None], g["values"], p.shape, check_invariants=False
        )
        opt.step()
    torch.testing.assert_close(p.detach(), _lazy_adam_reference(p0, grads, 0.05))
    q = p0.clone().requires_grad_()  # torch's Adam moves untouched rows too: another optimiser
    adam = torch.optim.Adam([q], lr=0.05)
    for g in grads:
        q.grad = g["dense"].clone()
        adam.step()
    assert (q - p).abs().max() > 1e-3


def test_row_adam_with_every_row_touched_is_adam():
    gen = torch.Generator().manual_seed(0)
    p, q = (
        torch.randn(6, 4, generator=torch.Generator().manual_seed(1)).requires_grad_() for _ in "pq"
    )
    bias, bias_q = (torch.zeros(4, requires_grad=True) for _ in "pq")
    opt, ref = sparse.RowAdam([p, bias], lr=0.1), torch.optim.Adam([q, bias_q], lr=0.1)
    for _ in range(3):
        g = torch.randn(6, 4, generator=gen)
        p.grad, q.grad = g.to_sparse(), g.clone()
        bias.grad, bias_q.grad = g[0].clone(), g[0].clone()  # a dense parameter: torch's Adam
        opt.step()
        ref.step()
    torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=1e-7)
    torch.testing.assert_close(bias.detach(), bias_q.detach(), rtol=0, atol=0)


def test_distinct_is_unique():
    ids = torch.randint(0, 50, (300,), generator=torch.Generator().manual_seed(0))
    rows, where = sparse.distinct(ids, 50)
    u, inv = torch.unique(ids, return_inverse=True)
    assert torch.equal(rows, u) and torch.equal(where, inv)


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
    with pytest.raises(ValueError, match="step must be one of"):
        Config(step="lazy").canonical()


TINY = dict(dataset="ml-100k", subset_users=200, epochs=2, patience=2, min_epochs=1, device="cpu")


def test_the_sparse_step_is_refused_in_a_group_or_compiled():
    cfgs = [Config(**TINY, step="sparse", seed=s).canonical() for s in (0, 1)]
    ds = train.dataset_for(cfgs[0])
    with pytest.raises(ValueError, match="step='sparse'.*group of 2"):
        loop.fit_group(cfgs, ds, progress=False)
    static = dataclasses.replace(cfgs[0], shapes="static")
    with pytest.raises(ValueError, match="step='sparse'.*compiled"):
        loop.fit(static, ds, progress=False, execution=Execution(compile="default"))


@pytest.mark.parametrize("backbone", ["cdae", "neumf"])
@pytest.mark.parametrize("shapes", ["dynamic", "static"])
def test_a_sparse_run_trains_and_repeats_itself(backbone, shapes):
    """Both shapes of step train with the sparse step (the static one through RowAdam's masked
    form), to finite losses, and the same seed gives the same weights."""
    cfg = Config(**TINY, backbone=backbone, size=8, step="sparse", shapes=shapes).canonical()
    ds = train.dataset_for(cfg)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = (loop.fit(cfg, ds, progress=False) for _ in range(2))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.isfinite(torch.tensor(c["loss"])) for c in a["curve"])
    assert a["curve"][-1]["loss"] < a["curve"][0]["loss"]
    for (n, x), y in zip(a["model"].state_dict().items(), b["model"].state_dict().values()):
        assert torch.equal(x, y), n
