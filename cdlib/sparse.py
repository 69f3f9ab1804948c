"""A step at the cost of the rows it touches (`Config.step` "sparse" or "deferred"): look-ups whose
gradient is the looked-up rows only (`take`, `embedding`, `embedding_bag`), which bring their rows up
to date first where a deferred Adam trains the table (`fresh`), and the row operations that Adam
(`rowadam.RowAdam`) is made of (`distinct`, `put_rows`). A dense step pays for every parameter of a
table to update the few rows a batch used: 11.8M parameters of a CDAE teacher on citeulike-t for a
batch's 5,000 pairs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

STEPS = ("dense", "sparse", "deferred")
SPARSE_STEPS = ("sparse", "deferred")  # the steps whose look-ups give row gradients
# `put_rows` writes a CPU table's rows through numpy from this many elements on: torch's index_copy_
# copies element by element, numpy's row assignment row by row (one thread: 4,000 rows of 200 in 94
# against 297 us, 600 of 64 in 8 against 16; 600 of 8 in 7.2 against 5.5)
PUT_NUMPY_MIN = 8192


class _Take(torch.autograd.Function):
    @staticmethod
    def forward(ctx, table, ids):
        ctx.shape = table.shape
        ctx.save_for_backward(ids)
        return table.index_select(0, ids)

    @staticmethod
    def backward(ctx, grad):
        (ids,) = ctx.saved_tensors
        return torch.sparse_coo_tensor(ids[None], grad, ctx.shape, check_invariants=False), None


def fresh(table: torch.Tensor, ids: torch.Tensor) -> None:
    """Bring the rows `ids` of a table that a deferred `rowadam.RowAdam` trains up to date before they are
    read (their deferred steps applied): every look-up of the sparse step calls it first."""
    ref = getattr(table, "deferred_by", None)
    opt = ref() if ref is not None else None
    if opt is not None:
        opt.bring(table, ids)


def take(table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """table[ids] along the first dimension (a 1-D table too: a bias), its gradient a sparse tensor
    of the `ids` rows (uncoalesced: a row used twice appears twice, `rowadam.RowAdam` sums them)."""
    fresh(table, ids)
    return _Take.apply(table, ids)


def embedding(table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """table[ids] (rows of a 2-D table), its gradient a sparse tensor of the `ids` rows."""
    fresh(table, ids)
    return F.embedding(ids, table, sparse=True)


def fresh_on_lookup(module: torch.nn.Embedding) -> torch.nn.Embedding:
    """An nn.Embedding whose every call brings the rows it reads up to date first (`fresh`)."""
    module.register_forward_pre_hook(lambda m, args: fresh(m.weight, args[0]))
    return module


def embedding_bag(
    table: torch.Tensor, ids: torch.Tensor, bags: torch.Tensor, n_bags: int, weights: torch.Tensor
) -> torch.Tensor:
    """out[b] = sum_{j: bags[j] = b} weights[j] table[ids[j]], [n_bags x k]; `bags` sorted. The
    sparse input x_u W^T of an auto-encoder, at the cost of the user's items: its gradient is the
    `ids` rows of `table` (sparse)."""
    fresh(table, ids)
    offsets = torch.searchsorted(bags, torch.arange(n_bags, device=bags.device))
    return F.embedding_bag(ids, table, offsets, mode="sum", per_sample_weights=weights, sparse=True)


def distinct(ids: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.unique(ids, return_inverse=True) for ids in [0, n): for many ids, by a mask of n entries
    instead of a sort, O(n + len(ids)) (a ml-1m batch's 52k items among 3.7k: 0.25 against 0.68 ms,
    one thread); for few, by the sort, O(len(ids) log len(ids)) (a NeuMF step's 16 users among
    yelp's 30k: 5.6 against 54 us; 640 items among 20k: 9 against 41 us). The same integers."""
    if 4 * len(ids) <= n:
        return torch.unique(ids, sorted=True, return_inverse=True)
    mask = torch.zeros(n, dtype=torch.bool, device=ids.device)
    mask[ids] = True
    rows = mask.nonzero()[:, 0]
    return rows, (torch.cumsum(mask, 0) - 1)[ids]


def put_rows(table: torch.Tensor, rows: torch.Tensor, new: torch.Tensor) -> None:
    """table[rows] = new, in place, for distinct `rows`: table.index_copy_(0, rows, new), the same
    values, through numpy on a CPU for a large write (`PUT_NUMPY_MIN`). It does not count as an
    in-place operation of autograd's: the tables it writes are not saved for any backward pass."""
    if table.device.type == "cpu" and new.numel() >= PUT_NUMPY_MIN and table.is_contiguous():
        table.detach().numpy()[rows.numpy()] = new.detach().numpy()
    else:
        table.index_copy_(0, rows, new)
