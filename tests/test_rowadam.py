"""Adam at the cost of a step's rows (cdlib/rowadam.py): the lazy Adam checked against a row-by-row
definition, the deferred one against torch's Adam, through look-ups, with its tail sums, its choice
of the tables it defers, and its sort of a step's ids once for the tables read at them."""

from __future__ import annotations

import pytest
import torch

from cdlib import rowadam, sparse
from cdlib.config import Config


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
    opt = rowadam.RowAdam([p], lr=0.05, masked=masked)
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
    opt, ref = rowadam.RowAdam([p, bias], lr=0.1), torch.optim.Adam([q, bias_q], lr=0.1)
    for _ in range(3):
        g = torch.randn(6, 4, generator=gen)
        p.grad, q.grad = g.to_sparse(), g.clone()
        bias.grad, bias_q.grad = g[0].clone(), g[0].clone()  # a dense parameter: torch's Adam
        opt.step()
        ref.step()
    torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=1e-7)
    torch.testing.assert_close(bias.detach(), bias_q.detach(), rtol=0, atol=0)


def test_deferred_row_adam_writes_the_same_bits_either_way(monkeypatch):
    """Deferred RowAdam's tables and moments, their rows written through numpy or by index_copy_:
    bit for bit the same after steps that defer, catch up and flush."""
    monkeypatch.setattr(rowadam, "DEFER_MIN", 0)
    monkeypatch.setattr(rowadam, "WARMUP", 0.0)
    out = []
    for least in (0, 1 << 62):
        monkeypatch.setattr(sparse, "PUT_NUMPY_MIN", least)
        gen = torch.Generator().manual_seed(1)
        p = torch.randn(200, 4, generator=gen).requires_grad_()
        opt = rowadam.RowAdam([p], lr=0.01, deferred=True)
        for _ in range(60):
            ids = torch.randint(
                0, 200, (int(torch.randint(1, 150, (1,), generator=gen)),), generator=gen
            )
            sparse.fresh(p, ids)
            p.grad = torch.sparse_coo_tensor(
                ids[None], torch.randn(len(ids), 4, generator=gen), p.shape, check_invariants=False
            )
            opt.step()
        opt.flush()
        out.append([p.detach().clone(), opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"]])
    assert all(torch.equal(a, b) for a, b in zip(*out))


def test_tail_sums_are_the_sums_they_name():
    f, e = rowadam.tail_sums(50, 0.9, 0.99)
    for t in (0, 1, 7, 49):
        j = torch.arange(1, 4000, dtype=torch.float64)
        s = t + j
        c = torch.sqrt(1 - 0.99**s) / (1 - 0.9**s)
        r = 0.9 / 0.99**0.5
        assert f[t] == pytest.approx(float((c * r**j).sum()), rel=1e-12)
        assert e[t] == pytest.approx(
            float((c * torch.sqrt(1 - 0.99**s) * (0.9 / 0.99) ** j).sum()), rel=1e-12
        )
    with pytest.raises(ValueError, match="beta1 < beta2"):
        rowadam.tail_sums(5, 0.99, 0.9)


@pytest.mark.parametrize("scale", [1.0, 1e-7])
@pytest.mark.parametrize("n_ids", [3, 40])
@pytest.mark.parametrize("masked", [False, True])
def test_deferred_row_adam_is_adam(scale, n_ids, masked, monkeypatch):
    """Deferred RowAdam gives torch's Adam: after its whole-table warm-up, on rows touched every ~20
    steps, in float64, to 1e-9 where sqrt(v) >> eps, and to 1e-6 of the distance moved where the
    gradients (1e-7) put sqrt(v) near eps; the moments too, once flushed."""
    monkeypatch.setattr(rowadam, "DEFER_MIN", 0)  # (a table this small is otherwise stepped whole)
    gen = torch.Generator().manual_seed(n_ids)
    p0 = torch.randn(60, 3, generator=gen, dtype=torch.float64)
    p, q = p0.clone().requires_grad_(), p0.clone().requires_grad_()
    opt = rowadam.RowAdam([p], lr=0.003, masked=masked, deferred=True)
    ref = torch.optim.Adam([q], lr=0.003)
    assert opt.warmup == 1000
    for t in range(1500):
        ids = torch.randint(0, 60, (n_ids,), generator=gen)
        values = scale * torch.randn(n_ids, 3, generator=gen, dtype=torch.float64)
        p.grad = torch.sparse_coo_tensor(ids[None], values, p.shape, check_invariants=False)
        q.grad = torch.zeros_like(q).index_add_(0, ids, values)
        opt.step()
        ref.step()
        if t == 1200:
            opt.flush()
    assert masked or n_ids == 40 or opt.state[p]["pending"]  # rows were deferred
    opt.flush()
    moved = (q - p0).abs().max().item()
    assert moved > 0.1
    tol = 1e-9 if scale == 1.0 else 1e-6 * moved
    torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=tol)
    for k in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(opt.state[p][k], ref.state[q][k], rtol=1e-9, atol=0)


def test_deferred_needs_no_weight_decay():
    with pytest.raises(ValueError, match="step='deferred' needs weight_decay=0"):
        Config(dataset="ml-100k", device="cpu", step="deferred", weight_decay=1e-4).canonical()
    with pytest.raises(ValueError, match="weight_decay=0"):
        rowadam.RowAdam(
            [torch.zeros(3, requires_grad=True)], lr=0.1, weight_decay=0.1, deferred=True
        )


def test_deferred_look_ups_read_each_row_as_adam_left_it(monkeypatch):
    """A table trained through look-ups (`sparse.embedding`, `sparse.take`) with deferred RowAdam,
    past its warm-up, against torch's Adam on dense look-ups of the same table (float64): steps that
    read the table twice (overlapping rows), and steps that do not read it at all, included."""
    monkeypatch.setattr(rowadam, "DEFER_MIN", 0)  # (a table this small is otherwise stepped whole)
    gen = torch.Generator().manual_seed(0)
    p0 = torch.randn(50, 4, generator=gen, dtype=torch.float64)
    p, q = p0.clone().requires_grad_(), p0.clone().requires_grad_()
    opt = rowadam.RowAdam([p], lr=0.003, deferred=True)
    ref = torch.optim.Adam([q], lr=0.003)
    other = torch.zeros(1, dtype=torch.float64, requires_grad=True)  # so that every step has a loss
    for t in range(1200):
        ids = torch.randint(0, 50, (3,), generator=gen)
        w = torch.randn(3, 4, generator=gen, dtype=torch.float64)
        twice = t % 7 == 0
        more = torch.cat([ids[:1], torch.randint(0, 50, (2,), generator=gen)])
        skip = t % 11 == 0
        for table, opt_, lookup in ((p, opt, sparse.embedding), (q, ref, lambda a, i: a[i])):
            loss = (other * 0).sum()
            if not skip:
                loss = loss + (lookup(table, ids) * w).sum()
                if twice:
                    loss = loss + (lookup(table, more) ** 2).sum()
            opt_.zero_grad()
            loss.backward()
            opt_.step()
    opt.flush()
    assert (q - p0).abs().max() > 0.1
    torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=1e-9)


@pytest.mark.parametrize("defer_all", [False, True])
def test_a_small_table_is_stepped_whole_by_deferred_adam_unless_all_are_deferred(defer_all):
    """A table too small to gain from deferring takes Adam's whole-table step, so nothing is
    deferred: a row touched once moves on by its momentum at the steps after, as in torch's Adam.
    Which tables are deferred (the cases timed in sparse.py): large ones, and mid-sized ones of
    which a step reads a small part. With `defer_all` (Config.defer="all") the same table is
    deferred, its untouched rows' steps pending until flushed, and flushed it is torch's Adam."""
    assert rowadam.defers(25584 * 200, 4000 * 200) and rowadam.defers(7947 * 64, 16 * 64)
    assert not rowadam.defers(30351 * 8, 16 * 8) and not rowadam.defers(25584 * 20, 1000 * 20)
    p, q = (torch.zeros(100, 4, requires_grad=True) for _ in "pq")
    opt = rowadam.RowAdam([p], lr=0.1, deferred=True, defer_all=defer_all)
    ref = torch.optim.Adam([q], lr=0.1)
    opt.warmup = 0
    for ids in ([1, 2], [3], [3]):
        g = torch.sparse_coo_tensor(
            torch.tensor([ids]), torch.ones(len(ids), 4), p.shape, check_invariants=False
        )
        p.grad, q.grad = g, g.to_dense()
        opt.step()
        ref.step()
    assert opt.state[p]["defer"] == opt.state[p]["pending"] == defer_all
    # before any flush: deferred, rows 1 and 2 are two steps behind
    assert torch.equal(p.detach(), q.detach()) != defer_all
    opt.flush()
    torch.testing.assert_close(p.detach(), q.detach())


def test_tables_read_at_the_same_ids_sort_them_once_per_step(monkeypatch):
    """Deferred RowAdam sorts a step's ids once for every table looked up at them (`_distinct`: a
    NeuMF step's GMF and MLP tables of a side), from the look-ups to the step, and trains to the
    same bits as sorting them for each table anew; ids of the same length but other values (a third
    table) are sorted on their own."""
    monkeypatch.setattr(rowadam, "DEFER_MIN", 0)
    monkeypatch.setattr(rowadam, "WARMUP", 0.0)
    calls = []
    plain = rowadam.distinct

    def counted(ids, n):
        calls.append(len(ids))
        return plain(ids, n)

    monkeypatch.setattr(rowadam, "distinct", counted)
    out = []
    for shared in (True, False):
        if not shared:  # every look-up and step sorts its ids anew
            monkeypatch.setattr(rowadam.RowAdam, "_distinct", lambda self, ids, n: plain(ids, n))
        gen = torch.Generator().manual_seed(3)
        tables = [torch.randn(300, k, generator=gen).requires_grad_() for k in (4, 8, 4)]
        opt = rowadam.RowAdam(tables, lr=0.01, deferred=True)
        for _ in range(40):
            calls.clear()
            ids = torch.randint(0, 300, (20,), generator=gen)
            other = torch.randint(0, 300, (20,), generator=gen)
            loss = sum(
                (sparse.embedding(t, i) * torch.randn(20, t.shape[1], generator=gen)).sum()
                for t, i in zip(tables, (ids, ids, other))
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
        if shared:
            assert calls == [20, 20]  # (the last step: ids and other, once each)
        opt.flush()
        out.append([t.detach().clone() for t in tables])
    assert all(torch.equal(a, b) for a, b in zip(*out))
