"""The members of a group and the batches of one step: for each run, its users' training pairs with
their CF negatives (L_CF, METHOD.md), the method's items, and the model's inputs; sized by the
batch (`batches`, dynamic shapes) or padded to sizes planned per epoch (`static_batches`,
`plan_capacities`), so that a GPU step never waits on the host."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import methods, models
from .config import Config
from .samplers import group_negatives, inverse_missing


@dataclass
class Member:
    """One run of a group: its own model, method, random streams (`gen` for sampling, `rng` the global
    state its model's dropout draws from), learning curve and early stopping."""

    cfg: Config
    model: models.Recommender
    method: methods.NoKD
    gen: torch.Generator
    rng: torch.Tensor
    curve: list = dataclasses.field(default_factory=list)
    seconds: list = dataclasses.field(default_factory=list)
    best: float = -1.0
    best_epoch: int = 0
    best_state: dict | None = None
    since: int = 0
    done: bool = False


def rng_state(dev) -> torch.Tensor:
    return torch.cuda.get_rng_state(dev) if dev.type == "cuda" else torch.get_rng_state()


def set_rng_state(state, dev) -> None:
    torch.cuda.set_rng_state(state, dev) if dev.type == "cuda" else torch.set_rng_state(state)


def dynamic_batches(members: list[Member], positives, users: list[torch.Tensor]) -> list[dict]:
    """Each member's step: its users' positives, uniform negatives and the method's items, with their
    labels, and the model's inputs (CDAE's corrupted rows). The look-ups are done once for the whole
    group (`group_negatives`); every random number comes from the member's own streams (`gen`, and
    `rng` for its model's dropout) in the order its run alone draws it, so a member's batch is the one it
    would have alone."""
    dev, everyone = users[0].device, torch.cat(users) if len(users) > 1 else users[0]
    pairs = positives.pairs(everyone)  # shared by the negatives and the inputs
    negatives = group_negatives(
        positives, users, [m.cfg.n_neg for m in members], [m.gen for m in members], pairs=pairs
    )
    sizes = (
        [len(pairs[0])]
        if len(users) == 1
        else torch.stack(  # each member's number of positives
            [
                c.sum()
                for c in torch.split(
                    positives.indptr[everyone + 1] - positives.indptr[everyone],
                    [len(u) for u in users],
                )
            ]
        ).tolist()
    )
    start = 0
    out = []
    for m, u, (neg_rows, neg_items), pos_rows, pos_items in zip(
        members, users, negatives, torch.split(pairs[0], sizes), torch.split(pairs[1], sizes)
    ):
        pos_rows = pos_rows - start if start else pos_rows
        start += len(u)
        labels = torch.cat(
            [torch.ones(len(pos_rows), device=dev), torch.zeros(len(neg_rows), device=dev)]
        )
        out.append(
            member_batch(
                m,
                u,
                [pos_rows, neg_rows],
                [pos_items, neg_items],
                labels,
                None,
                m.method.batch_items(u, m.gen),
                (pos_rows, pos_items),
            )
        )
    return out


def member_batch(m: Member, u, rows: list, items: list, labels, weight, extra, pairs) -> dict:
    """A member's step: its CF pairs (`rows`, `items`, `labels`, `weight` or None), then the method's
    `extra` items, and its model's inputs for the users' training `pairs`, drawn from the member's own
    global random state (`rng`)."""
    dev = u.device
    if extra is not None:
        rows = [*rows, torch.arange(len(u), device=dev).repeat_interleave(extra.shape[1])]
        items = [*items, extra.reshape(-1)]
    set_rng_state(m.rng, dev)
    x = m.model.batch_inputs(u, pairs)
    m.rng = rng_state(dev)
    return {
        "users": u,
        "rows": torch.cat(rows),
        "items": torch.cat(items),
        "x": x,
        "labels": labels,
        "weight": weight,
        "extra": extra,
    }


def static_batches(
    members: list[Member], positives, users: list[torch.Tensor], capacities: list[int]
) -> list[dict]:
    """`_batches` with fixed shapes (Config.shapes = "static"): each member's positives in its
    `plan_capacities` slots (`padded_pairs`), `n_neg` negatives per slot by `inverse_missing`, the padding
    weighted 0 in the loss. Every shape follows from len(users), the capacities and the configuration,
    so the step never waits on the device; each member draws from its own streams, so its batch is the
    one it would have alone. The CF pairs of every member are then padded to the group's longest, so
    that a member's shapes follow the group's and not each member's own (a compiled step would
    otherwise meet a new combination of shapes, and compile again, at almost every step)."""
    dev = users[0].device
    width = max(c * (1 + m.cfg.n_neg) for m, c in zip(members, capacities))
    out = []
    for m, u, capacity in zip(members, users, capacities):
        pairs = positives.padded_pairs(u, capacity)
        rows, items, valid = pairs
        neg_rows = rows.repeat_interleave(m.cfg.n_neg)
        neg_items = inverse_missing(positives, u, neg_rows, pairs, m.gen)
        fill = rows.new_zeros(width - capacity * (1 + m.cfg.n_neg))
        labels = torch.cat(
            [torch.ones(capacity, device=dev), torch.zeros(width - capacity, device=dev)]
        )
        weight = torch.cat([valid, valid.repeat_interleave(m.cfg.n_neg), fill.bool()]).float()
        out.append(
            member_batch(
                m,
                u,
                [rows, neg_rows, fill],
                [items, neg_items, fill],
                labels,
                weight,
                m.method.batch_items(u, m.gen, pairs),
                pairs,
            )
        )
    return out


def plan_capacities(perms: list[torch.Tensor], positives, batch_size: int) -> list[list[int]]:
    """Static shapes: per step, each member's positive slots, its users' positives rounded up to one
    of 8 sizes per doubling (at most 1/8 padding, few distinct shapes; a member's own, so that its
    draws are those it makes alone; `_static_batches` pads the group to its longest). One read of the
    epoch's permutations: the epoch's only wait on the device before its end."""
    degree = positives.indptr[1:] - positives.indptr[:-1]
    n = len(perms[0])
    steps = -(-n // batch_size)
    per_step = F.pad(torch.stack([degree[p] for p in perms]), (0, steps * batch_size - n))
    counts = per_step.view(len(perms), steps, batch_size).sum(-1).T.tolist()

    def bucket(k: int) -> int:
        q = 1 << max(0, k.bit_length() - 4)
        return max(1, -(-k // q) * q)

    return [[bucket(k) for k in step] for step in counts]
