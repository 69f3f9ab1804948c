"""Training: teachers with the CF loss alone, students with method none, rd or cd.

`run(config)` is the entry point: it returns the run's record, training only when no record of
that exact configuration exists in `results/runs/` (or when `refresh=True`). A student's teacher
is itself a run; the weights of every run are cached outside git ($CDLIB_CACHE/weights) so that
every student of one dataset, backbone and teacher seed reuses one teacher, and a student's record
names the SHA-256 of the teacher weights it was distilled from. A teacher retrained because its
weights are missing never overwrites its record (`load_teacher`).

Early stopping on validation NDCG@10 (sampled protocol, the validation's own negatives), patience
`patience` epochs, never before `min_epochs` nor while the run is on its initial plateau, under the
cap `epochs`; the test metrics are those of the best validation epoch (METHOD.md "Evaluation
protocol", "A fair comparison").
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import data, losses, methods, metrics, models, runs
from .samplers import GUIDES, SAMPLINGS, group_negatives, inverse_missing

METHODS = tuple(methods.METHODS)
# backbone defaults [decision]: learning rate and users per batch (the tuning stage may choose others)
BACKBONE_DEFAULTS = {"cdae": {"lr": 3e-3, "batch_size": 64}, "neumf": {"lr": 1e-3, "batch_size": 16}}
TEACHER_SIZE = {"cdae": 200, "neumf": 64}      # METHOD.md "Backbones"
STUDENT_SIZES = {"cdae": (5, 10, 20, 50), "neumf": (4, 8, 16)}
SWITCH_EPOCH = 50                              # hybrid guide: teacher for the first 50 epochs [decision]
RD_RANKS = ("sampled", "exact")
SHAPES = ("dynamic", "static")
VALID_NEGATIVES = ("own", "test")


@dataclass(frozen=True)
class Config:
    """Every parameter of one run. None means "the documented default" (see `canonical`)."""
    dataset: str = "ml-1m"            # one of data.DATASETS, or the path of an interactions file
    backbone: str = "cdae"            # cdae | neumf
    size: int | None = None           # CDAE hidden units H / NeuMF dimension d; None: teacher size
    method: str = "none"              # none (teacher or plain student) | rd | cd
    seed: int = 0
    # data
    data_seed: int = 0                # split and sampled negatives
    subset_users: int | None = None   # a seeded subset of users (smoke runs)
    valid_negatives: str = "own"      # own: validation has its own 99 negatives | test: the test's (old protocol)
    # optimisation [decision]; a run ends by early stopping, not by its cap (METHOD.md "A fair comparison")
    epochs: int = 1000                # the cap
    patience: int = 30                # epochs without a better validation NDCG@10 before stopping
    min_epochs: int = 50              # early stopping may not end a run before this many epochs
    plateau: float | None = 1.05      # ... nor while its best validation NDCG@10 is at most this x that of the
                                      # most-popular ranking (the initial plateau); None: no such rule
    lr: float | None = None
    batch_size: int | None = None     # users per step
    shapes: str | None = None         # dynamic: each step's tensors sized by its batch, negatives drawn by
                                      # rejection | static: padded to sizes planned per epoch, negatives by
                                      # inverse transform, no wait on a GPU inside an epoch (same
                                      # distributions, other draws) | None: static on CUDA, else dynamic
    weight_decay: float = 0.0
    n_neg: int = 4                    # uniform negatives per positive in L_CF
    corruption: float = 0.5           # CDAE input dropout q
    mlp_scale: int | None = None      # NeuMF tower width: embeddings of mlp_scale x d (None: 1)
    # teacher (students of method rd / cd)
    teacher_size: int | None = None
    teacher_seed: int | None = None   # None: the student's own seed (a seed is a whole replicate)
    teacher_lr: float | None = None   # None: the backbone's default learning rate
    # CD (METHOD.md "The CD loss", "Probabilistic rank-aware sampling", "guided training")
    lambda_kd: float = 0.5
    temperature: float = 1.0
    mu: float = 10.0
    n_distill: int = 10
    max_rank: int | None = None       # None: ceil(10 mu)
    sampling: str = "rank"            # rank | uniform | topk
    guide: str = "teacher"            # teacher | student | hybrid
    refresh_every: int = 1
    switch_epoch: int | None = None   # hybrid; None: SWITCH_EPOCH
    # RD (Tang & Wang 2018), defaults of the authors' code (distill_caser.py)
    lambda_rd: float = 1.0            # teach_alpha
    rd_k: int = 10                    # K
    rd_lambda: float = 1.0            # lamda
    rd_mu: float = 0.1                # mu
    rd_warmup: int = 10               # dynamic_start_epoch: position weights only for the first 10 epochs
    rd_renorm: bool = False           # _weight_renormalize
    rd_rank: str = "sampled"          # sampled: estimated from rd_samples items per step | exact: all items, per epoch
    rd_samples: int = 100             # num_dynamic_samples
    device: str | None = None         # None: cuda if present, else cpu
    data_sha256: str | None = None    # a file dataset's SHA-256 (filled in by `canonical`)

    def canonical(self) -> "Config":
        """Defaults filled in, parameters a method does not use set to None: the key of a run.
        Bad values raise ValueError naming the parameter, before anything trains."""
        if self.backbone not in TEACHER_SIZE:
            raise ValueError(f"backbone must be one of {list(TEACHER_SIZE)}, got {self.backbone!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.min_epochs > self.epochs:
            raise ValueError(f"the epoch cap (epochs={self.epochs}) is below min_epochs={self.min_epochs}")
        if self.valid_negatives not in VALID_NEGATIVES:
            raise ValueError(f"valid_negatives must be one of {VALID_NEGATIVES}, got {self.valid_negatives!r}")
        if self.method == "cd" and self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {self.sampling!r}")
        if self.method == "cd" and self.guide not in GUIDES:
            raise ValueError(f"guide must be one of {GUIDES}, got {self.guide!r}")
        if self.method == "rd" and self.rd_rank not in RD_RANKS:
            raise ValueError(f"rd_rank must be one of {RD_RANKS}, got {self.rd_rank!r}")
        if self.shapes is not None and self.shapes not in SHAPES:
            raise ValueError(f"shapes must be one of {SHAPES}, got {self.shapes!r}")
        d = dataclasses.asdict(self)
        tsize = TEACHER_SIZE[self.backbone]
        d["size"] = self.size or tsize
        for k, v in BACKBONE_DEFAULTS[self.backbone].items():
            d[k] = d[k] if d[k] is not None else v
        if self.backbone != "cdae":
            d["corruption"] = None
        d["mlp_scale"] = (self.mlp_scale or 1) if self.backbone == "neumf" else None
        d["device"] = models.default_device(self.device).type
        d["shapes"] = self.shapes or ("static" if d["device"] == "cuda" else "dynamic")
        d["data_sha256"] = file_sha256(self.dataset) if data.is_file_dataset(self.dataset) else None
        cd_fields = ("lambda_kd", "temperature", "mu", "n_distill", "max_rank", "sampling", "guide",
                     "refresh_every", "switch_epoch")
        rd_fields = ("lambda_rd", "rd_k", "rd_lambda", "rd_mu", "rd_warmup", "rd_renorm", "rd_rank", "rd_samples")
        if self.method == "cd":
            d["max_rank"] = self.max_rank or int(np.ceil(10 * self.mu))
            if self.guide == "hybrid":
                d["switch_epoch"] = self.switch_epoch if self.switch_epoch is not None else SWITCH_EPOCH
            else:
                d["switch_epoch"] = None
            if self.guide == "teacher" or self.sampling == "uniform":
                d["refresh_every"] = None
        if self.method == "rd" and self.rd_rank == "exact":
            d["rd_samples"] = None
        if self.method != "cd":
            d.update({k: None for k in cd_fields})
        if self.method != "rd":
            d.update({k: None for k in rd_fields})
        if self.method == "none":
            d["teacher_size"] = d["teacher_seed"] = d["teacher_lr"] = None
        else:
            d["teacher_size"] = self.teacher_size or tsize
            d["teacher_seed"] = self.seed if self.teacher_seed is None else self.teacher_seed
            d["teacher_lr"] = self.teacher_lr or BACKBONE_DEFAULTS[self.backbone]["lr"]
        return Config(**d)

    def key(self) -> str:
        """The run's key: the hash of its canonical configuration, a file dataset named by its bytes
        (its SHA-256), not its path, so a record is reused for the same data and only for it."""
        d = dataclasses.asdict(self.canonical())
        if d["data_sha256"]:
            d["dataset"] = "file"
        if d["shapes"] == "dynamic":    # runs recorded before the parameter existed keep their keys
            del d["shapes"]
        return runs.config_key(d)

    def teacher(self) -> "Config":
        """The configuration of this student's teacher."""
        c = self.canonical()
        return Config(dataset=c.dataset, backbone=c.backbone, size=c.teacher_size, method="none",
                      seed=c.teacher_seed, data_seed=c.data_seed, subset_users=c.subset_users,
                      valid_negatives=c.valid_negatives, epochs=c.epochs, patience=c.patience,
                      min_epochs=c.min_epochs, plateau=c.plateau, lr=c.teacher_lr, weight_decay=c.weight_decay,
                      n_neg=c.n_neg, corruption=self.corruption, mlp_scale=c.mlp_scale, shapes=c.shapes,
                      device=self.device).canonical()


_SHA: dict = {}


def file_sha256(path: str) -> str:
    """SHA-256 of a dataset file, memoised per (path, size, modification time)."""
    p = Path(path).expanduser()
    if not p.is_file():
        data.load(path)               # raises the DataError that says what is wrong with the name
    st = p.stat()
    k = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if k not in _SHA:
        _SHA[k] = data.sha256(p)
    return _SHA[k]


_DATASETS: dict = {}


def dataset_for(cfg: Config) -> data.Dataset:
    """The run's dataset (memoised per process: a notebook loads each dataset once)."""
    key = (cfg.dataset, cfg.data_sha256, cfg.data_seed, cfg.subset_users)
    if key not in _DATASETS:
        ds = data.load(cfg.dataset, seed=cfg.data_seed)
        if cfg.data_sha256 and ds.meta["sha256"].get(Path(cfg.dataset).name) != cfg.data_sha256:
            raise data.DataError(f"{cfg.dataset}: changed while in use (SHA-256 no longer {cfg.data_sha256})")
        _DATASETS[key] = ds.subset(cfg.subset_users, seed=cfg.data_seed) if cfg.subset_users else ds
    return _DATASETS[key]


def weights_path(cfg: Config) -> Path:
    """Where the weights of a run are cached: $CDLIB_CACHE/weights/<key>.pt (outside git)."""
    return data.cache_dir() / "weights" / f"{cfg.key()}.pt"


def build_model(cfg: Config, ds: data.Dataset, device=None) -> models.Recommender:
    """An untrained model of a (canonical) configuration for a dataset."""
    return models.build(cfg.backbone, ds.train, cfg.size, cfg.corruption or 0.0, device or cfg.device,
                        cfg.mlp_scale or 1)


def fit(cfg: Config, ds: data.Dataset, teacher=None, progress: bool = True, desc: str = "",
        track_test: bool = False) -> dict:
    """Train one model of `cfg` (canonical) on `ds`: a group of one (`fit_group`)."""
    return fit_group([cfg], ds, [teacher], progress, desc, track_test)[0]


# What the members of a group share: the data, and what stacks their parameters and optimiser state
STACKED = ("dataset", "data_sha256", "data_seed", "subset_users", "valid_negatives", "backbone", "size",
           "mlp_scale", "corruption", "batch_size", "shapes", "lr", "weight_decay", "device")


def check_group(cfgs) -> None:
    """Refuse, before training, a group whose members cannot be trained in one stacked step."""
    if not cfgs:
        raise ValueError("a group needs at least one run")
    first = dataclasses.asdict(cfgs[0])
    for c in cfgs[1:]:
        d = dataclasses.asdict(c)
        bad = [f"{k}: {first[k]!r} vs {d[k]!r}" for k in STACKED if d[k] != first[k]]
        if bad:
            raise ValueError(f"runs {cfgs[0].key()} and {c.key()} cannot share a group ({'; '.join(bad)})")


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


def _rng_state(dev) -> torch.Tensor:
    return torch.cuda.get_rng_state(dev) if dev.type == "cuda" else torch.get_rng_state()


def _set_rng_state(state, dev) -> None:
    torch.cuda.set_rng_state(state, dev) if dev.type == "cuda" else torch.set_rng_state(state)


def _batches(members: list[Member], positives, users: list[torch.Tensor]) -> list[dict]:
    """Each member's step: its users' positives, uniform negatives and the method's items, with their
    labels, and the model's inputs (CDAE's corrupted rows). The look-ups are done once for the whole
    group (`group_negatives`); every random number comes from the member's own streams (`gen`, and
    `rng` for its model's dropout) in the order its run alone draws it, so a member's batch is the one it
    would have alone."""
    dev, everyone = users[0].device, torch.cat(users) if len(users) > 1 else users[0]
    pairs = positives.pairs(everyone)                # shared by the negatives and the inputs
    negatives = group_negatives(positives, users, [m.cfg.n_neg for m in members], [m.gen for m in members],
                                pairs=pairs)
    sizes = [len(pairs[0])] if len(users) == 1 else torch.stack(     # each member's number of positives
        [c.sum() for c in torch.split(positives.indptr[everyone + 1] - positives.indptr[everyone],
                                      [len(u) for u in users])]).tolist()
    start = 0
    out = []
    for m, u, (neg_rows, neg_items), pos_rows, pos_items in zip(members, users, negatives,
                                                                 torch.split(pairs[0], sizes), torch.split(pairs[1], sizes)):
        pos_rows = pos_rows - start if start else pos_rows
        start += len(u)
        labels = torch.cat([torch.ones(len(pos_rows), device=dev), torch.zeros(len(neg_rows), device=dev)])
        out.append(_member_batch(m, u, [pos_rows, neg_rows], [pos_items, neg_items], labels, None,
                                 m.method.batch_items(u, m.gen), (pos_rows, pos_items)))
    return out


def _member_batch(m: Member, u, rows: list, items: list, labels, weight, extra, pairs) -> dict:
    """A member's step: its CF pairs (`rows`, `items`, `labels`, `weight` or None), then the method's
    `extra` items, and its model's inputs for the users' training `pairs`, drawn from the member's own
    global random state (`rng`)."""
    dev = u.device
    if extra is not None:
        rows = [*rows, torch.arange(len(u), device=dev).repeat_interleave(extra.shape[1])]
        items = [*items, extra.reshape(-1)]
    _set_rng_state(m.rng, dev)
    x = m.model.batch_inputs(u, pairs)
    m.rng = _rng_state(dev)
    return {"users": u, "rows": torch.cat(rows), "items": torch.cat(items), "x": x, "labels": labels,
            "weight": weight, "extra": extra}


def _static_batches(members: list[Member], positives, users: list[torch.Tensor], capacities: list[int]) -> list[dict]:
    """`_batches` with fixed shapes (Config.shapes = "static"): each member's positives in its
    `capacities` slots (`padded_pairs`), `n_neg` negatives per slot by `inverse_missing`, the padding
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
        labels = torch.cat([torch.ones(capacity, device=dev), torch.zeros(width - capacity, device=dev)])
        weight = torch.cat([valid, valid.repeat_interleave(m.cfg.n_neg), fill.bool()]).float()
        out.append(_member_batch(m, u, [rows, neg_rows, fill], [items, neg_items, fill], labels, weight,
                                 m.method.batch_items(u, m.gen, pairs), pairs))
    return out


def _capacities(perms: list[torch.Tensor], positives, batch_size: int) -> list[list[int]]:
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


def compile_mode() -> str | None:
    """CDLIB_COMPILE: a torch.compile mode ("default", "reduce-overhead": CUDA graphs, ...) for the
    step's forward pass and loss, or unset for eager. Whole-graph (fullgraph): a host wait in the step
    fails to compile instead of falling back."""
    return os.environ.get("CDLIB_COMPILE") or None


class Stack:
    """The trainable state of a group's active members: for one member its model's own parameters;
    for several, one tensor per parameter with a leading member dimension, of which each member's
    parameters are views, trained by one stacked forward pass (the model's `stacked_pair_logits`). One
    Adam over it is each member's Adam: its update is element-wise."""

    def __init__(self, members: list[Member], old: "Stack | None" = None):
        self.members = members
        cfg, model = members[0].cfg, members[0].model
        names = [n for n, _ in model.named_parameters()]
        saved = old.adam_state() if old is not None else {}
        if len(members) == 1:
            self.params = None
            self.opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
        else:
            self.params = {n: torch.stack([m.model.get_parameter(n).detach() for m in members]).requires_grad_()
                           for n in names}
            for g, m in enumerate(members):
                for n in names:
                    m.model.get_parameter(n).data = self.params[n].data[g]
            self.opt = torch.optim.Adam(self.params.values(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
        mode = compile_mode()
        self._loss = torch.compile(self._eager_loss, mode=mode, fullgraph=True) if mode else self._eager_loss
        for n in names if saved else []:
            states = [saved[(id(m), n)] for m in members]
            if self.params is None:
                self.opt.state[model.get_parameter(n)] = states[0]
            else:
                self.opt.state[self.params[n]] = {
                    "step": states[0]["step"],
                    **{k: torch.stack([s[k] for s in states]) for k in ("exp_avg", "exp_avg_sq")}}

    def adam_state(self) -> dict:
        """Each member's Adam state per parameter name."""
        out = {}
        for g, m in enumerate(self.members):
            for n, p in m.model.named_parameters():
                st = self.opt.state.get(p if self.params is None else self.params[n])
                if st:
                    out[(id(m), n)] = {"step": st["step"].clone(),
                                       **{k: (st[k] if self.params is None else st[k][g]).clone()
                                          for k in ("exp_avg", "exp_avg_sq")}}
        return out

    def loss(self, batches: list[dict]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The group's loss, the sum of its members' L_CF + method term, and each member's (detached).
        Under CDLIB_COMPILE=<mode> (static shapes only) a torch.compile'd function: a few graphs, as
        Dynamo leaves a shape symbolic once it has changed (reduce-overhead records a CUDA graph per
        distinct shape, of which `_capacities` makes few)."""
        return self._loss(batches)

    def _eager_loss(self, batches: list[dict]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        terms = []
        for m, b, z in zip(self.members, batches, self.logits(batches)):
            n_cf = len(b["labels"])
            term = losses.cf_loss(z[:n_cf], b["labels"], b["weight"])
            if b["extra"] is not None:
                term = term + m.method.loss(b["users"], b["extra"], z[n_cf:].view_as(b["extra"]))
            terms.append(term)
        return sum(terms[1:], terms[0]), [t.detach() for t in terms]

    def logits(self, batches: list[dict]) -> list[torch.Tensor]:
        """Each member's logits of its (users[rows], items) pairs, with gradient."""
        if self.params is None:
            b = batches[0]
            return [self.members[0].model.pair_logits(b["users"], b["rows"], b["items"], b["x"])]
        n = [len(b["rows"]) for b in batches]
        pad = max(n)

        def padded(key):
            return torch.stack([torch.cat([b[key], b[key].new_zeros(pad - len(b[key]))]) for b in batches])
        x = None if batches[0]["x"] is None else torch.stack([b["x"] for b in batches])
        z = self.members[0].model.stacked_pair_logits(self.params, torch.stack([b["users"] for b in batches]),
                                                      padded("rows"), padded("items"), x)
        return [z[g, :k] for g, k in enumerate(n)]


def fit_group(cfgs: list[Config], ds: data.Dataset, teachers=None, progress: bool = True, desc: str = "",
              track_test: bool = False) -> list[dict]:
    """Train the runs `cfgs` (canonical, one dataset, stackable: `check_group`) together, each step
    one stacked forward and backward pass over the active members; returns, per run, {model, curve,
    best_epoch, timing}. Each run ends when its validation NDCG@10 has not improved for `patience`
    epochs, once it has run `min_epochs` epochs and left the initial plateau (its best validation
    NDCG@10 above `plateau` x that of the most-popular ranking), or at its cap `epochs`; a run that
    ends keeps its best state and leaves the stack. A member's losses and random streams are its
    own, so a run trained alone (a group of one) is the same run it always was. track_test adds each
    epoch's test HR@10 and NDCG@10 (sampled) to the curve, for analyses of the protocol only: nothing
    is chosen on them, and they draw no random numbers, so the run is the same."""
    check_group(cfgs)
    teachers = list(teachers) if teachers is not None else [None] * len(cfgs)
    dev = models.default_device(cfgs[0].device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"run {cfgs[0].key()} asks for device 'cuda', and this machine has no CUDA device")
    if compile_mode() and cfgs[0].shapes != "static":
        raise ValueError(f"CDLIB_COMPILE={compile_mode()} needs static shapes (Config.shapes='static'), "
                         f"not {cfgs[0].shapes!r}")
    if compile_mode():      # one process trains many models and shapes, each a graph of one function
        for name in ("recompile_limit", "accumulated_recompile_limit", "cache_size_limit"):
            if hasattr(torch._dynamo.config, name):     # the names of PyTorch 2.6+, then of earlier ones
                setattr(torch._dynamo.config, name, 1024)
    if os.environ.get("CDLIB_DETERMINISTIC", "") not in ("", "0"):    # GPU runs that a later window can repeat
        torch.use_deterministic_algorithms(True, warn_only=True)
    positives = data.UserItems(ds.train, dev)
    members = []
    for cfg, teacher in zip(cfgs, teachers):
        torch.manual_seed(cfg.seed)
        gen = torch.Generator(device=dev).manual_seed(cfg.seed)
        model = build_model(cfg, ds, dev)
        members.append(Member(cfg, model, methods.build(cfg, positives, teacher), gen, _rng_state(dev)))
    popularity = metrics.evaluate(metrics.Popularity(ds, dev), ds, "valid", "sampled",
                                  valid_negatives=cfgs[0].valid_negatives)["NDCG@10"]
    stack = Stack(members)
    c0 = cfgs[0]
    bar = tqdm(range(max(c.epochs for c in cfgs)), disable=not progress, leave=False, mininterval=2.0,
               desc=desc or f"{Path(c0.dataset).name} {c0.backbone}-{c0.size} "
                            f"{'/'.join(dict.fromkeys(c.method for c in cfgs))}" + (f" x{len(cfgs)}" if len(cfgs) > 1 else ""))
    for epoch in bar:
        active = stack.members
        t0 = time.perf_counter()
        totals = [torch.zeros((), device=dev) for _ in active]
        perms = []
        for m in active:
            m.method.start_epoch(epoch, m.model)
            m.model.train()
            perms.append(torch.randperm(ds.n_users, generator=m.gen, device=dev))
        n_batches = 0
        capacities = _capacities(perms, positives, c0.batch_size) if c0.shapes == "static" else None
        debug = os.environ.get("CDLIB_SYNC_DEBUG") if dev.type == "cuda" else None
        if debug:   # "warn" or "error" at every wait of the host on the GPU inside the epoch's steps
            torch.cuda.set_sync_debug_mode(debug)
        for step, s in enumerate(range(0, ds.n_users, c0.batch_size)):
            users = [perm[s:s + c0.batch_size] for perm in perms]
            batches = (_batches(active, positives, users) if capacities is None
                       else _static_batches(active, positives, users, capacities[step]))
            loss, terms = stack.loss(batches)
            for total, term in zip(totals, terms):
                total += term
            stack.opt.zero_grad(set_to_none=True)
            loss.backward()
            stack.opt.step()
            n_batches += 1
        if debug:
            torch.cuda.set_sync_debug_mode(0)
        seconds = time.perf_counter() - t0
        for m, total in zip(active, totals):
            _end_epoch(m, epoch, total.item() / n_batches, seconds, ds, popularity, track_test)
        if any(m.done for m in active):
            if len(active) > 1:     # every member leaves the old stack, its parameters in their own storage
                for m in active:
                    for p in m.model.parameters():
                        p.data = p.data.clone()
            left = [m for m in active if not m.done]
            if not left:
                break
            stack = Stack(left, stack)
        lead = max(stack.members, key=lambda m: m.best)
        bar.set_postfix(loss=f"{lead.curve[-1]['loss']:.4f}", ndcg10=f"{lead.best:.4f}",   # drawn at most every 2 s
                        **({"runs": len(stack.members)} if len(members) > 1 else {}), refresh=False)
    out = []
    for m in members:
        m.model.load_state_dict(m.best_state)
        m.model.eval()
        timing = {"train_seconds": float(sum(m.seconds)), "epoch_seconds_mean": float(np.mean(m.seconds))}
        if m.method.refresh_seconds:
            timing["refresh_seconds_mean"] = float(np.mean(m.method.refresh_seconds))
        out.append({"model": m.model, "curve": m.curve, "best_epoch": m.best_epoch, "timing": timing,
                    "popularity_valid_NDCG@10": popularity})
    return out


def _end_epoch(m: Member, epoch: int, mean_loss: float, seconds: float, ds, popularity: float,
               track_test: bool) -> None:
    """A member's validation, learning curve, best state and early stopping after an epoch."""
    cfg = m.cfg
    val = metrics.evaluate(m.model, ds, "valid", "sampled", valid_negatives=cfg.valid_negatives)
    m.seconds.append(seconds)
    m.curve.append({"epoch": epoch + 1, "loss": mean_loss, "valid_HR@10": val["HR@10"],
                    "valid_NDCG@10": val["NDCG@10"], "seconds": seconds})
    if track_test:
        test = metrics.evaluate(m.model, ds, "test", "sampled")
        m.curve[-1].update({"test_HR@10": test["HR@10"], "test_NDCG@10": test["NDCG@10"]})
    floor = -1.0 if cfg.plateau is None else cfg.plateau * popularity
    if val["NDCG@10"] > m.best:
        m.best, m.best_epoch, m.since = val["NDCG@10"], epoch + 1, 0
        m.best_state = {k: v.detach().clone() for k, v in m.model.state_dict().items()}
    else:
        m.since += 1
        if m.since >= cfg.patience and epoch + 1 >= cfg.min_epochs and m.best > floor:
            m.done = True
    if epoch + 1 >= cfg.epochs:
        m.done = True


class NotRecorded(LookupError):
    """A run was asked for without training (train=False) and no record of it exists."""


class DeadlineReached(NotRecorded):
    """A run not recorded, not started because $CDLIB_DEADLINE (unix time) has passed: a time-limited
    reproduction (reproduce --time-limit) leaves it for the next window."""


def _check_deadline(what: str) -> None:
    deadline = os.environ.get("CDLIB_DEADLINE")
    if deadline and time.time() > float(deadline):
        raise DeadlineReached(f"{what} not started: the time limit (CDLIB_DEADLINE) has passed")


class TeacherMismatch(RuntimeError):
    """A teacher retrained because its weights were missing differs from its committed record."""


def _save_weights(model, path: Path) -> str:
    """Save a state dict atomically; returns the file's SHA-256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)
    return data.sha256(path)


def _evaluate_all(model, ds, cfg) -> dict:
    return {f"{split}_{proto}": metrics.evaluate(model, ds, split, proto, valid_negatives=cfg.valid_negatives)
            for split in ("valid", "test") for proto in ("sampled", "full")}


def differences(a: dict, b: dict) -> list[str]:
    """What differs between two records of one configuration: best epoch, metrics, and the learning
    curve (losses and validation metrics; not the seconds). Empty when the runs are the same."""
    out = []
    if a.get("best_epoch") != b.get("best_epoch"):
        out.append(f"best epoch {a.get('best_epoch')} vs {b.get('best_epoch')}")
    for k in ("valid_sampled", "valid_full", "test_sampled", "test_full"):
        for m in sorted(set(a.get(k, {})) | set(b.get(k, {}))):
            if a.get(k, {}).get(m) != b.get(k, {}).get(m):
                out.append(f"{k} {m} {a.get(k, {}).get(m)} vs {b.get(k, {}).get(m)}")
    ca, cb = ([{x: v for x, v in e.items() if x != "seconds"} for e in r.get("curve", [])] for r in (a, b))
    if ca != cb:
        first = next((i for i, (x, y) in enumerate(zip(ca, cb)) if x != y), min(len(ca), len(cb)))
        out.append(f"learning curve from epoch {first + 1} ({len(ca)} vs {len(cb)} epochs)")
    return out


def load_teacher(cfg: Config, results=None, progress: bool = True, train: bool = True, refresh: bool = False):
    """The teacher of student `cfg` and the SHA-256 of its weights, read from the cache.

    Missing weights are retrained (one process at a time per teacher). A retrained teacher never
    overwrites its record: if the record exists, and the new run's metrics and curve equal it, the
    record is kept and the new weights are cached (their hash noted beside them). If they differ where
    they should agree bit for bit (the record's instruction set and thread count are this machine's,
    `runs.bit_for_bit_expected`), TeacherMismatch names the record and the difference, unless
    `refresh` asks for a new record; on another CPU, where runs agree only statistically, the new
    weights are used with a warning, and the students distilled from them name their hash."""
    tcfg = cfg.teacher()
    path = weights_path(tcfg)
    ds = dataset_for(tcfg)
    if not path.is_file():
        if not train:
            raise NotRecorded(f"teacher weights {path} are not cached and training is off (CDLIB_NO_TRAIN)")
        _check_deadline(f"teacher {tcfg.key()}")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{path}.lock", "w") as lock:   # parallel jobs wait for one teacher, not train it twice
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not path.is_file():
                recorded = runs.read_record(tcfg.key(), results)
                if recorded is None or refresh:
                    run(tcfg, results, refresh=True, progress=progress)
                else:
                    _retrain_recorded_teacher(tcfg, recorded, ds, results, progress)
    model = build_model(tcfg, ds, tcfg.device)
    try:
        state = torch.load(path, map_location=model.device, weights_only=True)
        model.load_state_dict(state)
    except Exception as e:  # noqa: BLE001 -- a damaged cache file: say which, touch nothing
        raise RuntimeError(f"teacher weights {path} cannot be loaded ({type(e).__name__}: {e}); delete the file "
                           "to have the teacher retrained") from None
    model.eval()
    return model, data.sha256(path)


def _retrain_recorded_teacher(tcfg: Config, recorded: dict, ds, results, progress: bool) -> None:
    out = fit(tcfg, ds, None, progress)
    new = {**_evaluate_all(out["model"], ds, tcfg), "best_epoch": out["best_epoch"], "curve": out["curve"]}
    diff = differences(recorded, new)
    rec_path = runs.record_path(tcfg.key(), results)
    here = runs.provenance(out["model"].device)
    same = runs.bit_for_bit_expected(recorded["provenance"], here)
    if diff and same is not False:
        raise TeacherMismatch(
            f"teacher {rec_path} had no cached weights, so it was retrained, and the new run differs from the "
            f"record: {'; '.join(diff[:5])}{' ...' if len(diff) > 5 else ''}. Recorded on "
            f"{runs.describe_arithmetic(recorded['provenance'])}, retrained on {runs.describe_arithmetic(here)}. "
            "The students recorded so far were distilled from the recorded teacher; rerun with refresh=True to "
            "replace its record (and then retrain its students), or restore its weights into "
            + str(weights_path(tcfg)))
    if diff:
        print(f"warning: teacher {tcfg.key()} was retrained on {runs.describe_arithmetic(here)} and differs from "
              f"its record, made on {runs.describe_arithmetic(recorded['provenance'])} ({diff[0]}): runs on "
              "different instruction sets agree only statistically. Its record is kept; students distilled now "
              "name the new weights' SHA-256.", file=sys.stderr, flush=True)
    path = weights_path(tcfg)
    sha = _save_weights(out["model"], path)
    note = {"key": tcfg.key(), "weights_sha256": sha, "record": str(rec_path),
            "record_weights_sha256": recorded.get("weights_sha256"),
            "retrained": ("weights were missing; the retrained run differs from the record (another instruction "
                          f"set or thread count): {'; '.join(diff)}. The record was kept as it is") if diff else
                         "weights were missing; the retrained run equals the record (metrics and curve), "
                         "which was kept as it is", "provenance": here}
    runs.write_atomic(path.with_suffix(".json"), json.dumps(note, indent=1, default=str))


def check_record(key: str, results=None, note: bool = False) -> list[str]:
    """Retrain the recorded run `key` (one without a teacher, which would be retrained too) with the
    record's thread count, and return how the new run differs from the record (`differences`; empty
    when it equals it bit for bit). `note=True` adds this machine's provenance to the record's
    `reproduced_on` when it reproduced, so that `runs.bit_for_bit_expected` knows it holds here too."""
    rec = runs.read_record(key, results)
    if rec is None:
        raise NotRecorded(f"run {key} is not recorded in {runs.results_dir(results)}")
    cfg = Config(**rec["config"])
    if cfg.method != "none":
        raise ValueError(f"run {key} is distilled ({cfg.method}); check_record retrains runs without a teacher")
    threads = torch.get_num_threads()
    torch.set_num_threads(runs.threads(rec["provenance"]) or threads)
    try:
        ds = dataset_for(cfg)
        out = fit(cfg, ds, progress=False)
        new = {**_evaluate_all(out["model"], ds, cfg), "best_epoch": out["best_epoch"], "curve": out["curve"]}
        here = runs.provenance(out["model"].device)
    finally:
        torch.set_num_threads(threads)
    diff = differences(rec, new)
    if note and not diff and not runs.bit_for_bit_expected(rec["provenance"], here):
        rec["provenance"]["reproduced_on"] = [*rec["provenance"].get("reproduced_on", []), here]
        runs.write_record(rec, results)
    return diff


def best_test_epoch(config: Config, results=None, progress: bool = True, valid_in_train: bool = False,
                    epochs: int = 50) -> dict:
    """How much choosing the epoch on test would add (NCF reports its best test epoch): the recorded
    run of `config` is trained again with each epoch's test metrics tracked, its learning curve checked
    equal to the record's (the run is deterministic), and the test HR@10 / NDCG@10 of the best
    validation epoch set beside the best over all epochs. Written to results/analysis/ with provenance.

    valid_in_train=True measures NCF's whole protocol instead: the model is trained on all but the
    test item (`Dataset.with_valid_in_train`) for exactly `epochs` epochs, and the best test epoch is
    reported. Teachers only (a student would need a teacher trained on the same data)."""
    cfg = config.canonical()
    if valid_in_train and cfg.method != "none":
        raise ValueError("best_test_epoch(valid_in_train=True) is for runs without distillation")
    rec = run(cfg, results, progress=progress)
    ds = dataset_for(cfg)
    teacher = load_teacher(cfg, results, progress)[0] if cfg.method != "none" else None
    t0 = time.time()
    if valid_in_train:
        ds = ds.with_valid_in_train()
        fit_cfg = dataclasses.replace(cfg, epochs=epochs, min_epochs=min(epochs, cfg.min_epochs), patience=epochs)
        out = fit(fit_cfg, ds, None, progress, track_test=True)
    else:
        out = fit(cfg, ds, teacher, progress, track_test=True)
        diff = differences({"curve": rec["curve"]},
                           {"curve": [{k: v for k, v in e.items() if not k.startswith("test_")} for e in out["curve"]]})
        if diff:
            raise RuntimeError(f"run {rec['key']} did not reproduce its recorded curve: {diff} (recorded on "
                               f"{runs.describe_arithmetic(rec['provenance'])}, retrained on "
                               f"{runs.describe_arithmetic(runs.provenance(out['model'].device))}: runs agree bit "
                               "for bit only on the same instruction set and thread count)")
    best = max(out["curve"], key=lambda e: e["test_HR@10"])
    result = {"key": rec["key"], "config": dataclasses.asdict(cfg), "best_valid_epoch": rec["best_epoch"],
              "test_at_best_valid_epoch": {m: rec["test_sampled"][m] for m in ("HR@10", "NDCG@10")},
              "best_test_epoch": best["epoch"], "test_at_best_test_epoch": {m: best[f"test_{m}"] for m in ("HR@10", "NDCG@10")},
              "valid_in_train": valid_in_train, "epochs": len(out["curve"]),
              "curve": out["curve"], "reproduced_record_curve": not valid_in_train, "wall_seconds": time.time() - t0,
              "dataset": runs.dataset_info(ds), "provenance": runs.provenance(out["model"].device)}
    name = "ncf_protocol" if valid_in_train else "best_test_epoch"
    runs.write_atomic(runs.results_dir(results) / "analysis" / f"{name}_{rec['key']}.json",
                      json.dumps(result, indent=1, default=str))
    return result


def first_epochs(config: Config, teacher_seeds, epochs: int = 1, results=None) -> dict:
    """Whose seed an early collapse follows, the student's or its teacher's: the first `epochs` epochs
    of student `config` are trained again with each of `teacher_seeds` (recorded, cached teachers;
    none is trained here) and, beside them, of the plain student of the same seed. Each row gives
    the learning curve and, for NeuMF, how many units of the MLP tower's last layer are active on the
    validation pairs after those epochs (0: the tower is dead). The row of the config's own teacher
    is checked against the record's first epochs where the run is recorded. Written to
    results/analysis/first_epochs_<key>.json with provenance."""
    cfg = config.canonical()
    if cfg.method == "none":
        raise ValueError("first_epochs compares teachers of a distilled student; got method 'none'")
    ds = dataset_for(cfg)
    short = {"epochs": epochs, "min_epochs": epochs, "patience": epochs}
    plain = Config(**{**dataclasses.asdict(cfg), "method": "none"}).canonical()
    arms = [(None, plain)] + [(int(s), dataclasses.replace(cfg, teacher_seed=int(s))) for s in teacher_seeds]
    users = torch.arange(ds.n_users)
    t0, rows = time.time(), []
    for tseed, c in arms:
        teacher = load_teacher(c, results, progress=False, train=False)[0] if tseed is not None else None
        out = fit(dataclasses.replace(c, **short), ds, teacher, progress=False)
        model = out["model"]
        units = (model.tower_units(users.to(model.device), torch.as_tensor(ds.valid_item, device=model.device))
                 if isinstance(model, models.NeuMF) else None)
        rows.append({"method": c.method, "student_seed": c.seed, "teacher_seed": tseed, "key": c.key(),
                     "curve": out["curve"], "tower_units_active": units,
                     "tower_units": model.layer2.out_features if isinstance(model, models.NeuMF) else None})
    rec = runs.read_record(cfg.key(), results)
    own = next(r for r in rows if r["teacher_seed"] == cfg.teacher_seed) if cfg.teacher_seed in teacher_seeds else None
    reproduced = None
    if rec is not None and own is not None:
        reproduced = not differences({"curve": rec["curve"][:epochs]}, {"curve": own["curve"]})
    result = {"key": cfg.key(), "config": dataclasses.asdict(cfg), "epochs": epochs, "rows": rows,
              "reproduced_record_curve": reproduced, "wall_seconds": time.time() - t0,
              "dataset": runs.dataset_info(ds), "provenance": runs.provenance(models.default_device(cfg.device))}
    runs.write_atomic(runs.results_dir(results) / "analysis" / f"first_epochs_{cfg.key()}.json",
                      json.dumps(result, indent=1, default=str))
    return result


def group_agreement(configs, results=None, progress: bool = True) -> dict:
    """Does training in a group change a run? The runs `configs` (one stackable group; their teachers
    recorded and cached) trained alone and as one group (`fit_group`); per run the largest loss difference
    over the first 5 epochs, the first epoch whose loss or validation NDCG@10 differs, the epochs run and
    the test NDCG@10 (sampled) of both, and their means and standard deviations over the runs. Written to
    results/analysis/group_agreement_<first key>.json."""
    cfgs = [c.canonical() for c in configs]
    check_group(cfgs)
    ds = dataset_for(cfgs[0])
    teachers = [load_teacher(c, results, progress, train=False)[0] if c.method != "none" else None for c in cfgs]
    t0 = time.time()
    alone = [fit(c, ds, t, progress) for c, t in zip(cfgs, teachers)]
    t1 = time.time()
    group = fit_group(cfgs, ds, teachers, progress)
    t2 = time.time()
    rows = []
    for c, a, g in zip(cfgs, alone, group):
        ndcg = [metrics.evaluate(o["model"], ds, "test", "sampled")["NDCG@10"] for o in (a, g)]
        same = [x["loss"] == y["loss"] and x["valid_NDCG@10"] == y["valid_NDCG@10"] for x, y in zip(a["curve"], g["curve"])]
        rows.append({"key": c.key(), "seed": c.seed, "first_epochs_max_loss_difference":
                     max(abs(x["loss"] - y["loss"]) for x, y in zip(a["curve"][:5], g["curve"][:5])),
                     "first_different_epoch": same.index(False) + 1 if False in same else None,
                     "epochs_alone": len(a["curve"]), "epochs_group": len(g["curve"]),
                     "test_NDCG@10_alone": ndcg[0], "test_NDCG@10_group": ndcg[1]})
    a, g = (np.array([r[f"test_NDCG@10_{k}"] for r in rows]) for k in ("alone", "group"))
    result = {"configs": [dataclasses.asdict(c) for c in cfgs], "runs": rows,
              "test_NDCG@10": {"alone_mean": a.mean(), "alone_sd": a.std(ddof=1) if len(a) > 1 else 0.0,
                               "group_mean": g.mean(), "group_sd": g.std(ddof=1) if len(g) > 1 else 0.0},
              "within_one_sd": bool(abs(a.mean() - g.mean()) <= (a.std(ddof=1) if len(a) > 1 else 0.0)),
              "seconds": {"alone": t1 - t0, "group": t2 - t1},
              "dataset": runs.dataset_info(ds), "provenance": runs.provenance(models.default_device(cfgs[0].device))}
    runs.write_atomic(runs.results_dir(results) / "analysis" / f"group_agreement_{cfgs[0].key()}.json",
                      json.dumps(result, indent=1, default=float))
    return result


def run(config: Config, results=None, refresh: bool = False, progress: bool = True,
        train: bool | None = None) -> dict:
    """The record of `config`: read from results/runs/ when it exists (unless `refresh`), else
    trained, evaluated and written atomically, its weights cached. train=False (or
    $CDLIB_NO_TRAIN=1) never trains: a missing run raises NotRecorded."""
    return run_group([config], results, refresh, progress, train)[0]


def group_size() -> int:
    """Runs trained together at most ($CDLIB_GROUP_SIZE, default 1: on a CPU a stacked step is slower
    than its members' steps one after another, measured by `cdlib.bench --groups`)."""
    n = os.environ.get("CDLIB_GROUP_SIZE", "1")
    if not n.isdigit() or int(n) < 1:
        raise ValueError(f"CDLIB_GROUP_SIZE must be a positive integer, got {n!r}")
    return int(n)


def run_group(configs, results=None, refresh: bool = False, progress: bool = True, train: bool | None = None,
              size: int | None = None) -> list[dict]:
    """The records of `configs`, as `run` gives each: recorded runs are read (unless `refresh`), the
    others trained together, up to `size` (default `group_size()`) at a time, in groups of runs that
    stack (`check_group`); each record names the group it was trained in. A group that runs out of GPU
    memory is split in two, with a message, and each half trained again."""
    cfgs = [c.canonical() for c in configs]
    if train is None:
        train = os.environ.get("CDLIB_NO_TRAIN", "") in ("", "0")
    recs = {c.key(): None if refresh else runs.read_record(c.key(), results) for c in cfgs}
    todo = list({c.key(): c for c in cfgs if recs[c.key()] is None}.values())
    if todo and not train:
        c = todo[0]
        raise NotRecorded(f"run {c.key()} ({c.dataset} {c.backbone}-{c.size} {c.method} seed {c.seed}) is not "
                          f"recorded in {runs.results_dir(results)}")
    stacks: dict = {}
    for c in todo:
        stacks.setdefault(tuple(getattr(c, k) for k in STACKED), []).append(c)
    size = size or group_size()
    for members in stacks.values():
        for s in range(0, len(members), size):
            for rec in _train_group(members[s:s + size], results, progress):
                recs[rec["key"]] = rec
    return [recs[c.key()] for c in cfgs]


def _train_group(cfgs: list[Config], results, progress: bool) -> list[dict]:
    _check_deadline(f"run {cfgs[0].key()}" if len(cfgs) == 1 else f"a group of {len(cfgs)} runs")
    t0 = time.time()
    ds = dataset_for(cfgs[0])
    teachers = [load_teacher(c, results, progress) if c.method != "none" else (None, None) for c in cfgs]
    try:
        outs = fit_group(cfgs, ds, [t for t, _ in teachers], progress)
    except torch.cuda.OutOfMemoryError:
        if len(cfgs) == 1:
            raise
        half = len(cfgs) // 2
        print(f"out of GPU memory training a group of {len(cfgs)} runs: split into groups of {half} and "
              f"{len(cfgs) - half}", file=sys.stderr, flush=True)
        torch.cuda.empty_cache()
        return _train_group(cfgs[:half], results, progress) + _train_group(cfgs[half:], results, progress)
    group = [c.key() for c in cfgs]
    out = []
    for cfg, (teacher, teacher_sha), o in zip(cfgs, teachers, outs):
        model = o["model"]
        weights_sha = _save_weights(model, weights_path(cfg))
        out.append({"key": cfg.key(), "config": dataclasses.asdict(cfg), **_evaluate_all(model, ds, cfg),
                    "best_epoch": o["best_epoch"], "epochs_run": len(o["curve"]), "curve": o["curve"],
                    "popularity_valid_NDCG@10": o["popularity_valid_NDCG@10"],
                    "n_params": model.n_params(),
                    "teacher_n_params": teacher.n_params() if teacher is not None else None,
                    "teacher_key": cfg.teacher().key() if teacher is not None else None,
                    "teacher_sha256": teacher_sha, "weights_sha256": weights_sha, "timing": o["timing"],
                    "group": group, "dataset": runs.dataset_info(ds), "provenance": runs.provenance(model.device)})
    wall = time.time() - t0
    for rec in out:       # a member's share of the group's wall time (all of it for a group of one)
        rec["timing"] = dict(rec["timing"], wall_seconds=wall / len(cfgs), group_wall_seconds=wall)
        runs.write_record(rec, results)
    return out
