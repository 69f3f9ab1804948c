"""The configuration of one run: every parameter, its documented default, and the key that names
the run's record (`Config.canonical`, `Config.key`), with the dataset and the untrained model it
describes (`dataset_for`, `build_model`); and how runs are executed here (`Execution`), which
enters no key.

A distillation method declares its own parameters (`methods.NoKD.FIELDS`): `Config` is the run's
common fields plus every method's, so a new method needs no edit here.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from . import data, methods, models, paths, runs, sparse
from .dataset import DataError, Dataset

METHODS = tuple(methods.METHODS)
# backbone defaults [decision]: learning rate and users per batch (the tuning stage may choose others)
BACKBONE_DEFAULTS = {
    "cdae": {"lr": 3e-3, "batch_size": 64},
    "neumf": {"lr": 1e-3, "batch_size": 16},
}
TEACHER_SIZE = {"cdae": 200, "neumf": 64}  # METHOD.md "Backbones"
STUDENT_SIZES = {"cdae": (5, 10, 20, 50), "neumf": (4, 8, 16)}
STUDENT = {"cdae": 20, "neumf": 8}  # the main table's student sizes [decision] (METHOD.md: ranges)
SHAPES = ("dynamic", "static")
DEFERS = (None, "all")  # Config.defer
# fields added after runs were recorded, and the value their absence from a record means: at that
# value they are left out of the key, so older records keep theirs
# (`rise`, `rise_t`: every record made before them ends where their rule ends it but one, which was
# re-run under it: the yelp NeuMF teacher at lr 1e-3, seed 0, of issue 23's tuning stage)
ABSENT_MEANS = {
    "shapes": "dynamic",
    "step": "dense",
    "refresh_tower": None,
    "defer": None,
    "mlp_init": None,
    "rise": 0.02,
    "rise_t": 3.0,
}


def recorded(config: dict, name: str):
    """Field `name` of a recorded configuration, its absence read as `ABSENT_MEANS` says."""
    return config.get(name) or ABSENT_MEANS[name]


def keyed_fields(config: dict) -> dict:
    """A configuration less the fields at the value their absence means: what names it in a key."""
    return {k: v for k, v in config.items() if not (k in ABSENT_MEANS and v == ABSENT_MEANS[k])}


VALID_NEGATIVES = ("own", "disjoint", "test")


def fields_of(cfg) -> dict:
    """A configuration's fields as a dict: `dataclasses.asdict` without its deep copy (every field
    is a scalar), which made key() cost 0.8 ms; grids compute thousands of keys."""
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}


@dataclass(frozen=True)
class RunFields:
    """The fields of every run, whatever its method. None means "the documented default" (see
    `canonical`). `Config` adds each method's own fields (`methods.*.FIELDS`)."""

    dataset: str = "ml-1m"  # one of data.DATASETS, or the path of an interactions file
    backbone: str = "cdae"  # cdae | neumf
    size: int | None = None  # CDAE hidden units H / NeuMF dimension d; None: teacher size
    method: str = "none"  # none (teacher or plain student) | rd | cd (methods.METHODS)
    seed: int = 0
    # data
    data_seed: int = 0  # split and sampled negatives
    subset_users: int | None = None  # a seeded subset of users (smoke runs)
    # the validation's 99 negatives: own (its own draw) | disjoint (its own, none among the test's;
    # issue 23) | test (the test's, the first protocol)
    valid_negatives: str = "own"
    # optimisation [decision]; a run ends by early stopping, not by its cap (METHOD.md "A fair comparison")
    epochs: int = 1000  # the cap
    patience: int = 30  # epochs without a better validation NDCG@10 before stopping
    min_epochs: int = 50  # early stopping may not end a run before this many epochs
    plateau: float | None = (
        1.05  # ... nor while its best validation NDCG@10 is at most this x that of the
    )
    # most-popular ranking (the initial plateau); None: no such rule
    rise: float | None = 0.02  # ... nor while it still rises: the least-squares line through its
    # last `patience` validation NDCG@10s up by more than `rise` x its best, its slope `rise_t`
    # standard errors above 0 or more (`loop.rising`); None: no such rule
    rise_t: float = 3.0
    lr: float | None = None
    batch_size: int | None = None  # users per step
    shapes: str | None = None  # dynamic: each step's tensors sized by its batch, negatives drawn by
    # rejection | static: padded to sizes planned per epoch, negatives by
    # inverse transform, no wait on a GPU inside an epoch (same
    # distributions, other draws) | None: static on CUDA, else dynamic
    step: str | None = None  # dense: Adam over every parameter, CDAE decoding all items (the
    # original step) | sparse: look-ups and decoding at the step's pairs, Adam on the rows they
    # touch only (`rowadam.RowAdam`, lazy: other training) | deferred: the same look-ups, Adam's
    # steps of the untouched rows deferred and applied in closed form (the dense step's training,
    # up to rounding) | None: dense
    defer: str | None = None  # the deferred step's tables: None, those of `rowadam.defers`' size
    # rule (a smaller one stepped whole) | "all": every table, after the warm-up (the same training
    # up to rounding; faster where the row kernels step the tables, `rowadam.RowAdam`)
    weight_decay: float = 0.0
    n_neg: int = 4  # uniform negatives per positive in L_CF
    corruption: float = 0.5  # CDAE input dropout q
    mlp_scale: int | None = None  # NeuMF tower width: embeddings of mlp_scale x d (None: 1)
    mlp_init: str | None = None  # NeuMF's tower and prediction layer (`models.MLP_INITS`): None,
    # PyTorch's nn.Linear defaults (weights and biases U(+-1/sqrt(fan_in)); every run recorded up
    # to 2026-12-05) | "ncf": NCF's Keras code's (Glorot-uniform tower, LeCun-uniform prediction
    # layer, zero biases)
    # teacher (students of a method that distils)
    teacher_size: int | None = None
    teacher_seed: int | None = None  # None: the student's own seed (a seed is a whole replicate)
    teacher_lr: float | None = None  # None: the backbone's default learning rate
    device: str | None = None  # None: cuda if present, else cpu
    data_sha256: str | None = None  # a file dataset's SHA-256 (filled in by `canonical`)

    def canonical(self) -> Config:
        """Defaults filled in, parameters a method does not use set to None: the key of a run.
        Bad values raise ValueError naming the parameter, before anything trains."""
        if self.backbone not in TEACHER_SIZE:
            raise ValueError(f"backbone must be one of {list(TEACHER_SIZE)}, got {self.backbone!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.min_epochs > self.epochs:
            raise ValueError(
                f"the epoch cap (epochs={self.epochs}) is below min_epochs={self.min_epochs}"
            )
        if self.valid_negatives not in VALID_NEGATIVES:
            raise ValueError(
                f"valid_negatives must be one of {VALID_NEGATIVES}, got {self.valid_negatives!r}"
            )
        if self.shapes is not None and self.shapes not in SHAPES:
            raise ValueError(f"shapes must be one of {SHAPES}, got {self.shapes!r}")
        if self.step is not None and self.step not in sparse.STEPS:
            raise ValueError(f"step must be one of {sparse.STEPS}, got {self.step!r}")
        if self.step == "deferred" and self.weight_decay:
            raise ValueError(
                f"step='deferred' needs weight_decay=0, got {self.weight_decay} (with weight decay "
                "every row has a gradient at every step: use step='dense')"
            )
        d = fields_of(self)
        tsize = TEACHER_SIZE[self.backbone]
        d["size"] = self.size or tsize
        for k, v in BACKBONE_DEFAULTS[self.backbone].items():
            d[k] = d[k] if d[k] is not None else v
        if self.backbone != "cdae":
            d["corruption"] = None
        d["mlp_scale"] = (self.mlp_scale or 1) if self.backbone == "neumf" else None
        if self.mlp_init not in models.MLP_INITS:
            raise ValueError(f"mlp_init must be one of {models.MLP_INITS}, got {self.mlp_init!r}")
        d["mlp_init"] = self.mlp_init if self.backbone == "neumf" else None
        d["device"] = models.default_device(self.device).type
        d["shapes"] = self.shapes or ("static" if d["device"] == "cuda" else "dynamic")
        d["step"] = self.step or "dense"
        if self.defer not in DEFERS:
            raise ValueError(f"defer must be one of {DEFERS}, got {self.defer!r}")
        d["defer"] = self.defer if d["step"] == "deferred" else None
        d["data_sha256"] = file_sha256(self.dataset) if data.is_file_dataset(self.dataset) else None
        unit = methods.METHODS[self.method]
        for other in methods.METHODS.values():  # another method's fields do not name this run
            d.update({k: None for k in other.FIELDS if k not in unit.FIELDS})
        unit.canonical(d)
        if unit.TEACHER:
            d["teacher_size"] = self.teacher_size or tsize
            d["teacher_seed"] = self.seed if self.teacher_seed is None else self.teacher_seed
            d["teacher_lr"] = self.teacher_lr or BACKBONE_DEFAULTS[self.backbone]["lr"]
        else:
            d["teacher_size"] = d["teacher_seed"] = d["teacher_lr"] = None
        return Config(**d)

    @property
    def has_teacher(self) -> bool:
        """Whether the run's method distils a teacher (`methods.*.TEACHER`)."""
        return methods.METHODS[self.method].TEACHER

    def key(self) -> str:
        """The run's key: the hash of its canonical configuration, a file dataset named by its bytes
        (its SHA-256), not its path, so a record is reused for the same data and only for it."""
        d = fields_of(self.canonical())
        if d["data_sha256"]:
            d["dataset"] = "file"
        return runs.config_key(keyed_fields(d))  # older records keep their keys

    def teacher(self) -> Config:
        """The configuration of this student's teacher."""
        c = self.canonical()
        return Config(
            dataset=c.dataset,
            backbone=c.backbone,
            size=c.teacher_size,
            method="none",
            seed=c.teacher_seed,
            data_seed=c.data_seed,
            subset_users=c.subset_users,
            valid_negatives=c.valid_negatives,
            epochs=c.epochs,
            patience=c.patience,
            min_epochs=c.min_epochs,
            plateau=c.plateau,
            rise=c.rise,
            rise_t=c.rise_t,
            lr=c.teacher_lr,
            weight_decay=c.weight_decay,
            n_neg=c.n_neg,
            corruption=self.corruption,
            mlp_scale=c.mlp_scale,
            mlp_init=c.mlp_init,
            shapes=c.shapes,
            step=c.step,
            defer=c.defer,
            device=self.device,
        ).canonical()


Config = dataclasses.make_dataclass(
    "Config",
    [
        (name, object, dataclasses.field(default=default))
        for unit in methods.METHODS.values()
        for name, default in unit.FIELDS.items()
    ],
    bases=(RunFields,),
    frozen=True,
)
Config.__module__ = __name__
Config.__doc__ = (
    "Every parameter of one run: `RunFields` and each method's own fields (CD's and RD's, "
    "documented in `methods`). None means the documented default (see `canonical`)."
)


@dataclass(frozen=True)
class Execution:
    """How runs are trained on this machine, never what they are: nothing here enters a run's key.
    Read from the environment once, at an entry point (`from_environment`), and passed down."""

    train: bool = True  # False: a run that is not recorded raises train.NotRecorded
    group_size: int = 1  # runs trained together in one stacked step (1 on a CPU: no faster)
    deadline: float | None = None  # unix time after which no run starts (reproduce --time-limit)
    compile: str | None = None  # torch.compile mode of the step's forward and loss (static shapes)
    deterministic: bool = (
        False  # torch.use_deterministic_algorithms (GPU runs a later window repeats)
    )
    sync_debug: str | None = (
        None  # torch.cuda.set_sync_debug_mode inside each epoch's steps (warn|error)
    )
    checkpoint_every: float | None = 300.0  # seconds between a run's checkpoints (None: none)

    @classmethod
    def from_environment(cls, environ=None) -> Execution:
        """CDLIB_NO_TRAIN, CDLIB_GROUP_SIZE, CDLIB_DEADLINE, CDLIB_COMPILE, CDLIB_DETERMINISTIC,
        CDLIB_SYNC_DEBUG and CDLIB_CHECKPOINT_EVERY (seconds, or "off"), each checked."""
        env = os.environ if environ is None else environ
        size = env.get("CDLIB_GROUP_SIZE", "1")
        if not size.isdigit() or int(size) < 1:
            raise ValueError(f"CDLIB_GROUP_SIZE must be a positive integer, got {size!r}")
        deadline = env.get("CDLIB_DEADLINE")
        raw = env.get("CDLIB_CHECKPOINT_EVERY", "300")
        try:
            every = None if raw == "off" else float(raw)
            if every is not None and not every >= 0:
                raise ValueError
        except ValueError:
            raise ValueError(
                f"CDLIB_CHECKPOINT_EVERY must be seconds (a number >= 0) or 'off', got {raw!r}"
            ) from None
        return cls(
            train=env.get("CDLIB_NO_TRAIN", "") in ("", "0"),
            group_size=int(size),
            deadline=float(deadline) if deadline else None,
            compile=env.get("CDLIB_COMPILE") or None,
            deterministic=env.get("CDLIB_DETERMINISTIC", "") not in ("", "0"),
            sync_debug=env.get("CDLIB_SYNC_DEBUG") or None,
            checkpoint_every=every,
        )


_SHA: dict = {}


def file_sha256(path: str) -> str:
    """SHA-256 of a dataset file, memoised per (path, size, modification time)."""
    p = Path(path).expanduser()
    if not p.is_file():
        data.load(path)  # raises the DataError that says what is wrong with the name
    st = p.stat()
    k = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if k not in _SHA:
        _SHA[k] = paths.sha256(p)
    return _SHA[k]


_DATASETS: dict = {}


def dataset_for(cfg: Config) -> Dataset:
    """The run's dataset (memoised per process: a notebook loads each dataset once)."""
    key = (cfg.dataset, cfg.data_sha256, cfg.data_seed, cfg.subset_users)
    if key not in _DATASETS:
        ds = data.load(cfg.dataset, seed=cfg.data_seed)
        if cfg.data_sha256 and ds.meta["sha256"].get(Path(cfg.dataset).name) != cfg.data_sha256:
            raise DataError(
                f"{cfg.dataset}: changed while in use (SHA-256 no longer {cfg.data_sha256})"
            )
        _DATASETS[key] = ds.subset(cfg.subset_users, seed=cfg.data_seed) if cfg.subset_users else ds
    return _DATASETS[key]


def build_model(cfg: Config, ds: Dataset, device=None) -> models.Recommender:
    """An untrained model of a (canonical) configuration for a dataset."""
    return models.build(
        cfg.backbone,
        ds.train,
        cfg.size,
        cfg.corruption or 0.0,
        device or cfg.device,
        cfg.mlp_scale or 1,
        cfg.step in sparse.SPARSE_STEPS,
        cfg.mlp_init,
    )
