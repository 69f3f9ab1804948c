"""The training pairs on the device, indexed by user: what the loop, the samplers, the models and
the metrics look up in every step (`UserItems`), and `put_pairs`, which writes values at pairs."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch


def put_pairs(out: torch.Tensor, pairs, values) -> torch.Tensor:
    """out[rows, items] = values (in place) for `UserItems.pairs`; for `padded_pairs` (rows, items, valid)
    the padding, whose slots may repeat a real pair, adds 0 to a zero tensor instead."""
    rows, items, *valid = pairs
    if valid:
        out.index_put_(
            (rows, items), torch.where(valid[0], values, 0).to(out.dtype), accumulate=True
        )
    else:
        out[rows, items] = values
    return out


class UserItems:
    """A user x item CSR matrix as torch tensors on a device, for vectorised look-ups of the
    items of a batch of users (no per-user Python loop, no trip through scipy)."""

    def __init__(self, matrix: sp.csr_matrix, device="cpu"):
        m = matrix.tocsr()
        m.sort_indices()
        self.shape = m.shape
        self.indptr = torch.from_numpy(m.indptr.astype(np.int64)).to(device)
        self.indices = torch.from_numpy(m.indices.astype(np.int64)).to(device)

    def pairs(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, items): every item of every user, rows indexing into `users`, items sorted per row."""
        start, count = self.indptr[users], self.indptr[users + 1] - self.indptr[users]
        rows = torch.repeat_interleave(torch.arange(len(users), device=users.device), count)
        shift = start - (
            torch.cumsum(count, 0) - count
        )  # position in `indices` minus position in output
        return rows, self.indices[torch.arange(len(rows), device=users.device) + shift[rows]]

    def padded_pairs(
        self, users: torch.Tensor, capacity: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`pairs(users)` in `capacity` slots (at least their number): (rows, items, valid), the surplus
        slots valid=False (row B-1, any item). Every shape is fixed by len(users) and capacity, so
        nothing waits on a GPU for the number of pairs."""
        count = self.indptr[users + 1] - self.indptr[users]
        ends = torch.cumsum(count, 0)
        slot = torch.arange(capacity, device=users.device)
        rows = torch.searchsorted(ends, slot, right=True).clamp_max(len(users) - 1)
        valid = slot < ends[-1]
        at = self.indptr[users][rows] + slot - (ends - count)[rows]
        return rows, self.indices[torch.where(valid, at, 0)], valid

    def dense(self, users: torch.Tensor, dtype=torch.float32, pairs=None) -> torch.Tensor:
        """The rows of `users` as a dense [B x items] 0/1 matrix (`pairs`: their `pairs` or
        `padded_pairs`, if known)."""
        out = torch.zeros(len(users), self.shape[1], dtype=dtype, device=users.device)
        return put_pairs(out, self.pairs(users) if pairs is None else pairs, 1)

    def contains(
        self, rows: torch.Tensor, items: torch.Tensor, users: torch.Tensor
    ) -> torch.Tensor:
        """Whether (users[rows], items) is an entry, for flat rows/items, by binary search."""
        keys_rows, keys_items = self.pairs(users)
        n = self.shape[1]
        keys = keys_rows * n + keys_items  # sorted: rows ascending, items sorted per row
        q = rows * n + items
        if len(keys) == 0:
            return torch.zeros_like(q, dtype=torch.bool)
        idx = torch.searchsorted(keys, q).clamp_max(len(keys) - 1)
        return keys[idx] == q
