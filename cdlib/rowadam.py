"""Adam at the cost of the rows a step touches (`RowAdam`), for the sparse steps' row gradients
(`Config.step` "sparse" or "deferred", `sparse`). "sparse": a "lazy" Adam (TensorFlow Addons'
LazyAdam, TorchRec's row-wise optimisers): a row without a gradient keeps its moments and does not
move, other training than Adam's. "deferred": Adam's own steps, those of a row without a gradient
deferred until the row is next read (or the epoch ends) and applied then in closed form
(`RowAdam`, `tail_sums`): the dense step's numbers up to rounding and Adam's eps. Which tables it
defers (`defers`), its warm-up of whole-table steps (`warmup_steps`); on a CPU its row steps run in
compiled kernels (`rowkernel`).
"""

from __future__ import annotations

import math
import weakref

import numpy as np
import torch
from torch.optim.adam import adam

from . import rowkernel
from .sparse import distinct, put_rows

# deferred Adam's first WARMUP / (1 - beta2) steps (1,000) are whole-table steps, Adam's own: while
# sqrt(1 - beta2^t) still moves fast, so does the eps of each deferred step (after them, by at most
# 1.3% over 50 steps, and a deferred row moves as Adam's to 1e-6 where its sqrt(v) is near eps)
WARMUP = 1.0
# Which tables deferred Adam defers (`defers`); the others take Adam's whole-table step, its own
# numbers. Deferring costs a few dozen small operations per table and step (0.45-0.6 ms, one thread)
# plus ~1 us per row it reads; a fused step over the whole table ~0.15 ms + 1 ns an element. Timed
# per step, one thread: 16 rows of 7,947 x 64 deferred 0.49 ms, whole 0.73; of 30,351 x 8 0.59 and
# 0.43; 1,000 rows of 25,584 x 20 1.16 and 0.83; 4,000 rows of 25,584 x 200 10.3 and 19.0.
# (Timed before the row kernels: with them a yelp NeuMF student's epoch is ~30% shorter with every
# table deferred, `defer_all`, README "Deferring every table"; the rule stays, so that the records
# made under it keep their arithmetic.)
DEFER_MIN = 1 << 20  # a table this large is deferred
DEFER_SPARSE = 256  # one of at least DEFER_MIN / 4 elements whose step reads under 1/256 of it too
# a parameter this large takes its whole steps in the kernel (`rowkernel.Kernels.adam_whole`, one
# call each), a smaller one in torch's fused call with the others (a student's MLP layers and biases)
WHOLE_KERNEL_MIN = 4096
SEEN = 8  # look-ups' ids a deferred `RowAdam` keeps with their `distinct` rows until its step


def tail_sums(n: int, beta1: float, beta2: float, tol: float = 1e-18) -> np.ndarray:
    """[2 x n] float64: F(t) = sum_{j>=1} c_{t+j} r^j and E(t) = sum_{j>=1} c_{t+j} d_{t+j} (r/sqrt(beta2))^j
    for t in [0, n), with d_s = sqrt(1 - beta2^s), c_s = d_s / (1 - beta1^s), r = beta1 / sqrt(beta2),
    each series cut where its ratio^j < tol. Adam's steps after step t without gradient (the
    denominator sqrt(v_s / d_s^2) + eps = beta2^(j/2) (sqrt(v_t) + eps d_s beta2^(-j/2)) / d_s, s = t+j):
    a row last stepped at a moves over steps a+1..b by -lr m_a / (sqrt(v_a) + eps') (F(a) - r^k F(b)),
    k = b-a, eps' = eps (E(a) - (r/sqrt(beta2))^k E(b)) / (F(a) - r^k F(b)): the eps of each step
    averaged with the step's weight, exact to first order in eps / sqrt(v)."""
    out = np.empty((2, n))
    for row, ratio in enumerate((beta1 / math.sqrt(beta2), beta1 / beta2)):
        if not 0 <= ratio < 1:
            raise ValueError(f"deferred Adam needs beta1 < beta2, got betas ({beta1}, {beta2})")
        terms = max(1, math.ceil(math.log(tol) / math.log(ratio))) if ratio > 0 else 1
        s = np.arange(1, n + terms + 1, dtype=np.float64)
        d = np.sqrt(1 - beta2**s)
        c = d / (1 - beta1**s) * (d if row else 1.0)
        w = ratio ** np.arange(1, terms + 1, dtype=np.float64)
        out[row] = np.correlate(c, w, mode="valid")[:n]
    return out


def defers(numel: int, read: int) -> bool:
    """Whether deferred Adam defers a table of `numel` elements whose first step read `read` of them
    (`DEFER_MIN`, `DEFER_SPARSE`)."""
    return numel >= DEFER_MIN or (numel >= DEFER_MIN // 4 and read * DEFER_SPARSE <= numel)


def warmup_steps(beta2: float = 0.999) -> int:
    """The deferred Adam's whole-table steps at the start of training (`WARMUP`)."""
    return math.ceil(WARMUP / (1 - beta2))


class RowAdam:
    """Adam (Kingma & Ba 2015, Alg. 1, as torch.optim.Adam's fused kernel computes it) whose step on
    a parameter with a sparse gradient costs the rows in it, with the bias corrections of the
    parameter's step count (the global one in training: every batch looks up every table).
    Parameters with a dense gradient take Adam's step, in the same fused call.

    Lazy (default): only the rows in the gradient are stepped (moments m, v and values); the other
    rows' moments do not decay and they do not move, as if their gradient were absent rather than 0.
    `deferred`: Adam's steps exactly, those of a row without gradient deferred. Each row keeps the
    step a it was last brought to; before the row is read (`sparse.fresh`, by every look-up, ahead of the
    forward pass) its steps a+1..now are applied in closed form: m <- beta1^k m, v <- beta2^k v
    (k = now - a), and the value moves by -lr m_a / (sqrt(v_a) + eps') (F(a) - r^k F(now))
    (`tail_sums`), eps' the steps' eps averaged: torch's Adam up to rounding where sqrt(v) >> eps,
    and to first order in eps / sqrt(v) (a row whose sqrt(v) is near eps moves a little
    differently). The first `warmup_steps` steps are whole-table steps (`WARMUP`), and so are all
    steps of a table too small to gain from deferring (`defers`), unless `defer_all`. `flush` applies
    every row's deferred steps: the loop calls it at each epoch's end, before validation reads the
    weights. Needs weight_decay = 0 (with it, no row's gradient is 0).

    On a CPU, the deferred row steps and catch-ups run in compiled kernels (`rowkernel`) where they
    build and reproduce torch to the bit: the same numbers as this Python path, at the cost of one
    pass over each row; so do the whole-table steps, free of the subnormal arithmetic that slows
    torch's fused step (`row_kernels`=False: the Python path and torch's step, always).

    `masked`: the rows' update computed over the whole table and written under a mask, every shape
    fixed (no wait of the host on a GPU to count the rows); the same numbers. Deferred and masked:
    whole-table steps throughout (Adam's own).

    The interface the loop uses of an optimiser: `zero_grad`, `step`, `state`, `flush`, and a
    checkpoint's `state_dict` and `load_state_dict`."""

    def __init__(
        self,
        params,
        lr: float,
        weight_decay: float = 0.0,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        masked: bool = False,
        deferred: bool = False,
        row_kernels: bool = True,
        defer_all: bool = False,
    ):
        if deferred and weight_decay:
            raise ValueError(
                f"step='deferred' needs weight_decay=0 (got {weight_decay}): with weight decay every "
                "row has a gradient at every step"
            )
        self.params = list(params)
        self.hyper = dict(lr=lr, beta1=betas[0], beta2=betas[1], eps=eps, weight_decay=weight_decay)
        self.masked, self.deferred = masked, deferred
        self.defer_all = defer_all  # deferred: every table, not only those `defers` names
        self.warmup = warmup_steps(betas[1]) if deferred else 0
        for p in self.params if deferred else []:  # the look-ups bring their rows up to date
            p.deferred_by = weakref.ref(self)
        self.state: dict = {}
        self.clock: dict = {}  # parameter -> Adam steps taken, on the host (deferred)
        self.tails: dict = {}  # device -> F(t) of `tail_sums`, float64, grown as steps are taken
        self.zeros: dict = {}  # parameter -> its whole-table steps' gradient buffer (`_zeros`)
        use = row_kernels and deferred and not masked
        self.kernels = rowkernel.load() if use else None  # (None: the Python path)
        self.kernel_table = None  # (table, settings) of the row kernels (`_kernel_hyper`)
        self.seen: list = []  # (ids, `distinct` of them) since the last step (`_distinct`)

    def state_dict(self) -> dict:
        """Each parameter's state and step count, by its position in `params` (as torch's optimisers
        key theirs), after `flush`: what a checkpoint saves (`checkpoint`). The `tail_sums` table is
        not saved: it is a function of the step count, rebuilt on demand."""
        self._settle()
        at = {id(p): i for i, p in enumerate(self.params)}
        return {
            "state": {at[id(p)]: dict(st) for p, st in self.state.items()},
            "clock": {at[id(p)]: n for p, n in self.clock.items()},
        }

    def load_state_dict(self, saved: dict) -> None:
        """The state `state_dict` gave, on this optimiser's parameters (of the same shapes)."""
        for i, st in saved["state"].items():
            p = self.params[int(i)]
            self.state[p] = {
                k: v.to(p.device, copy=True) if isinstance(v, torch.Tensor) else v
                for k, v in st.items()
            }
        self.clock = {self.params[int(i)]: int(n) for i, n in saved["clock"].items()}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        work = {k: [] for k in ("params", "grads", "exp_avgs", "exp_avg_sqs", "steps", "after")}
        for p in self.params:
            if p.grad is None:
                continue
            st = self.state.get(p)
            if st is None:  # torch.optim.Adam's state, so that either can take over the other's
                st = self.state[p] = {
                    "step": torch.zeros((), dtype=torch.float32, device=p.device),
                    "exp_avg": torch.zeros_like(p),
                    "exp_avg_sq": torch.zeros_like(p),
                }
            if p.grad.is_sparse:
                rowed = self._rows(p, p.grad, st)
                if rowed is None:  # stepped by the row kernel
                    self.clock[p] = self.clock.get(p, 0) + 1
                    continue
                value, m, v, g, after = rowed
                work["after"].append(after)
            else:
                value, m, v, g = p, st["exp_avg"], st["exp_avg_sq"], p.grad
            self.clock[p] = self.clock.get(p, 0) + 1
            if value.numel() >= WHOLE_KERNEL_MIN and self._whole_kernel(value, g, m, v):
                step = float(st["step"].add_(1))  # (as the fused step counts it)
                self.kernels.adam_whole(self._kernel_hyper(0), value, m, v, g, step)
                continue
            for k, x in zip(work, (value, g, m, v, st["step"])):
                work[k].append(x)
        if work["params"]:
            adam(  # adds 1 to each step count
                work["params"],
                work["grads"],
                work["exp_avgs"],
                work["exp_avg_sqs"],
                [],
                work["steps"],
                fused=True,
                amsgrad=False,
                maximize=False,
                **self.hyper,
            )
        for after in work["after"]:
            after()
        self.seen.clear()
        self._settle()

    def _settle(self, only: torch.Tensor | None = None) -> None:
        """Write back the moments of rows `bring` caught up that no step took from it (all tables,
        or `only`'s): before anything else reads the table's moments."""
        for p, st in self.state.items() if only is None else [(only, self.state[only])]:
            brought = st.pop("brought", None)
            if brought is not None:
                rows, new = brought
                for t, n in zip(self._full(p, st)[1:], new[1:]):
                    put_rows(t, rows, n)

    @torch.no_grad()
    def flush(self) -> None:
        """Apply every row's deferred steps (deferred; lazy: nothing to do)."""
        self.seen.clear()
        self._settle()
        for p, st in self.state.items():
            if st.get("pending"):
                self._catch_up(p, st, None, *self._full(p, st))
                st["last"].fill_(self.clock[p])
                st["pending"] = False

    @torch.no_grad()
    def bring(self, p: torch.Tensor, ids: torch.Tensor) -> None:
        """Apply the deferred steps of the rows `ids` of p, in place (`sparse.fresh`): a step reads each
        row as Adam would have left it. The rows' copies (values, m, v) are kept for the step that
        follows, which starts from them instead of gathering them again. A table whose rows are all
        up to date is not written, so a table read twice in one forward pass is not modified
        between the reads."""
        st = self.state.get(p)
        if not st or not st.get("pending"):
            return
        rows = self._distinct(ids.reshape(-1), len(p))[0]
        if self._kernel(p, st):
            hyper, full = self._kernel_hyper(self.clock[p]), self._full(p, st)
            self.kernels.catch_up(hyper, *full, st["last"], rows.contiguous(), self.clock[p])
            return
        if not (st["last"][rows] < self.clock[p]).any():
            return
        self._settle(p)  # (read twice in one forward pass)
        full = self._full(p, st)
        new = [t.index_select(0, rows) for t in full]
        self._catch_up(p, st, rows, *new)  # (the rows up to date stay as they are: k = 0)
        put_rows(full[0], rows, new[0])  # m and v: written by the step (`_settle`)
        st["last"].index_fill_(0, rows, self.clock[p])
        st["brought"] = rows, new

    def _kernel(self, p: torch.Tensor, st: dict) -> bool:
        """Whether the row kernels step and catch up p's rows (`rowkernel.usable`)."""
        return self.kernels is not None and rowkernel.usable(p, st["exp_avg"], st["exp_avg_sq"])

    def _whole_kernel(self, *tensors: torch.Tensor) -> bool:
        """Whether the whole-table kernel (`rowkernel.Kernels.adam_whole`) can take a whole step of
        these tensors (Adam's step of the whole table, in place)."""
        return self.kernels is not None and self.kernels.whole and rowkernel.usable(*tensors)

    def _kernel_hyper(self, now: int) -> rowkernel.Hyper:
        """The row kernels' settings, with their table (`rowkernel.Kernels.table`, built on the CPU
        tails of `_tails`) past step `now`."""
        tails = self._tails(now, torch.device("cpu"))
        have = self.kernel_table
        if have is None or have[0].shape[1] != tails.shape[1]:
            h = self.hyper
            table = self.kernels.table(tails.shape[1], h["beta1"], h["beta2"], tails)
            have = self.kernel_table = table, self.kernels.hyper(h, table)
        return have[1]

    def _zeros(self, p: torch.Tensor) -> torch.Tensor:
        """A zero table of p's rows, kept for its whole-table steps' gradients: zeroed again where
        a step wrote it (`_stepped_whole`) instead of allocated and filled every step."""
        z = self.zeros.get(p)
        if z is None:
            z = self.zeros[p] = torch.zeros(
                len(p), p.numel() // len(p), dtype=p.dtype, device=p.device
            )
        return z

    def _stepped_whole(self, p: torch.Tensor, st: dict, g: torch.Tensor, ids: torch.Tensor) -> None:
        """After a whole-table step: its gradient rows zeroed again (`_zeros`), and every row's last
        step the current one, unless the table is stepped whole for good (`defers`): then no
        look-up reads `last`."""
        g.index_fill_(0, ids, 0)
        if st.get("defer", True):
            st["last"].fill_(self.clock[p])

    def _full(self, p: torch.Tensor, st: dict) -> list[torch.Tensor]:
        return [t.view(len(p), -1) for t in (p, st["exp_avg"], st["exp_avg_sq"])]

    def _tails(self, n: int, device) -> torch.Tensor:
        """F and E (0..n) of `tail_sums` on `device`."""
        have = self.tails.get(device)
        if have is None or have.shape[1] <= n:
            # (a multiple of 64: the row kernels' powers all from torch.pow's vector loop; F and E
            # do not depend on the size)
            size = 64 * math.ceil(max(1024, 2 * n + 1) / 64)
            f = tail_sums(size, self.hyper["beta1"], self.hyper["beta2"])
            have = self.tails[device] = torch.from_numpy(f).to(device)
        return have

    def _catch_up(self, p, st, rows, values, m, v) -> None:
        """Apply to `rows` of p (None: all), whose values, m and v are given [rows x k], Adam's steps
        without gradient from each row's last step up to the parameter's current one, in closed form."""
        h, now = self.hyper, self.clock.get(p, 0)
        last = st["last"] if rows is None else st["last"][rows]
        k = (now - last).to(torch.float64)
        f, e = self._tails(now, p.device)
        r = h["beta1"] / math.sqrt(h["beta2"])
        steps = f[last] - torch.pow(r, k) * f[now]  # sum of the step sizes, `tail_sums`
        eps = h["eps"] * (e[last] - torch.pow(r / math.sqrt(h["beta2"]), k) * e[now])
        eps = torch.where(steps > 0, eps / steps, h["eps"]).to(p.dtype)[:, None]  # 0/0: no step
        moved = (steps * h["lr"]).to(p.dtype)[:, None]
        values.addcdiv_(m * moved, v.sqrt().add_(eps), value=-1)
        m.mul_(torch.pow(h["beta1"], k).to(p.dtype)[:, None])
        v.mul_(torch.pow(h["beta2"], k).to(p.dtype)[:, None])

    def _distinct(self, ids: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`distinct`(ids, n), sorted once for the tables a step looks up at the same ids (a NeuMF
        step's GMF and MLP tables of each side), from their look-ups (`bring`) to the step
        (`_rows`): copies of the ids since the last step, compared by value (the integers of
        `distinct` do not depend on n), at most `SEEN` of them. The same integers as sorting them
        for each table, at a third of a NeuMF step's sorts (5% of its time, one thread)."""
        for known, out in self.seen:
            if len(known) == len(ids) and torch.equal(known, ids):
                return out
        out = distinct(ids, n)
        self.seen = [*self.seen[1 - SEEN :], (ids.clone(), out)]
        return out

    def _rows(self, p: torch.Tensor, grad: torch.Tensor, st: dict):
        """What the fused step updates for a table with a sparse gradient, (values, m, v, g,
        write_back), or None where the row kernel took the step (`_kernel`): copies of the touched
        rows, written back after (few rows touched); the whole
        table in place, the untouched rows' old values written back over it after (most rows
        touched, on a CPU: a pass over the table costs less than gathering most of it); copies of
        the whole table, written back under the touched mask (`masked`: every shape fixed).
        Deferred: the rows' deferred steps applied first; with most rows touched (or `masked`)
        every row's, then Adam's step of the whole table (its untouched rows' gradient 0)."""
        full = self._full(p, st)
        if grad.sparse_dim() != 1:  # sparse in every dimension: as rows
            grad = grad.to_dense().to_sparse(1)
        ids = grad._indices()[0]
        values = grad._values().reshape(len(ids), p.numel() // len(p))
        if self.deferred and "last" not in st:
            st["last"] = torch.zeros(len(p), dtype=torch.long, device=p.device)
            st["pending"] = False  # some row's last step is behind the parameter's
        if self.deferred and not self.masked and "defer" not in st:  # once, on the first rows
            st["defer"] = self.defer_all or defers(
                p.numel(), len(distinct(ids, len(p))[0]) * values.shape[1]
            )
        whole = self.deferred and (self.clock.get(p, 0) < self.warmup or not st.get("defer"))
        if self.masked or 2 * len(ids) >= len(p) or whole:
            if self.deferred:
                g = self._zeros(p).index_add_(0, ids, values)
                self._settle(p)
                if st["pending"]:
                    self._catch_up(p, st, None, *full)
                st["pending"] = False
                return *full, g, lambda: self._stepped_whole(p, st, g, ids)
            g = torch.zeros_like(full[0]).index_add_(0, ids, values)
            touched = torch.zeros(len(p), 1, dtype=torch.bool, device=p.device)
            touched.index_fill_(0, ids, True)
            if self.masked:
                new = [t.clone() for t in full]

                def write_back():
                    for t, n in zip(full, new):
                        t.copy_(torch.where(touched, n, t))

                return *new, g, write_back
            rest = (~touched[:, 0]).nonzero()[:, 0]
            old = [t.index_select(0, rest) for t in full]

            def write_back():
                for t, o in zip(full, old):
                    put_rows(t, rest, o)

            return *full, g, write_back
        rows, where = self._distinct(ids, len(p))
        g = values.new_zeros(len(rows), values.shape[1]).index_add_(0, where, values)
        if self._kernel(p, st):  # Adam's step of the rows, in place (deferred only)
            now = self.clock.get(p, 0)
            step = float(st["step"].add_(1))  # (as the fused step counts it)
            self.kernels.adam_rows(
                self._kernel_hyper(now), *full, st["last"], rows.contiguous(), g, now, step
            )
            st["pending"] = True
            return None
        brought = st.get("brought")
        if brought is not None and torch.equal(brought[0], rows):  # up to date, by the look-up
            new = st.pop("brought")[1]
        else:
            if self.deferred:
                self._settle(p)
            new = [t.index_select(0, rows) for t in full]
            if self.deferred:  # rows no look-up brought up to date (stale ones read stale)
                self._catch_up(p, st, rows, *new)
        if self.deferred:
            st["pending"] = True

        def write_back():
            for t, n in zip(full, new):
                put_rows(t, rows, n)
            if self.deferred:
                st["last"].index_fill_(0, rows, self.clock[p])

        return *new, g, write_back
