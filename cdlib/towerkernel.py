"""NeuMF's feature-major scores of every item (`models.NeuMF.score_all_feature_major`, CD's refresh
of a NeuMF student's ranking) in one compiled pass (`tower.c`), compiled on first use with the
machine's C compiler and called through ctypes: each (user, item) pair's tower in registers, where
torch takes four passes over [e x pairs] buffers and two matrix products whose small outputs (e/2 = 4
units at d = 8) leave the vector units idle.

The same numbers as torch, bit for bit: the kernel repeats torch's operations in their order, each
sum of a matrix product a chain of fused multiply-adds from 0 over the inner dimension. That is how
this machine's BLAS sums the products where it has been seen to (the first layer's [e/2 x e] product
at every e tried, the last's [1 x e/2] vector product at e/2 of 2 and 4, not 8), so nothing is assumed:
`Tower.takes` checks the kernel against torch's own computation (`tower_torch`) on random numbers of
each shape it is asked for (the first layer's width, the chunk of users torch would score at once,
the items, the thread count) before it stands in for it, and the shapes where they differ in any bit
keep torch's path. CDLIB_TOWER_KERNEL=off keeps torch's path everywhere.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch

from . import rowkernel

SOURCE = Path(__file__).with_name("tower.c")
MAX_E = 64  # the widest first layer the kernel takes (tower.c's MAX_E)


def tower_torch(a: torch.Tensor, c: torch.Tensor, w2, b2, w, buf: torch.Tensor) -> torch.Tensor:
    """The tower's output w . relu(W2 relu(a_b + c_i) + b2) of n users (a [e x n]) and every item
    (c [e x I]), [n x I], as torch computes it feature-major in `buf` [e x >= n x I]: one add and ReLU,
    the [e/2 x e] by [e x n I] product, the bias and ReLU, the [1 x e/2] by [e/2 x n I] product."""
    e, n = a.shape
    h = buf[:, :n]
    torch.add(a[:, :, None], c[:, None, :], out=h).relu_()  # [e, n, I]
    g = w2 @ h.reshape(e, -1)  # [e/2, n I]
    g += b2[:, None]
    return (w @ g.relu_()).view(n, c.shape[1])


class Tower:
    """The compiled kernel, and the shapes it has been checked on (`takes`)."""

    def __init__(self, lib):
        lib.tower_scores.restype = None
        lib.tower_scores.argtypes = [ctypes.c_void_p] * 6 + [ctypes.c_float, ctypes.c_void_p]
        lib.tower_scores.argtypes += [ctypes.c_int64] * 4
        self.lib, self.checked = lib, {}

    def scores(self, a, c, w2, b2, w, gmf, bias) -> torch.Tensor:
        """[B x I]: tower_torch of the users a [e x B] (all at once) + gmf [B x I] + bias, per
        element in that order, as `models.NeuMF.score_all_feature_major` adds them."""
        (e, n_users), n_items = a.shape, c.shape[1]
        out = torch.empty(n_users, n_items)
        ts = [t.contiguous() for t in (a, c, w2, b2, w, gmf)]
        self.lib.tower_scores(
            *(t.data_ptr() for t in ts), float(bias), out.data_ptr(), e, len(w2), n_users, n_items
        )
        return out

    def takes(self, e: int, h: int, chunks: set[int], n_items: int, *tensors) -> bool:
        """Whether the kernel stands in for torch scoring chunks of `chunks` users at once, every
        item, a first layer of width e and h units after it: float32 tensors on a CPU, e at most
        `MAX_E`, and the same bits as `tower_torch` on each of these shapes (`_same`)."""
        if e > MAX_E or not all(
            t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors
        ):
            return False
        threads = torch.get_num_threads()
        for n in chunks:
            key = (e, h, n, max(chunks), n_items, threads)
            if key not in self.checked:
                self.checked[key] = self._same(e, h, n, max(chunks), n_items)
            if not self.checked[key]:
                return False
        return True

    def _same(self, e: int, h: int, n: int, step: int, n_items: int) -> bool:
        """Whether the kernel gives tower_torch's bits (+ gmf + bias) for n users of a chunk of
        `step`, random numbers of each sign (drawn from a generator of their own)."""
        gen = torch.Generator().manual_seed(0)
        a, c = torch.randn(e, n, generator=gen), torch.randn(e, n_items, generator=gen)
        w2, b2, w = (torch.randn(*s, generator=gen) for s in ((h, e), (h,), (h,)))
        gmf, bias = torch.randn(n, n_items, generator=gen), torch.randn(1, generator=gen)
        want = tower_torch(a, c, w2, b2, w, torch.empty(e, step, n_items)).add_(gmf).add_(bias)
        got = self.scores(a, c, w2, b2, w, gmf, bias)
        return torch.equal(got.view(torch.int32), want.view(torch.int32))


@functools.cache
def load() -> Tower | None:
    """The kernel, built once per process; None where there is no C compiler, the build fails, or
    CDLIB_TOWER_KERNEL=off (torch's path)."""
    lib = rowkernel.library(
        SOURCE, "CDLIB_TOWER_KERNEL", "a NeuMF refresh scores with torch (the same numbers, slower)"
    )
    return Tower(lib) if lib is not None else None
