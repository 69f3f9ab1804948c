"""Training: teachers with the CF loss alone, students with method none, rd or cd.

`run(config)` is the entry point: it returns the run's record, training only when no record of
that exact configuration exists in `results/runs/` (or when `refresh=True`). A student's teacher
is itself a run; its weights are cached outside git ($CDLIB_CACHE/weights) so that every student
of one dataset, backbone and teacher seed reuses one teacher.

Early stopping on validation NDCG@10 (sampled protocol), patience `patience` epochs; the test
metrics are those of the best validation epoch (METHOD.md "Evaluation protocol").
"""
from __future__ import annotations

import copy
import dataclasses
import fcntl
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from . import data, losses, metrics, models, runs
from .samplers import CDSampler, masked_scores, top_missing, uniform_negatives

METHODS = ("none", "rd", "cd")
# backbone defaults [decision]: learning rate and users per batch
BACKBONE_DEFAULTS = {"cdae": {"lr": 3e-3, "batch_size": 64}, "neumf": {"lr": 1e-3, "batch_size": 16}}
TEACHER_SIZE = {"cdae": 200, "neumf": 64}      # METHOD.md "Backbones"
STUDENT_SIZES = {"cdae": (5, 10, 20, 50), "neumf": (4, 8, 16)}


@dataclass(frozen=True)
class Config:
    """Every parameter of one run. None means "the documented default" (see `canonical`)."""
    dataset: str = "ml-1m"
    backbone: str = "cdae"            # cdae | neumf
    size: int | None = None           # CDAE hidden units H / NeuMF dimension d; None: teacher size
    method: str = "none"              # none (teacher or plain student) | rd | cd
    seed: int = 0
    # data
    data_seed: int = 0                # split and sampled negatives
    subset_users: int | None = None   # a seeded subset of users (smoke runs)
    # optimisation [decision]
    epochs: int = 200
    patience: int = 20
    lr: float | None = None
    batch_size: int | None = None     # users per step
    weight_decay: float = 0.0
    n_neg: int = 4                    # uniform negatives per positive in L_CF
    corruption: float = 0.5           # CDAE input dropout q
    # teacher (students of method rd / cd)
    teacher_size: int | None = None
    teacher_seed: int = 0
    # CD (METHOD.md "The CD loss", "Probabilistic rank-aware sampling", "guided training")
    lambda_kd: float = 0.5
    temperature: float = 1.0
    mu: float = 10.0
    n_distill: int = 10
    max_rank: int | None = None       # None: ceil(10 mu)
    sampling: str = "rank"            # rank | uniform | topk
    guide: str = "teacher"            # teacher | student | hybrid
    refresh_every: int = 1
    switch_epoch: int | None = None   # hybrid; None: epochs // 4
    # RD (Tang & Wang 2018)
    lambda_rd: float = 0.5
    rd_k: int = 10
    rd_lambda: float = 1.0
    rd_mu: float = 0.1
    rd_warmup: int = 5
    device: str | None = None         # None: cuda if present, else cpu

    def canonical(self) -> "Config":
        """Defaults filled in, parameters a method does not use set to None: the key of a run."""
        if self.backbone not in TEACHER_SIZE:
            raise ValueError(f"backbone must be one of {list(TEACHER_SIZE)}, got {self.backbone!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        d = dataclasses.asdict(self)
        tsize = TEACHER_SIZE[self.backbone]
        d["size"] = self.size or tsize
        for k, v in BACKBONE_DEFAULTS[self.backbone].items():
            d[k] = d[k] if d[k] is not None else v
        if self.backbone != "cdae":
            d["corruption"] = None
        d["device"] = models.default_device(self.device).type
        cd_fields = ("lambda_kd", "temperature", "mu", "n_distill", "max_rank", "sampling", "guide",
                     "refresh_every", "switch_epoch")
        rd_fields = ("lambda_rd", "rd_k", "rd_lambda", "rd_mu", "rd_warmup")
        if self.method == "cd":
            d["max_rank"] = self.max_rank or int(np.ceil(10 * self.mu))
            if self.guide == "hybrid":
                d["switch_epoch"] = self.switch_epoch if self.switch_epoch is not None else self.epochs // 4
            else:
                d["switch_epoch"] = None
            if self.guide == "teacher" or self.sampling == "uniform":
                d["refresh_every"] = None
        if self.method != "cd":
            d.update({k: None for k in cd_fields})
        if self.method != "rd":
            d.update({k: None for k in rd_fields})
        if self.method == "none":
            d["teacher_size"] = d["teacher_seed"] = None
        else:
            d["teacher_size"] = self.teacher_size or tsize
        return Config(**d)

    def teacher(self) -> "Config":
        """The configuration of this student's teacher."""
        c = self.canonical()
        return Config(dataset=c.dataset, backbone=c.backbone, size=c.teacher_size, method="none",
                      seed=c.teacher_seed, data_seed=c.data_seed, subset_users=c.subset_users,
                      epochs=c.epochs, patience=c.patience, weight_decay=c.weight_decay, n_neg=c.n_neg,
                      corruption=self.corruption, device=self.device).canonical()


_DATASETS: dict = {}


def dataset_for(cfg: Config) -> data.Dataset:
    """The run's dataset (memoised per process: a notebook loads each dataset once)."""
    key = (cfg.dataset, cfg.data_seed, cfg.subset_users)
    if key not in _DATASETS:
        ds = data.load(cfg.dataset, seed=cfg.data_seed)
        _DATASETS[key] = ds.subset(cfg.subset_users, seed=cfg.data_seed) if cfg.subset_users else ds
    return _DATASETS[key]


def weights_path(cfg: Config) -> str:
    return os.path.join(data.cache_dir(), "weights", runs.config_key(dataclasses.asdict(cfg)) + ".pt")


def fit(cfg: Config, ds: data.Dataset, teacher=None, progress: bool = True, desc: str = "") -> dict:
    """Train one model of `cfg` on `ds`; returns {model, curve, best_epoch, timing}."""
    torch.manual_seed(cfg.seed)
    dev = models.default_device(cfg.device)
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)
    model = models.build(cfg.backbone, ds.train, cfg.size, cfg.corruption or 0.0, dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    positives = data.UserItems(ds.train, dev)
    sampler = rd_top = rd_rank = None
    if cfg.method == "cd":
        sampler = CDSampler(positives, teacher, cfg.n_distill, cfg.mu, cfg.sampling, cfg.guide,
                            cfg.max_rank, cfg.refresh_every or 1, cfg.switch_epoch or 0)
    elif cfg.method == "rd":
        rd_top = top_missing(teacher, positives, cfg.rd_k)
        if (rd_top < 0).any():
            raise ValueError(f"rd_k={cfg.rd_k} exceeds the missing items of some user")
    curve, best, best_state, since = [], -1.0, None, 0
    epoch_seconds = []
    bar = tqdm(range(cfg.epochs), desc=desc or f"{cfg.dataset} {cfg.backbone}-{cfg.size} {cfg.method}",
               disable=not progress, leave=False, mininterval=2.0)
    for epoch in bar:
        t0 = time.perf_counter()
        if sampler is not None:
            sampler.start_epoch(epoch, model)
        if rd_top is not None and epoch >= cfg.rd_warmup:
            rd_rank = student_ranks(model, positives, rd_top)
        model.train()
        total, n_batches = 0.0, 0
        perm = torch.randperm(ds.n_users, generator=gen, device=dev)
        for s in range(0, ds.n_users, cfg.batch_size):
            users = perm[s:s + cfg.batch_size]
            pos_rows, pos_items = positives.pairs(users)
            neg_rows, neg_items = uniform_negatives(positives, users, cfg.n_neg, gen)
            rows, items = [pos_rows, neg_rows], [pos_items, neg_items]
            n_cf = len(pos_rows) + len(neg_rows)
            extra = None
            if sampler is not None:
                extra = sampler.sample(users, gen)
            elif rd_top is not None:
                extra = rd_top[users]
            if extra is not None:
                rows.append(torch.arange(len(users), device=dev).repeat_interleave(extra.shape[1]))
                items.append(extra.reshape(-1))
            logits = model.pair_logits(users, torch.cat(rows), torch.cat(items))
            labels = torch.cat([torch.ones(len(pos_rows), device=dev), torch.zeros(len(neg_rows), device=dev)])
            loss = losses.cf_loss(logits[:n_cf], labels)
            if sampler is not None:
                z_t = teacher.score(users, extra)
                loss = loss + cfg.lambda_kd * losses.cd_loss(logits[n_cf:].view_as(extra), z_t, cfg.temperature)
            elif rd_top is not None:
                w = losses.rd_weights(cfg.rd_k, cfg.rd_lambda, None if rd_rank is None else rd_rank[users], cfg.rd_mu)
                loss = loss + cfg.lambda_rd * losses.rd_loss(logits[n_cf:].view_as(extra), w.to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
            n_batches += 1
        epoch_seconds.append(time.perf_counter() - t0)
        val = metrics.evaluate(model, ds, "valid", "sampled")
        curve.append({"epoch": epoch + 1, "loss": total / n_batches, "valid_HR@10": val["HR@10"],
                      "valid_NDCG@10": val["NDCG@10"], "seconds": epoch_seconds[-1]})
        bar.set_postfix(loss=f"{total / n_batches:.4f}", ndcg10=f"{val['NDCG@10']:.4f}")
        if val["NDCG@10"] > best:
            best, best_epoch, since = val["NDCG@10"], epoch + 1, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            since += 1
            if since >= cfg.patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    timing = {"train_seconds": float(sum(epoch_seconds)), "epoch_seconds_mean": float(np.mean(epoch_seconds))}
    if sampler is not None and sampler.refresh_seconds:
        timing["refresh_seconds_mean"] = float(np.mean(sampler.refresh_seconds))
    return {"model": model, "curve": curve, "best_epoch": best_epoch, "timing": timing}


@torch.no_grad()
def student_ranks(model, positives: data.UserItems, items: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The student's rank (1 = top) of each of `items` [users x k] among each user's missing items."""
    out = torch.empty_like(items)
    for s in range(0, len(items), batch_size):
        u = torch.arange(s, min(s + batch_size, len(items)), device=items.device)
        sc = masked_scores(model.score_all(u), positives, u)
        target = sc.gather(1, items[u])
        out[u] = 1 + metrics.count_above(sc, target)
    return out


def load_teacher(cfg: Config, results=None, progress: bool = True, train: bool = True):
    """The teacher of student `cfg`: its weights from the cache, trained (and recorded) if missing."""
    tcfg = cfg.teacher()
    path = weights_path(tcfg)
    ds = dataset_for(tcfg)
    if not os.path.isfile(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".lock", "w") as lock:   # parallel jobs wait for one teacher, not train it twice
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not os.path.isfile(path):
                run(tcfg, results, refresh=True, progress=progress, train=train)
    model = models.build(tcfg.backbone, ds.train, tcfg.size, tcfg.corruption or 0.0, tcfg.device)
    model.load_state_dict(torch.load(path, map_location=model.device, weights_only=True))
    model.eval()
    return model


class NotRecorded(LookupError):
    """A run was asked for without training (train=False) and no record of it exists."""


def run(config: Config, results=None, refresh: bool = False, progress: bool = True,
        train: bool | None = None) -> dict:
    """The record of `config`: read from results/runs/ when it exists (unless `refresh`), else
    trained, evaluated and written atomically. train=False (or $CDLIB_NO_TRAIN=1) never trains:
    a missing run raises NotRecorded."""
    cfg = config.canonical()
    cfgd = dataclasses.asdict(cfg)
    if train is None:
        train = os.environ.get("CDLIB_NO_TRAIN", "") in ("", "0")
    rec = runs.read_record(cfgd, results)
    if rec is not None and not refresh:
        return rec
    if not train:
        raise NotRecorded(f"run {runs.config_key(cfgd)} ({cfg.dataset} {cfg.backbone}-{cfg.size} "
                          f"{cfg.method} seed {cfg.seed}) is not recorded in {runs.results_dir(results)}")
    t0 = time.time()
    ds = dataset_for(cfg)
    teacher = load_teacher(cfg, results, progress) if cfg.method != "none" else None
    out = fit(cfg, ds, teacher, progress)
    model = out["model"]
    if cfg.method == "none":
        path = weights_path(cfg)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path)
    result = {f"{split}_{proto}": metrics.evaluate(model, ds, split, proto)
              for split in ("valid", "test") for proto in ("sampled", "full")}
    rec = {"key": runs.config_key(cfgd), "config": cfgd, **result,
           "best_epoch": out["best_epoch"], "epochs_run": len(out["curve"]), "curve": out["curve"],
           "n_params": model.n_params(), "teacher_n_params": teacher.n_params() if teacher is not None else None,
           "teacher_key": runs.config_key(dataclasses.asdict(cfg.teacher())) if teacher is not None else None,
           "timing": dict(out["timing"], wall_seconds=time.time() - t0),
           "dataset": runs.dataset_info(ds),
           "provenance": runs.provenance(model.device)}
    runs.write_record(rec, results)
    return rec
