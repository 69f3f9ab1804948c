"""Each user's k highest-scored items, as a ranking's refresh takes them (`samplers.top_missing`),
in two compiled passes over each row (`topk.c`), compiled on first use with the machine's C
compiler and called through ctypes: the maxima of blocks of 32 scores bound the k + 1 highest from
below, so that the second pass reads the few blocks that reach the bound, where torch.topk sorts
its way through the row. The same ids as torch.topk: where a row's k + 1 highest finite scores are distinct, its
top k and their order are unique; a row with a tie among them, a NaN or a +inf is ranked by torch.
CDLIB_TOPK_KERNEL=off ranks every row with torch.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch

from . import rowkernel

SOURCE = Path(__file__).with_name("topk.c")
BLOCK = 32  # scores a block of the first pass (topk.c's BLOCK)


class TopK:
    """The compiled kernel (`top_k`)."""

    def __init__(self, lib):
        lib.top_k.restype = None
        lib.top_k.argtypes = [ctypes.c_void_p] + [ctypes.c_int64] * 3 + [ctypes.c_void_p] * 6
        self.lib = lib

    def __call__(self, scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """[B x k] ids (-1 past a row's finite scores), and [B] whether each row's are unique (else
        left to torch)."""
        scores = scores.contiguous()
        (n, n_items), out = scores.shape, torch.empty(len(scores), k, dtype=torch.long)
        ok = torch.empty(n, dtype=torch.uint8)
        blocks = -(-n_items // BLOCK)
        work = (torch.empty(n_items, dtype=torch.int32), torch.empty(n_items, dtype=torch.long))
        work += (torch.empty(blocks, dtype=torch.int32), torch.empty(blocks, dtype=torch.int32))
        ptrs = (out.data_ptr(), ok.data_ptr(), *(t.data_ptr() for t in work))
        self.lib.top_k(scores.data_ptr(), n, n_items, k, *ptrs)
        return out, ok.bool()


@functools.cache
def load() -> TopK | None:
    """The kernel, built once per process; None where there is no C compiler, the build fails, or
    CDLIB_TOPK_KERNEL=off (torch.topk)."""
    lib = rowkernel.library(
        SOURCE, "CDLIB_TOPK_KERNEL", "rankings take torch.topk (the same ids, slower)"
    )
    return TopK(lib) if lib is not None else None


def _torch(scores: torch.Tensor, k: int) -> torch.Tensor:
    val, idx = scores.topk(k, dim=1)
    return torch.where(torch.isinf(val), -1, idx)


def top_ids(scores: torch.Tensor, k: int) -> torch.Tensor:
    """[B x k]: each row's k highest-scored columns, highest first, -1 in place of a -inf (or +inf)
    score: torch.topk's ids, through the kernel where it is loaded (a float32 CPU tensor) and the
    row's answer is unique, else torch.topk's own (row by row, as torch ranks each row alone)."""
    kernel = load()
    if (
        kernel is None
        or scores.device.type != "cpu"
        or scores.dtype != torch.float32
        or scores.dim() != 2
        or not 0 < k <= scores.shape[1]
    ):
        return _torch(scores, k)
    out, ok = kernel(scores, k)
    redo = (~ok).nonzero()[:, 0]
    if len(redo):
        out[redo] = _torch(scores.index_select(0, redo), k)
    return out
