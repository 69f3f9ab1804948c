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

import copy
import dataclasses
import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import data, losses, methods, metrics, models, runs
from .samplers import GUIDES, SAMPLINGS, uniform_negatives

METHODS = tuple(methods.METHODS)
# backbone defaults [decision]: learning rate and users per batch (the tuning stage may choose others)
BACKBONE_DEFAULTS = {"cdae": {"lr": 3e-3, "batch_size": 64}, "neumf": {"lr": 1e-3, "batch_size": 16}}
TEACHER_SIZE = {"cdae": 200, "neumf": 64}      # METHOD.md "Backbones"
STUDENT_SIZES = {"cdae": (5, 10, 20, 50), "neumf": (4, 8, 16)}
SWITCH_EPOCH = 50                              # hybrid guide: teacher for the first 50 epochs [decision]
RD_RANKS = ("sampled", "exact")
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
        d = dataclasses.asdict(self)
        tsize = TEACHER_SIZE[self.backbone]
        d["size"] = self.size or tsize
        for k, v in BACKBONE_DEFAULTS[self.backbone].items():
            d[k] = d[k] if d[k] is not None else v
        if self.backbone != "cdae":
            d["corruption"] = None
        d["mlp_scale"] = (self.mlp_scale or 1) if self.backbone == "neumf" else None
        d["device"] = models.default_device(self.device).type
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
        return runs.config_key(d)

    def teacher(self) -> "Config":
        """The configuration of this student's teacher."""
        c = self.canonical()
        return Config(dataset=c.dataset, backbone=c.backbone, size=c.teacher_size, method="none",
                      seed=c.teacher_seed, data_seed=c.data_seed, subset_users=c.subset_users,
                      valid_negatives=c.valid_negatives, epochs=c.epochs, patience=c.patience,
                      min_epochs=c.min_epochs, plateau=c.plateau, lr=c.teacher_lr, weight_decay=c.weight_decay,
                      n_neg=c.n_neg, corruption=self.corruption, mlp_scale=c.mlp_scale, device=self.device).canonical()


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
    """Train one model of `cfg` (canonical) on `ds`; returns {model, curve, best_epoch, timing}.
    The run ends when validation NDCG@10 has not improved for `patience` epochs, once it has run
    `min_epochs` epochs and left the initial plateau (its best validation NDCG@10 above `plateau` x
    that of the most-popular ranking), or at the cap `epochs`. track_test adds each epoch's test HR@10 and
    NDCG@10 (sampled) to the curve, for analyses of the protocol only: nothing is chosen on them,
    and they draw no random numbers, so the run is the same."""
    torch.manual_seed(cfg.seed)
    dev = models.default_device(cfg.device)
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)
    model = build_model(cfg, ds, dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    positives = data.UserItems(ds.train, dev)
    method = methods.build(cfg, positives, teacher)
    curve, best, best_state, since = [], -1.0, None, 0
    epoch_seconds = []
    popularity = metrics.evaluate(metrics.Popularity(ds, dev), ds, "valid", "sampled",
                                  valid_negatives=cfg.valid_negatives)["NDCG@10"]
    floor = -1.0 if cfg.plateau is None else cfg.plateau * popularity
    bar = tqdm(range(cfg.epochs), desc=desc or f"{Path(cfg.dataset).name} {cfg.backbone}-{cfg.size} {cfg.method}",
               disable=not progress, leave=False, mininterval=2.0)
    for epoch in bar:
        t0 = time.perf_counter()
        method.start_epoch(epoch, model)
        model.train()
        total, n_batches = torch.zeros((), device=dev), 0
        perm = torch.randperm(ds.n_users, generator=gen, device=dev)
        for s in range(0, ds.n_users, cfg.batch_size):
            users = perm[s:s + cfg.batch_size]
            pos_rows, pos_items = positives.pairs(users)
            neg_rows, neg_items = uniform_negatives(positives, users, cfg.n_neg, gen)
            rows, items = [pos_rows, neg_rows], [pos_items, neg_items]
            n_cf = len(pos_rows) + len(neg_rows)
            extra = method.batch_items(users, gen)
            if extra is not None:
                rows.append(torch.arange(len(users), device=dev).repeat_interleave(extra.shape[1]))
                items.append(extra.reshape(-1))
            logits = model.pair_logits(users, torch.cat(rows), torch.cat(items))
            labels = torch.cat([torch.ones(len(pos_rows), device=dev), torch.zeros(len(neg_rows), device=dev)])
            loss = losses.cf_loss(logits[:n_cf], labels)
            if extra is not None:
                loss = loss + method.loss(users, extra, logits[n_cf:].view_as(extra))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()
            n_batches += 1
        epoch_seconds.append(time.perf_counter() - t0)
        val = metrics.evaluate(model, ds, "valid", "sampled", valid_negatives=cfg.valid_negatives)
        mean_loss = total.item() / n_batches
        curve.append({"epoch": epoch + 1, "loss": mean_loss, "valid_HR@10": val["HR@10"],
                      "valid_NDCG@10": val["NDCG@10"], "seconds": epoch_seconds[-1]})
        if track_test:
            test = metrics.evaluate(model, ds, "test", "sampled")
            curve[-1].update({"test_HR@10": test["HR@10"], "test_NDCG@10": test["NDCG@10"]})
        bar.set_postfix(loss=f"{mean_loss:.4f}", ndcg10=f"{val['NDCG@10']:.4f}", refresh=False)   # drawn at most every 2 s
        if val["NDCG@10"] > best:
            best, best_epoch, since = val["NDCG@10"], epoch + 1, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            since += 1
            if since >= cfg.patience and epoch + 1 >= cfg.min_epochs and best > floor:
                break
    model.load_state_dict(best_state)
    model.eval()
    timing = {"train_seconds": float(sum(epoch_seconds)), "epoch_seconds_mean": float(np.mean(epoch_seconds))}
    if method.refresh_seconds:
        timing["refresh_seconds_mean"] = float(np.mean(method.refresh_seconds))
    return {"model": model, "curve": curve, "best_epoch": best_epoch, "timing": timing,
            "popularity_valid_NDCG@10": popularity}


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
    record is kept and the new weights are cached (their hash noted beside them); if they differ,
    TeacherMismatch names the record and the difference, unless `refresh` asks for a new record."""
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
    if diff:
        raise TeacherMismatch(
            f"teacher {rec_path} had no cached weights, so it was retrained, and the new run differs from the "
            f"record: {'; '.join(diff[:5])}{' ...' if len(diff) > 5 else ''}. The students recorded so far were "
            "distilled from the recorded teacher; rerun with refresh=True to replace its record (and then retrain "
            "its students), or restore its weights into " + str(weights_path(tcfg)))
    path = weights_path(tcfg)
    sha = _save_weights(out["model"], path)
    note = {"key": tcfg.key(), "weights_sha256": sha, "record": str(rec_path),
            "record_weights_sha256": recorded.get("weights_sha256"),
            "retrained": "weights were missing; the retrained run equals the record (metrics and curve), "
                         "which was kept as it is", "provenance": runs.provenance(out["model"].device)}
    runs.write_atomic(path.with_suffix(".json"), json.dumps(note, indent=1, default=str))


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
            raise RuntimeError(f"run {rec['key']} did not reproduce its recorded curve: {diff}")
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


def run(config: Config, results=None, refresh: bool = False, progress: bool = True,
        train: bool | None = None) -> dict:
    """The record of `config`: read from results/runs/ when it exists (unless `refresh`), else
    trained, evaluated and written atomically, its weights cached. train=False (or
    $CDLIB_NO_TRAIN=1) never trains: a missing run raises NotRecorded."""
    cfg = config.canonical()
    cfgd = dataclasses.asdict(cfg)
    key = cfg.key()
    if train is None:
        train = os.environ.get("CDLIB_NO_TRAIN", "") in ("", "0")
    rec = runs.read_record(key, results)
    if rec is not None and not refresh:
        return rec
    if not train:
        raise NotRecorded(f"run {key} ({cfg.dataset} {cfg.backbone}-{cfg.size} "
                          f"{cfg.method} seed {cfg.seed}) is not recorded in {runs.results_dir(results)}")
    _check_deadline(f"run {key}")
    t0 = time.time()
    ds = dataset_for(cfg)
    teacher, teacher_sha = load_teacher(cfg, results, progress) if cfg.method != "none" else (None, None)
    out = fit(cfg, ds, teacher, progress)
    model = out["model"]
    weights_sha = _save_weights(model, weights_path(cfg))
    rec = {"key": key, "config": cfgd, **_evaluate_all(model, ds, cfg),
           "best_epoch": out["best_epoch"], "epochs_run": len(out["curve"]), "curve": out["curve"],
           "popularity_valid_NDCG@10": out["popularity_valid_NDCG@10"],
           "n_params": model.n_params(), "teacher_n_params": teacher.n_params() if teacher is not None else None,
           "teacher_key": cfg.teacher().key() if teacher is not None else None,
           "teacher_sha256": teacher_sha, "weights_sha256": weights_sha,
           "timing": dict(out["timing"], wall_seconds=time.time() - t0),
           "dataset": runs.dataset_info(ds),
           "provenance": runs.provenance(model.device)}
    runs.write_record(rec, results)
    return rec
