"""The pair kernel (cdlib/pairkernel.py, cdlib/pairs.cpp): a sparse NeuMF's training logits and every
gradient through it are autograd's to the bit, its check refuses an extension that differs, and
training through it ends at the same weights as training through autograd's graph."""

from __future__ import annotations

import pytest
import torch

from cdlib import loop, models, pairkernel
from cdlib.config import Config, build_model, dataset_for

EXT = pairkernel.load()
needs_kernel = pytest.mark.skipif(EXT is None, reason="the pair extension did not build here")


def test_where_it_builds_it_gives_autograds_numbers():
    """Built here, the extension passes its check (else `load` gives it up and the tests below skip)."""
    try:
        ext = pairkernel._build()
    except Exception as e:  # noqa: BLE001 -- no C++ compiler, ninja or PyTorch's headers
        pytest.skip(f"the extension does not build here ({type(e).__name__}: {e})")
    assert pairkernel._matches(ext)


@needs_kernel
@pytest.mark.parametrize("shape", pairkernel.CHECKS)
def test_logits_and_gradients_are_autograds_bit_for_bit(shape):
    gen = torch.Generator().manual_seed(1)
    assert pairkernel._matches_one(EXT, gen, *shape)


@needs_kernel
def test_a_real_batch_has_autograds_gradients(ml100k):
    """A student's batch of ml-100k, its users' positives and four negatives each."""
    torch.manual_seed(0)
    model = models.NeuMF(ml100k.n_users, ml100k.n_items, 8, sparse=True, init="ncf")
    users = torch.arange(16)
    train = ml100k.train.tocsr()
    rows = torch.repeat_interleave(users, torch.as_tensor(train.getnnz(1)[:16]))
    items = torch.as_tensor(train.indices[: train.indptr[16]], dtype=torch.long)
    rows = torch.cat([rows, rows.repeat(4)])
    items = torch.cat([items, torch.randint(0, ml100k.n_items, (4 * len(items),))])
    dz = torch.randn(len(rows))
    want = pairkernel.gradients(model, users, rows, items, dz)
    got = pairkernel.gradients(model, users, rows, items, dz, EXT)
    assert torch.equal(want[0], got[0]) and pairkernel._same(want[1], got[1])


@needs_kernel
def test_the_check_refuses_an_extension_one_rounding_off():
    class Off:  # the extension's logits, and so its gradients, one float32 rounding away
        @staticmethod
        def pair_logits(*args):
            return EXT.pair_logits(*args) * (1 + 2**-20)

    assert pairkernel._matches(EXT) is True
    assert pairkernel._matches(Off()) is False


@needs_kernel
def test_the_check_leaves_the_global_random_state_as_it_was():
    before = torch.get_rng_state()
    pairkernel._matches(EXT)
    assert torch.equal(torch.get_rng_state(), before)


def test_off_keeps_autograds_graph(monkeypatch):
    monkeypatch.setenv("CDLIB_PAIR_KERNEL", "off")
    pairkernel.load.cache_clear()
    try:
        assert pairkernel.load() is None
    finally:
        monkeypatch.delenv("CDLIB_PAIR_KERNEL")
        pairkernel.load.cache_clear()


@needs_kernel
@pytest.mark.parametrize("method", ["rd", "cd"])
def test_training_through_it_ends_at_autograds_weights(method, monkeypatch):
    """Three epochs of an ml-100k student, deferred Adam, distilled from a random teacher: the same
    curve and weights with the extension as with autograd's graph."""
    cfg = Config(
        dataset="ml-100k", backbone="neumf", size=8, method=method, step="deferred",
        mlp_init="ncf", subset_users=300, epochs=3, patience=3, min_epochs=3, device="cpu",
    ).canonical()  # fmt: skip
    ds = dataset_for(cfg)
    torch.manual_seed(0)
    teacher = build_model(cfg.teacher(), ds).eval()
    outs = []
    for ext in (None, EXT):
        monkeypatch.setattr(pairkernel, "load", lambda ext=ext: ext)
        outs.append(loop.fit(cfg, ds, teacher, progress=False))
    strip = [[{k: v for k, v in e.items() if k != "seconds"} for e in o["curve"]] for o in outs]
    assert strip[0] == strip[1]
    sa, sb = (o["model"].state_dict() for o in outs)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
