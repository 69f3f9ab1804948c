"""The training loop: one or several runs of one dataset and backbone trained together, each with
its own random streams, method, early stopping and learning curve (`fit_group`; `fit` for one).
It reads and writes no file but its checkpoints (`checkpoint`, given `resume`): `train` stores what
it returns.

Early stopping on validation NDCG@10 (sampled protocol, the validation's own negatives), patience
`patience` epochs, never before `min_epochs`, nor while the run is on its initial plateau, nor while
its validation still rises (`still_rising`), under the cap `epochs`; the test metrics are those of
the best validation epoch (METHOD.md "Evaluation protocol", "A fair comparison").
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import checkpoint, index, losses, methods, metrics, models, rowadam, sparse
from .batches import Member, dynamic_batches, plan_capacities, rng_state, static_batches
from .config import Config, Execution, build_model
from .dataset import Dataset


def fit(
    cfg: Config,
    ds: Dataset,
    teacher=None,
    progress: bool = True,
    desc: str = "",
    track_test: bool = False,
    execution: Execution | None = None,
) -> dict:
    """Train one model of `cfg` (canonical) on `ds`: a group of one (`fit_group`)."""
    return fit_group([cfg], ds, [teacher], progress, desc, track_test, execution)[0]


# What the members of a group share: the data, and what stacks their parameters and optimiser state
STACKED = (
    "dataset",
    "data_sha256",
    "data_seed",
    "subset_users",
    "valid_negatives",
    "backbone",
    "size",
    "mlp_scale",
    "corruption",
    "batch_size",
    "shapes",
    "step",
    "defer",
    "lr",
    "weight_decay",
    "device",
)


def check_group(cfgs) -> None:
    """Refuse, before training, a group whose members cannot be trained in one stacked step."""
    if not cfgs:
        raise ValueError("a group needs at least one run")
    first = dataclasses.asdict(cfgs[0])
    for c in cfgs[1:]:
        d = dataclasses.asdict(c)
        bad = [f"{k}: {first[k]!r} vs {d[k]!r}" for k in STACKED if d[k] != first[k]]
        if bad:
            raise ValueError(
                f"runs {cfgs[0].key()} and {c.key()} cannot share a group ({'; '.join(bad)})"
            )


class Stack:
    """The trainable state of a group's active members: for one member its model's own parameters;
    for several, one tensor per parameter with a leading member dimension, of which each member's
    parameters are views, trained by one stacked forward pass (the model's `stacked_pair_logits`). One
    Adam over it is each member's Adam: its update is element-wise. `compile`: a torch.compile mode
    ("default", "reduce-overhead": CUDA graphs, ...) for the step's forward pass and loss, whole-graph
    (a host wait in the step fails to compile instead of falling back), or None for eager."""

    def __init__(self, members: list[Member], old: Stack | None = None, compile: str | None = None):
        self.members = members
        cfg, model = members[0].cfg, members[0].model
        names = [n for n, _ in model.named_parameters()]
        saved = old.adam_state() if old is not None else {}
        if len(members) == 1:
            self.params = None
            self.opt = (
                rowadam.RowAdam(
                    model.parameters(),
                    lr=cfg.lr,
                    weight_decay=cfg.weight_decay,
                    masked=cfg.shapes == "static",
                    deferred=cfg.step == "deferred",
                    defer_all=cfg.defer == "all",
                )
                if cfg.step in sparse.SPARSE_STEPS
                else torch.optim.Adam(
                    model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True
                )
            )
        else:
            self.params = {
                n: torch.stack(
                    [m.model.get_parameter(n).detach() for m in members]
                ).requires_grad_()
                for n in names
            }
            for g, m in enumerate(members):
                for n in names:
                    m.model.get_parameter(n).data = self.params[n].data[g]
            self.opt = torch.optim.Adam(
                self.params.values(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True
            )
        self.compile = compile
        self._loss = (
            torch.compile(self._eager_loss, mode=compile, fullgraph=True)
            if compile
            else self._eager_loss
        )
        for n in names if saved else []:
            states = [saved[(id(m), n)] for m in members]
            if self.params is None:
                self.opt.state[model.get_parameter(n)] = states[0]
            else:
                self.opt.state[self.params[n]] = {
                    "step": states[0]["step"],
                    **{k: torch.stack([s[k] for s in states]) for k in ("exp_avg", "exp_avg_sq")},
                }

    def adam_state(self) -> dict:
        """Each member's Adam state per parameter name."""
        out = {}
        for g, m in enumerate(self.members):
            for n, p in m.model.named_parameters():
                st = self.opt.state.get(p if self.params is None else self.params[n])
                if st:
                    out[(id(m), n)] = {
                        "step": st["step"].clone(),
                        **{
                            k: (st[k] if self.params is None else st[k][g]).clone()
                            for k in ("exp_avg", "exp_avg_sq")
                        },
                    }
        return out

    def loss(self, batches: list[dict]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The group's loss, the sum of its members' L_CF + method term, and each member's (detached).
        With a compile mode (static shapes only) a torch.compile'd function: a few graphs, as
        Dynamo leaves a shape symbolic once it has changed (reduce-overhead records a CUDA graph per
        distinct shape, of which `plan_capacities` makes few)."""
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
            return torch.stack(
                [torch.cat([b[key], b[key].new_zeros(pad - len(b[key]))]) for b in batches]
            )

        x = None if batches[0]["x"] is None else torch.stack([b["x"] for b in batches])
        z = self.members[0].model.stacked_pair_logits(
            self.params,
            torch.stack([b["users"] for b in batches]),
            padded("rows"),
            padded("items"),
            x,
        )
        return [z[g, :k] for g, k in enumerate(n)]


def fit_group(
    cfgs: list[Config],
    ds: Dataset,
    teachers=None,
    progress: bool = True,
    desc: str = "",
    track_test: bool = False,
    execution: Execution | None = None,
    resume: checkpoint.Resume | None = None,
) -> list[dict]:
    """Train the runs `cfgs` (canonical, one dataset, stackable: `check_group`) together, each step
    one stacked forward and backward pass over the active members; returns, per run, {model, curve,
    best_epoch, timing}. Each run ends when its validation NDCG@10 has not improved for `patience`
    epochs, once it has run `min_epochs` epochs and left the initial plateau (its best validation
    NDCG@10 above `plateau` x that of the most-popular ranking), or at its cap `epochs`; a run that
    ends keeps its best state and leaves the stack. A member's losses and random streams are its
    own, so a run trained alone (a group of one) is the same run it always was. track_test adds each
    epoch's test HR@10 and NDCG@10 (sampled) to the curve, for analyses of the protocol only: nothing
    is chosen on them, and they draw no random numbers, so the run is the same. `execution` gives the
    step's compile mode, determinism and sync debugging (`config.Execution`; none of it is read here
    from the environment). `resume`: the group's checkpoints (`checkpoint.Resume`), from the last of
    which it starts and to which it saves every `resume.every` seconds."""
    check_group(cfgs)
    ex = execution or Execution()
    teachers = list(teachers) if teachers is not None else [None] * len(cfgs)
    dev = models.default_device(cfgs[0].device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"run {cfgs[0].key()} asks for device 'cuda', and this machine has no CUDA device"
        )
    if ex.compile and cfgs[0].shapes != "static":
        raise ValueError(
            f"compile={ex.compile!r} (CDLIB_COMPILE) needs static shapes (Config.shapes='static'), "
            f"not {cfgs[0].shapes!r}"
        )
    if cfgs[0].step in sparse.SPARSE_STEPS and (len(cfgs) > 1 or ex.compile):
        raise ValueError(
            f"run {cfgs[0].key()}: step={cfgs[0].step!r} trains one run at a time and eagerly, not "
            + (f"in a group of {len(cfgs)}" if len(cfgs) > 1 else f"compiled ({ex.compile!r})")
            + " (CDLIB_GROUP_SIZE=1, CDLIB_COMPILE unset; or step='dense')"
        )
    if ex.compile:  # one process trains many models and shapes, each a graph of one function
        for name in ("recompile_limit", "accumulated_recompile_limit", "cache_size_limit"):
            if hasattr(
                torch._dynamo.config, name
            ):  # the names of PyTorch 2.6+, then of earlier ones
                setattr(torch._dynamo.config, name, 1024)
    if ex.deterministic:  # GPU runs that a later window can repeat
        torch.use_deterministic_algorithms(True, warn_only=True)
    positives = index.UserItems(ds.train, dev)

    def start_members() -> list[Member]:
        out = []
        for cfg, teacher in zip(cfgs, teachers):
            torch.manual_seed(cfg.seed)
            gen = torch.Generator(device=dev).manual_seed(cfg.seed)
            model = build_model(cfg, ds, dev)
            out.append(
                Member(cfg, model, methods.build(cfg, positives, teacher), gen, rng_state(dev))
            )
        return out

    members = start_members()
    popularity = metrics.evaluate(
        metrics.Popularity(ds, dev), ds, "valid", "sampled", valid_negatives=cfgs[0].valid_negatives
    )["NDCG@10"]
    stack, start = None, 0
    saved = resume.load() if resume is not None else None
    if saved is not None:  # resume from the end of the checkpoint's epoch
        try:
            stack = Stack(checkpoint.restore(saved, members, dev), compile=ex.compile)
            stack.opt.load_state_dict(saved["optimizer"])
            checkpoint.check_optimizer(stack.opt)
            start = saved["epoch"]
        except torch.OutOfMemoryError:
            raise  # (a group too large: `train` splits it)
        except Exception as e:  # noqa: BLE001 -- a checkpoint never stops a run: start over
            resume.refuse(f"it does not fit these runs ({type(e).__name__}: {e})")
            stack, members = None, start_members()
        del saved  # (its tensors, copied into the members and the optimiser)
    if stack is None:
        stack = Stack(members, compile=ex.compile)
    c0, cap = cfgs[0], max(c.epochs for c in cfgs)
    bar = tqdm(
        range(start, cap),
        initial=start,
        total=cap,
        disable=not progress,
        leave=False,
        mininterval=2.0,
        desc=desc
        or f"{Path(c0.dataset).name} {c0.backbone}-{c0.size} "
        f"{'/'.join(dict.fromkeys(c.method for c in cfgs))}"
        + (f" x{len(cfgs)}" if len(cfgs) > 1 else ""),
    )
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
        capacities = (
            plan_capacities(perms, positives, c0.batch_size) if c0.shapes == "static" else None
        )
        debug = ex.sync_debug if dev.type == "cuda" else None
        if debug:  # "warn" or "error" at every wait of the host on the GPU inside the epoch's steps
            torch.cuda.set_sync_debug_mode(debug)
        for step, s in enumerate(range(0, ds.n_users, c0.batch_size)):
            users = [perm[s : s + c0.batch_size] for perm in perms]
            batches = (
                dynamic_batches(active, positives, users)
                if capacities is None
                else static_batches(active, positives, users, capacities[step])
            )
            loss, terms = stack.loss(batches)
            for total, term in zip(totals, terms):
                total += term
            stack.opt.zero_grad(set_to_none=True)
            loss.backward()
            stack.opt.step()
            n_batches += 1
        if isinstance(stack.opt, rowadam.RowAdam):
            stack.opt.flush()  # deferred: every row's pending steps, before validation reads them
        if debug:
            torch.cuda.set_sync_debug_mode(0)
        seconds = time.perf_counter() - t0
        for m, total in zip(active, totals):
            _end_epoch(m, epoch, total.item() / n_batches, seconds, ds, popularity, track_test)
        if any(m.done for m in active):
            if (
                len(active) > 1
            ):  # every member leaves the old stack, its parameters in their own storage
                for m in active:
                    for p in m.model.parameters():
                        p.data = p.data.clone()
            left = [m for m in active if not m.done]
            if not left:
                break
            stack = Stack(left, stack, ex.compile)
        if resume is not None and resume.due():
            resume.save(checkpoint.capture(epoch + 1, members, stack.members, stack.opt, dev))
        lead = max(stack.members, key=lambda m: m.best)
        bar.set_postfix(
            loss=f"{lead.curve[-1]['loss']:.4f}",
            ndcg10=f"{lead.best:.4f}",  # drawn at most every 2 s
            **({"runs": len(stack.members)} if len(members) > 1 else {}),
            refresh=False,
        )
    out = []
    for m in members:
        m.model.load_state_dict(m.best_state)
        m.model.eval()
        timing = {
            "train_seconds": float(sum(m.seconds)),
            "epoch_seconds_mean": float(np.mean(m.seconds)),
        }
        if m.method.refresh_seconds:
            timing["refresh_seconds_mean"] = float(np.mean(m.method.refresh_seconds))
        out.append(
            {
                "model": m.model,
                "curve": m.curve,
                "best_epoch": m.best_epoch,
                "timing": timing,
                "popularity_valid_NDCG@10": popularity,
            }
        )
    return out


def _end_epoch(
    m: Member, epoch: int, mean_loss: float, seconds: float, ds, popularity: float, track_test: bool
) -> None:
    """A member's validation, learning curve, best state and early stopping after an epoch."""
    cfg = m.cfg
    val = metrics.evaluate(m.model, ds, "valid", "sampled", valid_negatives=cfg.valid_negatives)
    m.seconds.append(seconds)
    m.curve.append(
        {
            "epoch": epoch + 1,
            "loss": mean_loss,
            "valid_HR@10": val["HR@10"],
            "valid_NDCG@10": val["NDCG@10"],
            "seconds": seconds,
        }
    )
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
            m.done = not still_rising(m.curve, cfg.patience, cfg.rise, cfg.rise_t)
    if epoch + 1 >= cfg.epochs:
        m.done = True


def rising(curve: list[dict], window: int) -> tuple[float, float] | None:
    """The least-squares line through the last `window` validation NDCG@10s of a learning curve:
    its rise over them as a fraction of the curve's best, and its slope in standard errors (the
    epochs are not independent, so read it as a size, not a p-value; inf for a rising straight
    line). None for a curve shorter than `window` or a window under 3 epochs."""
    if window < 3 or len(curve) < window:
        return None
    v = np.array([e["valid_NDCG@10"] for e in curve[-window:]])
    x = np.arange(window) - (window - 1) / 2
    slope = (x @ v) / (x @ x)
    resid = v - v.mean() - slope * x
    se = float(np.sqrt((resid @ resid) / (window - 2) / (x @ x)))
    best = max(e["valid_NDCG@10"] for e in curve)
    t = slope / se if se > 0 else (np.inf if slope > 0 else 0.0)
    return float(slope * (window - 1) / best), float(t)


def still_rising(curve: list[dict], patience: int, rise: float | None, rise_t: float) -> bool:
    """Whether a run that early stopping would end after `patience` epochs without a new best is
    still rising (`Config.rise`): its last `patience` epochs' line up by more than `rise` x its best
    with a slope t of `rise_t` or more (`rising`). Never with `rise` None."""
    if rise is None or not curve or not patience:
        return False
    got = rising(curve, patience)
    return got is not None and got[0] > rise and got[1] >= rise_t


def evaluate(model, ds, cfg) -> dict:
    """A trained model's metrics on both splits and protocols (`metrics.evaluate_all`)."""
    return metrics.evaluate_all(model, ds, cfg.valid_negatives)
