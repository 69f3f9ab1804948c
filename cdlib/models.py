"""Backbones of METHOD.md ("Backbones", a [decision]): CDAE and NeuMF, each sized by one argument.

Both share one interface, used by training, sampling and evaluation:
  pair_logits(users, rows, items, x) -> logits of (users[rows], items), with gradient (training);
                                  x = batch_inputs(users), drawn beforehand, or None to draw it here;
  stacked_pair_logits(params, users, rows, items, x)
                                  -> pair_logits of G such models at once, parameters stacked (a group);
  score_all(users)                -> [B x items] logits, no gradient, eval mode;
  score(users, items)             -> [B x K] logits of the given candidate items, no gradient;
  scorer()                        -> score(), for a model that trains no further (a teacher);
  n_params()                      -> number of parameters.
"""

from __future__ import annotations

import scipy.sparse as sp
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import pairkernel, sparse, towerkernel
from .index import UserItems, put_pairs
from .sparse import fresh_on_lookup  # (the constructors' `sparse` argument hides the module)
from .towerkernel import tower_torch


def default_device(device: str | None = None) -> torch.device:
    """CUDA when present, else CPU; `device` overrides."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Recommender(nn.Module):
    size: int

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def batch_inputs(self, users: torch.Tensor, pairs=None) -> torch.Tensor | None:
        """What the model reads of a batch of users besides its parameters, drawn before the forward
        pass (so that a group of models can run one stacked forward pass): None, or CDAE's rows.
        pairs: the users' training (rows, items), where the caller has them already."""
        return None

    def stacked_pair_logits(self, params: dict, users, rows, items, x=None) -> torch.Tensor:
        """pair_logits of G models shaped like this one at once (a group's step): params {name: [G, ...]},
        users [G x B], rows and items [G x P], x [G x ...] or None. Here torch.func.vmap over pair_logits;
        a backbone may give a faster form of the same sums."""
        wrapped = _PairLogits(self)

        def one(p, u, r, i, xx):
            return torch.func.functional_call(
                wrapped, {f"model.{k}": v for k, v in p.items()}, (u, r, i, xx)
            )

        return torch.func.vmap(one, in_dims=(0, 0, 0, 0, None if x is None else 0))(
            params, users, rows, items, x
        )

    def scorer(self, static: bool = False):
        """score(), for a model that trains no further (a CD teacher, asked for soft labels every
        step): a backbone may precompute what does not depend on the items. static: only operations
        whose output shapes are fixed by their inputs' (for `Config.shapes` = "static")."""
        self.eval()
        return self.score

    @torch.no_grad()
    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        was = self.training
        self.eval()
        rows = torch.arange(len(users), device=users.device).repeat_interleave(items.shape[1])
        out = self.pair_logits(users, rows, items.reshape(-1)).view_as(items)
        self.train(was)
        return out


class _PairLogits(nn.Module):
    """A model whose forward is its pair_logits, for torch.func.functional_call."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, users, rows, items, x):
        return self.model.pair_logits(users, rows, items, x)


# a pair's dot product costs about as much as this many columns of a matrix product (2 cores)
PAIRWISE_COST = 8
# scoring K candidates a user one by one beats a product over the distinct items from K x this <= items
CANDIDATE_COST = 32


class CDAE(Recommender):
    """Collaborative Denoising Auto-Encoder (Wu et al., WSDM 2016).

    h_u = sigma(W x~_u + V_u + b),  z_u = W' h_u + b',
    x~_u: the user's training row with dropout q (kept entries scaled by 1/(1-q)).
    The model keeps the training matrix (CSR) to build its inputs.
    """

    def __init__(
        self, train: sp.csr_matrix, hidden: int, corruption: float = 0.5, sparse: bool = False
    ):
        super().__init__()
        n_users, n_items = train.shape
        self.size, self.corruption, self.sparse = hidden, corruption, sparse
        encoder = nn.Linear(n_items, hidden)
        if sparse:  # W item-major, [I x H], so that a user's items are rows of it
            self.encoder_items = nn.Parameter(encoder.weight.detach().T.contiguous())
            self.encoder_bias = nn.Parameter(encoder.bias.detach())
        else:
            self.encoder = encoder
        self.user_embedding = nn.Embedding(n_users, hidden, sparse=sparse)
        if sparse:
            fresh_on_lookup(self.user_embedding)
        self.decoder = nn.Linear(hidden, n_items)
        nn.init.normal_(self.user_embedding.weight, std=0.01)
        self.train_matrix = train
        self.inputs = UserItems(train)

    def _apply(self, fn, *args, **kwargs):  # keep the input rows on the model's device
        out = super()._apply(fn, *args, **kwargs)
        self.inputs = UserItems(self.train_matrix, self.decoder.weight.device)
        return out

    def rows(self, users: torch.Tensor, pairs=None):
        """x~_u: the training rows, in training mode with dropout q applied to the non-zero entries
        only (the zeros stay zero either way, so this equals dropout on the dense row). Dense
        [B x I], every entry written, 0 where dropped: no data-dependent shape, so no wait on a GPU.
        Sparse (`self.sparse`): (rows, items, values) of the entries, the dropped ones left out (or,
        for `padded_pairs`, kept at value 0 with the padding); the same random draws either way."""
        pairs = self.inputs.pairs(users) if pairs is None else pairs
        drop = self.training and self.corruption > 0
        keep = torch.rand(len(pairs[0]), device=users.device) >= self.corruption if drop else None
        if not self.sparse:
            if keep is None:
                return self.inputs.dense(users, pairs=pairs)
            x = torch.zeros(len(users), self.inputs.shape[1], device=users.device)
            return put_pairs(x, pairs, keep.float() * (1.0 / (1.0 - self.corruption)))
        rows, items, *valid = pairs
        scale = 1.0 / (1.0 - self.corruption) if drop else 1.0
        if valid:  # fixed shapes: every slot stays, the padding and the dropped ones weigh 0
            on = valid[0] if keep is None else valid[0] & keep
            return rows, items, on.float() * scale
        if keep is not None:
            rows, items = rows[keep], items[keep]
        return rows, items, torch.full((len(rows),), scale, device=users.device)

    def batch_inputs(self, users: torch.Tensor, pairs=None):
        return self.rows(users, pairs)

    def hidden(self, users: torch.Tensor, x=None) -> torch.Tensor:
        """h_u = sigma(W x~_u + V_u + b); sparse: W x~_u as a sum of the user's rows of W^T."""
        x = self.rows(users) if x is None else x
        if not self.sparse:
            return torch.sigmoid(self.encoder(x) + self.user_embedding(users))
        rows, items, values = x
        wx = sparse.embedding_bag(self.encoder_items, items, rows, len(users), values)
        return torch.sigmoid(wx + self.encoder_bias + self.user_embedding(users))

    def forward(self, users: torch.Tensor, x=None) -> torch.Tensor:
        return self.decoder(self.hidden(users, x))

    def pair_logits(self, users, rows, items, x=None):
        """z_ui at the pairs; sparse: the decoder's rows of the pairs' items only, each gradient a
        sparse tensor of the rows used: z_ui = h_u . W'_i + b'_i pair by pair where the pairs are
        few, else h W'_D^T + b'_D over the batch's distinct items D as one matrix product (on ml-1m
        a batch's 52k pairs cover 3.7k items: 10x faster than pair by pair)."""
        if not self.sparse:
            return self(users, x)[rows, items]
        h = self.hidden(users, x)
        few = len(items) * PAIRWISE_COST < len(users) * self.inputs.shape[1]
        if few or users.device.type != "cpu":  # (the distinct items' count would wait on a GPU)
            w = sparse.embedding(self.decoder.weight, items)
            return (h.index_select(0, rows) * w).sum(-1) + sparse.take(self.decoder.bias, items)
        distinct, where = sparse.distinct(items, self.inputs.shape[1])
        z = F.linear(
            h,
            sparse.embedding(self.decoder.weight, distinct),
            sparse.take(self.decoder.bias, distinct),
        )
        return z[rows, where]

    def stacked_pair_logits(self, params, users, rows, items, x):
        """The group's forward pass as batched matrix products, h = sigma(x~ W^T + b + V_u), z = h W'^T + b',
        then each member's pairs (1.4x faster than vmap over pair_logits: 0.24 against 0.33 s per epoch
        for 5 CD students on ml-1m, 2 cores)."""
        emb = params["user_embedding.weight"]
        v = emb.gather(1, users[..., None].expand(*users.shape, emb.shape[-1]))
        h = torch.sigmoid(
            torch.baddbmm(
                params["encoder.bias"][:, None], x, params["encoder.weight"].transpose(1, 2)
            )
            + v
        )
        z = torch.baddbmm(
            params["decoder.bias"][:, None], h, params["decoder.weight"].transpose(1, 2)
        )
        return z.flatten(1).gather(1, rows * z.shape[2] + items)

    @torch.no_grad()
    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """z_u on the candidates only: the decoder restricted to the batch's distinct items, the same
        dot products over the hidden units as score_all without the other items' columns."""
        was = self.training
        self.eval()
        out = self._decode(self.hidden(users), items)
        self.train(was)
        return out

    def _decode(self, hidden: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        if self.sparse and items.shape[1] * CANDIDATE_COST <= self.inputs.shape[1]:
            # few candidates a user among many items (a sparse-step model): each user's own decoder
            # rows, 64 users at a time so that they stay in the cache (yelp's sampled validation,
            # 100 candidates among 20k items: 27 against 133 ms a batch of 1024 users over the
            # distinct items, one thread; among ml-100k's 1.7k items the product is the faster, 12
            # against 22 ms, hence the rule)
            out = torch.empty(items.shape, device=hidden.device)
            for s in range(0, len(items), 64):
                it = items[s : s + 64]
                w = F.embedding(it, self.decoder.weight)
                out[s : s + 64] = torch.baddbmm(
                    self.decoder.bias[it][:, :, None], w, hidden[s : s + 64, :, None]
                ).squeeze(-1)
            return out
        distinct, where = torch.unique(items, return_inverse=True)
        return F.linear(hidden, self.decoder.weight[distinct], self.decoder.bias[distinct]).gather(
            1, where
        )

    @torch.no_grad()
    def scorer(self, batch_size: int = 1024, static: bool = False):
        """score() with every user's hidden layer h_u computed once ([users x H], a frozen model's
        are fixed): a batch of candidates then costs only their decoder rows. Equal to score() up to
        float rounding (the encoder's GEMM runs on other batch sizes). static: each pair's own decoder
        row, a batched product of fixed shape, instead of the batch's distinct items (whose number
        a GPU would have to report to the host)."""
        self.eval()
        users = torch.arange(self.inputs.shape[0], device=self.decoder.weight.device)
        hidden = torch.cat(
            [self.hidden(users[s : s + batch_size]) for s in range(0, len(users), batch_size)]
        )
        if static:
            return torch.no_grad()(
                lambda u, items: (
                    torch.bmm(self.decoder.weight[items], hidden[u][:, :, None]).squeeze(-1)
                    + self.decoder.bias[items]
                )
            )
        return torch.no_grad()(lambda u, items: self._decode(hidden[u], items))

    @torch.no_grad()
    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        was = self.training
        self.eval()
        out = self(users)
        self.train(was)
        return out


# NeuMF's tower and prediction layer: None, PyTorch's nn.Linear defaults (weights and biases
# U(+-1/sqrt(fan_in))); "ncf", NCF's Keras code's (He et al. 2017, NeuMF.py: Dense layers
# Glorot-uniform, the prediction layer LeCun-uniform, every bias 0). A d = 8 tower's last layer has 4
# units; with PyTorch's random biases some seeds start with few of them live and lose them all in
# their first epoch (README Known issues)
MLP_INITS = (None, "ncf")

# [pairs x e] floats a chunk of `NeuMF.score` (2 MiB; chunks of 4 and 8 MiB were slower), and the
# pairs a chunk starts at a multiple of: each pair keeps its place in the BLAS's row blocks, as in
# the whole batch (chunks of whole users rounded their last rows otherwise). A d = 64 teacher's
# sampled validation is 2.2-3.3x faster on ml-1m, citeulike-t and yelp, a d = 8 student's 1.2-1.3x,
# with the same scores (tools/scoring_probe.py: results/bench/scoring_cpu.json)
SCORE_ELEMS = 1 << 19
PAIR_ALIGN = 4096


class NeuMF(Recommender):
    """Neural Matrix Factorisation (He et al., WWW 2017) without pre-training.

    GMF of dimension d beside an MLP tower on embeddings of size e = mlp_scale x d,
    [2e -> e -> e/2] (ReLU), fused by a linear layer: z_ui = h^T [p_u * q_i ; MLP([p'_u ; q'_i])] + b.
    mlp_scale = 1 is this project's tower ([2d -> d -> d/2]); 2 puts d units in the last layer under
    wider ones, as NCF's tower at d predictive factors has ([4d -> 2d -> d]). Embeddings start from
    N(0, 0.01) as NCF's; the tower and h from PyTorch's defaults or NCF's (`init`, `MLP_INITS`)."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int,
        mlp_scale: int = 1,
        sparse: bool = False,
        init: str | None = None,
    ):
        super().__init__()
        self.size, self.mlp_scale, self.sparse = dim, mlp_scale, sparse
        e = dim * mlp_scale
        half = max(e // 2, 1)
        # sparse: each table's gradient is the rows the batch looked up (for `rowadam.RowAdam`)
        self.gmf_user = nn.Embedding(n_users, dim, sparse=sparse)
        self.gmf_item = nn.Embedding(n_items, dim, sparse=sparse)
        self.mlp_user = nn.Embedding(n_users, e, sparse=sparse)
        self.mlp_item = nn.Embedding(n_items, e, sparse=sparse)
        self.layer1, self.layer2 = nn.Linear(2 * e, e), nn.Linear(e, half)
        self.out = nn.Linear(dim + half, 1)
        for emb in (self.gmf_user, self.gmf_item, self.mlp_user, self.mlp_item):
            if sparse:
                fresh_on_lookup(emb)
            nn.init.normal_(emb.weight, std=0.01)
        if init == "ncf":  # NCF's Keras layers (`MLP_INITS`), drawn after the embeddings
            for layer in (self.layer1, self.layer2):
                nn.init.xavier_uniform_(layer.weight)
            nn.init.kaiming_uniform_(self.out.weight, nonlinearity="linear")  # LeCun-uniform
            for layer in (self.layer1, self.layer2, self.out):
                nn.init.zeros_(layer.bias)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.pair_logits(users, torch.arange(len(users), device=users.device), items)

    def pair_logits(self, users, rows, items, x=None):
        # user embeddings are looked up once per batch user, then indexed by row: the backward
        # pass scatters into B rows instead of sorting one index per pair
        if self.sparse and users.device.type == "cpu" and torch.is_grad_enabled():
            ext = pairkernel.load()  # (one autograd node: the same numbers, `pairkernel`)
            if ext is not None:
                return pairkernel.pair_logits(self, users, rows, items, ext)
        return self._pairs(*self._user_parts(users), rows, items)

    def _user_parts(self, users):
        """What a batch's pairs share per user: GMF's p_u * h_GMF [B x d] and the first MLP layer's
        user half W_u p'_u + b [B x e]."""
        d, e = self.size, self.size * self.mlp_scale
        gmf = self.gmf_user(users) * self.out.weight[0, :d]
        return gmf, self.mlp_user(users) @ self.layer1.weight[:, :e].T + self.layer1.bias

    def _pairs(self, gmf_user, user_half, rows, items, item_half=None):
        """z_ui of the pairs (batch user rows, items) from `_user_parts`, and the pairs' first-layer
        item half W_i q'_i where the caller has it (`score`), else computed here per pair."""
        # (index_select, whose backward is an index_add, not indexing, whose backward sorts)
        gmf = gmf_user.index_select(0, rows) * self.gmf_item(items)
        if item_half is None:
            item_half = self.mlp_item(items) @ self.layer1.weight[:, self.size * self.mlp_scale :].T
        h = F.relu(user_half.index_select(0, rows) + item_half)
        h = F.relu(self.layer2(h))
        return gmf.sum(-1) + h @ self.out.weight[0, self.size :] + self.out.bias

    @torch.no_grad()
    def score(
        self, users: torch.Tensor, items: torch.Tensor, max_elems: int = SCORE_ELEMS
    ) -> torch.Tensor:
        """pair_logits on each user's candidates [B x C] (the sampled protocol), in chunks of pairs
        whose [pairs x e] tensors hold at most `max_elems` floats (`PAIR_ALIGN` pairs at least), so
        that they stay in the cache: the user parts computed for the whole batch, the first layer's
        item half W_i q'_i once an item (`_item_half`) where the batch has more pairs than the
        dataset has items, then looked up per pair. The same products as pair_logits on the whole
        batch, bit for bit with one thread, as the backlog's workers train (tests/test_models.py;
        the recorded models' metrics recompute exactly), and faster (`SCORE_ELEMS`). With more
        threads the BLAS may split a chunk's rows between them otherwise than the whole batch's:
        exact on the AMD EPYC of the records, 1-4 ulp apart in a few scores on an Intel Xeon's MKL."""
        n, c = items.shape
        gmf_user, user_half = self._user_parts(users)
        every = self._item_half() if n * c > self.mlp_item.num_embeddings else None
        pairs = items.reshape(-1)
        rows = torch.arange(n, device=users.device).repeat_interleave(c)
        step = max(1, max_elems // (self.size * self.mlp_scale) // PAIR_ALIGN) * PAIR_ALIGN
        out = torch.empty(len(pairs), device=items.device)
        for s in range(0, len(pairs), step):
            p, r = pairs[s : s + step], rows[s : s + step]
            half = None if every is None else every.index_select(0, p)
            out[s : s + step] = self._pairs(gmf_user, user_half, r, p, half)
        return out.view(n, c)

    def _item_half(self) -> torch.Tensor:
        """The first MLP layer's item half of every item, W_i q'_i [I x e]."""
        return self.mlp_item.weight @ self.layer1.weight[:, self.size * self.mlp_scale :].T

    def stacked_pair_logits(self, params, users, rows, items, x=None):
        """pair_logits of the group with each look-up one index_select over the members' stacked tables and
        each layer a batched matrix product: 5 NeuMF teachers (d = 64) on ml-1m train an epoch in 23.5 s
        against 33 s through vmap (2 cores; 3.5 s for one alone: their tensors outgrow the caches)."""
        d, e = self.size, self.size * self.mlp_scale

        def take(
            table, idx
        ):  # table [G, N, k], idx [G, M] -> [G, M, k], as one index_select (backward: index_add)
            g, n, k = table.shape
            flat = (idx + torch.arange(g, device=idx.device)[:, None] * n).reshape(-1)
            return table.reshape(g * n, k).index_select(0, flat).view(g, -1, k)

        w1, w_out = params["layer1.weight"], params["out.weight"][:, 0]
        gmf = take(take(params["gmf_user.weight"], users) * w_out[:, None, :d], rows) * take(
            params["gmf_item.weight"], items
        )
        a = torch.baddbmm(
            params["layer1.bias"][:, None],
            take(params["mlp_user.weight"], users),
            w1[:, :, :e].transpose(1, 2),
        )
        h = F.relu(
            take(a, rows)
            + torch.bmm(take(params["mlp_item.weight"], items), w1[:, :, e:].transpose(1, 2))
        )
        h = F.relu(
            torch.baddbmm(
                params["layer2.bias"][:, None], h, params["layer2.weight"].transpose(1, 2)
            )
        )
        return gmf.sum(-1) + torch.bmm(h, w_out[:, d:, None]).squeeze(-1) + params["out.bias"]

    @torch.no_grad()
    def tower_units(self, users: torch.Tensor, items: torch.Tensor) -> int:
        """How many units of the MLP tower's last layer are positive on at least one (user, item)
        pair: 0 means every ReLU there is off, so the tower adds a constant and the model ranks by
        GMF alone."""
        h = F.relu(self.layer1(torch.cat([self.mlp_user(users), self.mlp_item(items)], 1)))
        return int((F.relu(self.layer2(h)) > 0).any(0).sum())

    def _all_items_parts(self, users: torch.Tensor):
        """What scoring every item shares: GMF's logits [B x I], and the first MLP layer split into
        its user and item halves (W [p;q] = W_u p + W_i q): a = W_u p'_u + b [B x e], c = W_i q'_i [I x e]."""
        gmf_user, a = self._user_parts(users)
        return gmf_user @ self.gmf_item.weight.T, a, self._item_half()

    @torch.no_grad()
    def score_all(self, users: torch.Tensor, max_elems: int = 1 << 22) -> torch.Tensor:
        """All items for a batch of users, item-major: the [B x I x e] work is one add, ReLU and
        matmul, done in place in one reused buffer of `max_elems` floats (16 MiB: 3.8x faster than
        fresh [B x I x d] tensors of 64 MiB on citeulike-t, d = 8, one thread)."""
        gmf, a, c = self._all_items_parts(users)
        n_items, e = c.shape
        out = torch.empty(len(users), n_items, device=gmf.device)
        step = max(1, min(len(users), max_elems // (n_items * e)))
        buf = torch.empty(step, n_items, e, device=gmf.device)
        for s in range(0, len(users), step):
            h = buf[: min(step, len(users) - s)]
            torch.add(a[s : s + step, None, :], c[None], out=h).relu_()  # [b, I, e]
            g = h @ self.layer2.weight.T
            g += self.layer2.bias
            torch.matmul(g.relu_(), self.out.weight[0, self.size :], out=out[s : s + step])
        return out.add_(gmf).add_(self.out.bias)

    @torch.no_grad()
    def score_all_feature_major(
        self, users: torch.Tensor, max_elems: int = 1 << 20
    ) -> torch.Tensor:
        """score_all with the tower feature-major: each layer one [units x pairs] product over the
        (user, item) pairs, where score_all's [pairs x e/2] products leave the vector units idle
        (e/2 = 4 outputs at d = 8). The same function summed in another order, so equal to score_all
        up to rounding, and several times faster at d = 8 (one thread, a 4 MiB buffer:
        results/bench/refresh_tower_cpu.json). CD's refresh uses it with refresh_tower="feature-major".
        Torch scores the users in chunks of `max_elems` [e x users x I] floats (`tower_torch`); the
        compiled kernel (`towerkernel`), where it gives those chunks' bits, all at once."""
        gmf, a, c = self._all_items_parts(users)
        (n_items, e), a, c = c.shape, a.T.contiguous(), c.T.contiguous()  # [e x B], [e x I]
        step = max(1, min(len(users), max_elems // (n_items * e)))
        w2, b2, w = self.layer2.weight, self.layer2.bias, self.out.weight[0, self.size :]
        kernel = towerkernel.load()
        chunks = {step, len(users) % step or step}
        if kernel is not None and kernel.takes(e, len(w2), chunks, n_items, a, c, w2, gmf):
            return kernel.scores(a, c, w2, b2, w, gmf, self.out.bias)
        out = torch.empty(len(users), n_items, device=gmf.device)
        buf = torch.empty(e, step, n_items, device=gmf.device)
        for s in range(0, len(users), step):
            out[s : s + step] = tower_torch(a[:, s : s + step], c, w2, b2, w, buf)
        return out.add_(gmf).add_(self.out.bias)


def build(
    backbone: str,
    train: sp.csr_matrix,
    size: int,
    corruption: float = 0.5,
    device: str | torch.device | None = None,
    mlp_scale: int = 1,
    sparse: bool = False,
    mlp_init: str | None = None,
) -> Recommender:
    """A CDAE (size = hidden units H) or NeuMF (size = dimension d, tower width `mlp_scale`, its
    layers initialised as `mlp_init` says, `MLP_INITS`) for a training matrix; `sparse`: its
    look-ups give sparse row gradients (`Config.step` "sparse" or "deferred")."""
    if backbone == "cdae":
        model = CDAE(train, size, corruption, sparse)
    elif backbone == "neumf":
        model = NeuMF(train.shape[0], train.shape[1], size, mlp_scale, sparse, mlp_init)
    else:
        raise ValueError(f"backbone must be 'cdae' or 'neumf', got {backbone!r}")
    return model.to(default_device(device) if not isinstance(device, torch.device) else device)
