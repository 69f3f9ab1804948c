"""Distillation methods as units of one small interface, so that the training loop never branches
on the method and the configuration never lists a method's parameters (adding one, DE-RRD say, is a
new class here and an entry in METHODS: its FIELDS become fields of `config.Config`).

A method says, for a batch of users, which items it adds to the student's forward pass
(`batch_items`), what loss term it adds on the student's logits of those items (`loss`), and what
it refreshes at the start of each epoch (`start_epoch`), and what of it a checkpoint saves
(`state`, `load_state`). L = L_CF + the method's term. It also declares its parameters with their
defaults (`FIELDS`), fills in the defaults that depend on others and checks their values
(`canonical`), and says whether it needs a teacher (`TEACHER`).

- NoKD: nothing (teachers, and students without distillation).
- RD:   Ranking Distillation (Tang & Wang, KDD 2018; METHOD.md "RD"), as the authors' code runs it.
- CD:   Collaborative Distillation (METHOD.md "The CD loss", "rank-aware sampling", "guided training").
"""

from __future__ import annotations

import math
import time

import torch

from . import losses, metrics
from .index import UserItems
from .samplers import (
    GUIDES,
    SAMPLINGS,
    CDSampler,
    masked_scores,
    teacher_top_missing,
    uniform_items,
)

SWITCH_EPOCH = 50  # CD's hybrid guide: the teacher for the first 50 epochs [decision]
RD_RANKS = ("sampled", "exact")
REFRESH_TOWERS = (None, "feature-major")


class NoKD:
    """No distillation term: the CF loss alone."""

    FIELDS: dict = {}  # the method's parameters and their defaults: fields of config.Config
    TEACHER = False  # whether a run of the method has a teacher

    @staticmethod
    def canonical(d: dict) -> None:
        """Fill in `d`'s defaults of the method's fields that depend on others; raise ValueError
        naming a field whose value is not allowed."""

    def __init__(self, cfg, positives: UserItems, teacher=None):
        self.refresh_seconds = []

    def start_epoch(self, epoch: int, student) -> None:
        pass

    def state(self) -> dict:
        """What the method carries from one epoch to the next that `start_epoch` does not rebuild
        from the epoch and the student: a checkpoint saves it (`checkpoint`)."""
        return {"refresh_seconds": list(self.refresh_seconds)}

    def load_state(self, state: dict, device) -> None:
        """The state `state` gave (read on the CPU), its tensors moved to `device`."""
        self.refresh_seconds[:] = state["refresh_seconds"]  # (in place: CD shares its sampler's)

    def batch_items(
        self, users: torch.Tensor, generator: torch.Generator, pairs=None
    ) -> torch.Tensor | None:
        """[B x k] items the method adds to the batch (pairs: the users' training pairs, padded or not)."""
        return None

    def loss(self, users: torch.Tensor, items: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("NoKD adds no items, so it has no loss term")


class RD(NoKD):
    """L_RD on the teacher's top `rd_k` missing items, weighted by position and, after `rd_warmup`
    epochs, by the student's ranking discrepancy (losses.rd_weights). The student's rank of each
    item is, with rd_rank="sampled", estimated in every step from `rd_samples` uniform missing items
    added to the batch (Tang & Wang's code), or, with rd_rank="exact", counted over all items once
    per epoch."""

    # defaults of the authors' code (distill_caser.py)
    FIELDS = {
        "lambda_rd": 1.0,  # teach_alpha
        "rd_k": 10,  # K
        "rd_lambda": 1.0,  # lamda
        "rd_mu": 0.1,  # mu
        "rd_warmup": 10,  # dynamic_start_epoch: position weights only for the first 10 epochs
        "rd_renorm": False,  # _weight_renormalize
        "rd_rank": "sampled",  # sampled: estimated from rd_samples items per step | exact: all items
        "rd_samples": 100,
    }  # num_dynamic_samples
    TEACHER = True

    @staticmethod
    def canonical(d: dict) -> None:
        if d["rd_rank"] not in RD_RANKS:
            raise ValueError(f"rd_rank must be one of {RD_RANKS}, got {d['rd_rank']!r}")
        if d["rd_rank"] == "exact":
            d["rd_samples"] = None

    def __init__(self, cfg, positives: UserItems, teacher):
        self.cfg, self.positives = cfg, positives
        self.top = teacher_top_missing(teacher, positives, cfg.rd_k)
        if (self.top < 0).any():
            raise ValueError(f"rd_k={cfg.rd_k} exceeds the missing items of some user")
        self.dynamic, self.ranks, self.refresh_seconds = False, None, []

    def start_epoch(self, epoch: int, student) -> None:
        self.dynamic = epoch >= self.cfg.rd_warmup
        if self.dynamic and self.cfg.rd_rank == "exact":
            t = time.perf_counter()
            self.ranks = student_ranks(student, self.positives, self.top)
            self.refresh_seconds.append(time.perf_counter() - t)

    def batch_items(self, users, generator, pairs=None):
        top = self.top[users]
        if self.dynamic and self.cfg.rd_rank == "sampled":
            return torch.cat(
                [top, uniform_items(self.positives, users, self.cfg.rd_samples, generator, pairs)],
                1,
            )
        return top

    def loss(self, users, items, logits):
        c, k = self.cfg, self.cfg.rd_k
        rank = None
        if self.dynamic:
            rank = (
                losses.rd_sampled_rank(
                    logits[:, :k].detach(), logits[:, k:].detach(), self.positives.shape[1]
                )
                if c.rd_rank == "sampled"
                else self.ranks[users]
            )
        w = losses.rd_weights(k, c.rd_lambda, rank, c.rd_mu, c.rd_renorm, logits.device)
        return c.lambda_rd * losses.rd_loss(logits[:, :k], w)


class CD(NoKD):
    """lambda * L_KD on `n_distill` missing items per user chosen by the CD sampler; soft labels
    from the teacher (METHOD.md "The CD loss", "Probabilistic rank-aware sampling", "guided training")."""

    FIELDS = {
        "lambda_kd": 0.5,
        "temperature": 1.0,
        "mu": 10.0,
        "n_distill": 10,
        "max_rank": None,  # None: ceil(10 mu)
        "sampling": "rank",  # rank | uniform | topk
        "guide": "teacher",  # teacher | student | hybrid
        "refresh_every": 1,  # epochs between two refreshes of the student's ranking
        "switch_epoch": None,  # hybrid: the epoch the student takes over; None: SWITCH_EPOCH
        # how a NeuMF student ranks in a refresh: None, score_all's item-major tower (the first runs)
        # | "feature-major", the same scores up to rounding, faster (`models.NeuMF`)
        "refresh_tower": None,
    }
    TEACHER = True

    @staticmethod
    def canonical(d: dict) -> None:
        if d["sampling"] not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {d['sampling']!r}")
        if d["guide"] not in GUIDES:
            raise ValueError(f"guide must be one of {GUIDES}, got {d['guide']!r}")
        d["max_rank"] = d["max_rank"] or int(math.ceil(10 * d["mu"]))
        if d["guide"] != "hybrid":
            d["switch_epoch"] = None
        elif d["switch_epoch"] is None:
            d["switch_epoch"] = SWITCH_EPOCH
        if d["guide"] == "teacher" or d["sampling"] == "uniform":
            d["refresh_every"] = None
        if d["refresh_tower"] not in REFRESH_TOWERS:
            raise ValueError(
                f"refresh_tower must be one of {REFRESH_TOWERS}, got {d['refresh_tower']!r}"
            )
        if d["backbone"] != "neumf" or d["refresh_every"] is None:  # no NeuMF student refreshes
            d["refresh_tower"] = None

    def __init__(self, cfg, positives: UserItems, teacher):
        self.cfg, self.teacher = cfg, teacher
        self.sampler = CDSampler(
            positives,
            teacher,
            cfg.n_distill,
            cfg.mu,
            cfg.sampling,
            cfg.guide,
            cfg.max_rank,
            cfg.refresh_every or 1,
            cfg.switch_epoch or 0,
            cfg.refresh_tower,
        )
        self.refresh_seconds = self.sampler.refresh_seconds
        self.teacher_score = teacher.scorer(static=cfg.shapes == "static")

    def start_epoch(self, epoch, student):
        self.sampler.start_epoch(epoch, student)

    def state(self):
        """With the guide's ranking in use, which a student guide refreshes every few epochs."""
        return {
            **super().state(),
            "candidates": self.sampler.candidates,
            "source": self.sampler.source,
        }

    def load_state(self, state, device):
        super().load_state(state, device)
        cand = state["candidates"]
        self.sampler.candidates = None if cand is None else cand.to(device)
        self.sampler.source = state["source"]

    def batch_items(self, users, generator, pairs=None):
        return self.sampler.sample(users, generator, pairs)

    def loss(self, users, items, logits):
        return self.cfg.lambda_kd * losses.cd_loss(
            logits, self.teacher_score(users, items), self.cfg.temperature
        )


METHODS = {"none": NoKD, "rd": RD, "cd": CD}


def build(cfg, positives: UserItems, teacher=None) -> NoKD:
    """The method unit of a (canonical) run configuration."""
    return METHODS[cfg.method](cfg, positives, teacher)


@torch.no_grad()
def student_ranks(
    model, positives: UserItems, items: torch.Tensor, batch_size: int = 256
) -> torch.Tensor:
    """The student's rank (1 = top) of each of `items` [users x k] among each user's missing items."""
    out = torch.empty_like(items)
    for s in range(0, len(items), batch_size):
        u = torch.arange(s, min(s + batch_size, len(items)), device=items.device)
        sc = masked_scores(model.score_all(u), positives, u)
        target = sc.gather(1, items[u])
        out[u] = 1 + metrics.count_above(sc, target)
    return out
