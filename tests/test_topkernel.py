"""The top-k kernel (cdlib/topkernel.py, cdlib/topk.c): the ids of torch.topk, -1 for infinite
scores, on rows with ties, signed zeros, -inf (masked positives), NaN and +inf, fewer finite scores
than k, and rows shorter than a block; a ranking's refresh gives the same ids with it and without."""

from __future__ import annotations

import shutil

import pytest
import torch

from cdlib import index, models, samplers, topkernel

KERNEL = topkernel.load()
needs_kernel = pytest.mark.skipif(KERNEL is None, reason="the top-k kernel did not build here")


def _torch(scores: torch.Tensor, k: int) -> torch.Tensor:
    val, idx = scores.topk(k, dim=1)
    return torch.where(torch.isinf(val), -1, idx)


def _rows(gen: torch.Generator, kind: str, n: int, width: int) -> torch.Tensor:
    s = torch.randn(n, width, generator=gen)
    if kind == "ties":
        s = torch.round(s * 3)
    elif kind == "zeros":  # +0 and -0, equal as floats
        s = torch.where(torch.rand(n, width, generator=gen) < 0.5, 0.0, -0.0)
        s[:, ::7] = torch.randn(n, len(range(0, width, 7)), generator=gen)
    elif kind == "masked":
        s[torch.rand(n, width, generator=gen) < 0.8] = -torch.inf
        s[0] = -torch.inf  # a row with nothing missing
    elif kind == "nan":
        s[torch.rand(n, width, generator=gen) < 0.01] = torch.nan
    elif kind == "inf":
        s[torch.rand(n, width, generator=gen) < 0.3] = -torch.inf
        s[torch.rand(n, width, generator=gen) < 0.01] = torch.inf
    return s


def test_the_kernel_builds_where_there_is_a_c_compiler():
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    assert KERNEL is not None


@needs_kernel
@pytest.mark.parametrize("kind", ["distinct", "ties", "zeros", "masked", "nan", "inf"])
def test_it_gives_torchs_ids(kind):
    gen = torch.Generator().manual_seed(len(kind))
    for _ in range(60):
        n, width = (int(torch.randint(1, m, (1,), generator=gen)) for m in (30, 700))
        k = int(torch.randint(1, width + 1, (1,), generator=gen))
        s = _rows(gen, kind, n, width)
        assert torch.equal(topkernel.top_ids(s, k), _torch(s, k)), (kind, n, width, k)


@needs_kernel
def test_it_ranks_unique_rows_itself_and_leaves_ties_to_torch():
    """A row's answer is its own where its k + 1 highest are distinct; a tie among them (at the
    edge of the top k too) is flagged for torch; a tie below them is not."""
    row = torch.arange(200.0).flip(0)[None].clone()  # 199, 198, ..., 0
    ids, ok = KERNEL(row, 5)
    assert ok.all() and ids.tolist() == [[0, 1, 2, 3, 4]]
    for at in (1, 5):  # a tie inside the top 5, and between the 5th and the 6th
        tied = row.clone()
        tied[0, at] = tied[0, at - 1]
        assert not KERNEL(tied, 5)[1].any()
        assert torch.equal(topkernel.top_ids(tied, 5), _torch(tied, 5))
    below = row.clone()
    below[0, 150] = below[0, 151]
    assert KERNEL(below, 5)[1].all()
    zeros = torch.full((1, 5 * topkernel.BLOCK), -1.0)  # a block each: 5, 4, +0, -0, nothing
    zeros[0, :: topkernel.BLOCK] = torch.tensor([5.0, 4.0, 0.0, -0.0, -1.0])
    assert not KERNEL(zeros, 3)[1].any()  # the 3rd is +0 or -0, equal: torch's to choose
    assert torch.equal(topkernel.top_ids(zeros, 3), _torch(zeros, 3))


@needs_kernel
def test_a_refresh_ranks_the_same_with_and_without_it(ml100k, monkeypatch):
    """top_missing of a NeuMF (feature-major) and a CDAE over every user of ml-100k."""
    pos = index.UserItems(ml100k.train, torch.device("cpu"))
    for backbone, size, tower in [("neumf", 8, "feature-major"), ("cdae", 20, None)]:
        torch.manual_seed(0)
        m = models.build(backbone, ml100k.train, size, device="cpu").eval()
        with_kernel = samplers.top_missing(m, pos, 100, tower=tower)
        with monkeypatch.context() as mp:
            mp.setattr(topkernel, "load", lambda: None)
            assert torch.equal(samplers.top_missing(m, pos, 100, tower=tower), with_kernel)


def test_what_it_does_not_take_goes_to_torch(monkeypatch):
    s = torch.randn(3, 50, dtype=torch.float64)
    assert torch.equal(topkernel.top_ids(s, 7), _torch(s, 7))
    with pytest.raises(RuntimeError):  # k beyond the row: torch's own error
        topkernel.top_ids(torch.randn(2, 5), 6)
    monkeypatch.setenv("CDLIB_TOPK_KERNEL", "off")
    assert topkernel.load.__wrapped__() is None
