"""Checkpoints within a run: a run stopped mid-training (a session's end, a killed worker) resumes
from the end of its last saved epoch instead of from its first, and ends as the run it would have
been, bit for bit on the same arithmetic (`tests/test_checkpoint.py`).

A checkpoint holds, after an epoch, everything the loop carries into the next one: each member's
weights, random streams (its sampling generator and the global state its dropout draws from),
learning curve, best state and early-stopping count, its method's state (`methods.NoKD.state`),
and the optimiser of the active members. It is written atomically every `every` seconds of wall
time, to $CDLIB_CACHE/checkpoints/<key>.pt, outside git, and deleted once the run's record is
written (a teacher retrained for its missing weights: once they are cached). A checkpoint of other
runs, of other teacher weights or of another format, or one that cannot be read or does not fit its
runs, is set aside: the run starts from its first epoch, and says why; so is one written on other arithmetic (another instruction set, torch or
thread count, `runs.arithmetic`), from which the run would not end as it would have here. The code
is not compared: as for records, a change to the code that changes training must change the
configuration. A GPU window's machine is new each time and the window sends back records only
(`tools/gpu_window.sh`), so there a run in flight at the window's end is still lost.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
import sys
import time
from pathlib import Path

import torch

from . import paths, runs
from .batches import Member, rng_state, set_rng_state

FORMAT = 1  # the layout of a checkpoint; a checkpoint of another format is not read


def folder() -> Path:
    return paths.cache_dir() / "checkpoints"


def path_of(keys: list[str]) -> Path:
    """Where the checkpoint of a group of runs (one run: its key) is written."""
    name = (
        keys[0]
        if len(keys) == 1
        else "group-" + hashlib.sha256(" ".join(keys).encode()).hexdigest()[:16]
    )
    return folder() / f"{name}.pt"


def nothing_earlier() -> dict:
    """`Resume.earlier` of a run not resumed: no part before this one."""
    return {"wall_seconds": 0.0, "cpu_seconds": 0.0, "parts": []}


class NotThisRun(ValueError):
    """A checkpoint that was read but does not fit the runs it is named for."""


class Resume:
    """The checkpoints of one group of runs (`keys`) distilled from teachers whose weights have the
    SHA-256s `teacher_sha256` (None for a run without one), trained on `device` (with `compile`):
    `load` the last one, `save` a new one when `due`, `discard` it once the records are written. It
    keeps the wall and CPU seconds of the parts run before (`earlier`), which a record adds to its
    own, and the epoch count and provenance of each (`parts`)."""

    def __init__(
        self,
        keys: list[str],
        teacher_sha256: list[str | None],
        every: float,
        device="cpu",
        compile: str | None = None,
    ):
        self.path = path_of(keys)
        self.keys, self.teacher_sha256 = list(keys), list(teacher_sha256)
        self.device, self.compile = device, compile
        self.every = every
        self.earlier = nothing_earlier()
        self._t0, self._cpu0, self._last = time.time(), time.process_time(), time.monotonic()

    @functools.cached_property
    def provenance(self) -> dict:
        """This machine's (`runs.provenance`), in plain types; read once the loop has checked the
        device, on the first load or save."""
        return json.loads(json.dumps(runs.provenance(self.device, self.compile), default=str))

    @functools.cached_property
    def identity(self) -> dict:
        """What a checkpoint must share with this group to be resumed by it."""
        return {
            "format": FORMAT,
            "keys": self.keys,
            "teacher_sha256": self.teacher_sha256,
            # where a run would not end as it would have here
            "arithmetic": runs.arithmetic(self.provenance) or self._gpu(),
        }

    def _gpu(self) -> dict:
        """A GPU's arithmetic: its name, torch and CUDA, the compile mode, deterministic kernels."""
        prov = self.provenance
        return {
            "device": prov["device"],
            "torch": prov["packages"]["torch"],
            "cuda": torch.version.cuda,
            "compile": prov["compile"],
            "deterministic": prov["deterministic_algorithms"],
        }

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.every

    def load(self) -> dict | None:
        """The saved state, on the CPU, or None when there is none or it is not this group's (then
        set aside, with a message)."""
        killed = self.path.parent.glob(f".{self.path.name}.tmp*")  # saves' (`paths.atomic`)
        for tmp in killed:
            tmp.unlink(missing_ok=True)
        if not self.path.is_file():
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
            theirs, earlier = saved["identity"], saved["elapsed"]
            if not isinstance(theirs, dict):
                raise TypeError(f"an identity of type {type(theirs).__name__}")
        except torch.OutOfMemoryError:
            raise
        except Exception as e:  # noqa: BLE001 -- a damaged file never stops a run: set it aside
            return self.refuse(f"it cannot be read ({type(e).__name__}: {e})")
        if theirs != self.identity:
            what = [k for k in self.identity if theirs.get(k) != self.identity[k]]
            return self.refuse(
                f"its {', '.join(what)} {'differ' if len(what) > 1 else 'differs'} "
                f"({[theirs.get(k) for k in what]} vs {[self.identity[k] for k in what]})"
            )
        self.earlier = earlier
        return saved

    def refuse(self, why: str) -> None:
        """Set the checkpoint aside (`<name>.unused-<time>`, kept), saying why: the run starts over."""
        self.earlier = nothing_earlier()
        bad = self.path.with_name(f"{self.path.name}.unused-{time.strftime('%Y%m%dT%H%M%S')}")
        try:
            os.replace(self.path, bad)
        except FileNotFoundError:  # (another process set it aside first)
            pass
        print(
            f"checkpoint {self.path} not used: {why}; moved to {bad}, the run starts from its "
            "first epoch",
            file=sys.stderr,
            flush=True,
        )

    def save(self, state: dict) -> None:
        """Write `state` (`capture`) atomically, with this group's identity and the time spent so far."""
        part = {"epochs": state["epoch"], "provenance": self.provenance}
        state = {
            **state,
            "identity": self.identity,
            "elapsed": {
                "wall_seconds": self.earlier["wall_seconds"] + time.time() - self._t0,
                "cpu_seconds": self.earlier["cpu_seconds"] + time.process_time() - self._cpu0,
                "parts": [*self.earlier["parts"], part],
            },
        }
        with paths.atomic(self.path) as tmp:
            torch.save(state, tmp)
        self._last = time.monotonic()

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def sweep(finished) -> int:
    """Delete the checkpoints of single runs that `finished(key)` says are done (recorded, their
    weights cached here: a record that came from elsewhere, a stop between a record and its
    checkpoint's deletion; not a recorded teacher being retrained for its weights); returns how
    many."""
    gone = 0
    for path in folder().glob("*.pt") if folder().is_dir() else []:
        if not path.name.startswith("group-") and finished(path.stem):
            path.unlink(missing_ok=True)
            gone += 1
    return gone


def check_optimizer(optimizer) -> None:
    """NotThisRun where a restored optimiser's moments do not have their parameters' shapes."""
    for p, st in optimizer.state.items():
        for k in ("exp_avg", "exp_avg_sq"):
            if k in st and st[k].shape != p.shape:
                raise NotThisRun(
                    f"its optimiser's {k} is {tuple(st[k].shape)}, not {tuple(p.shape)}"
                )


def saved_epochs(path: Path) -> int | None:
    """The epochs the checkpoint at `path` holds, or None where there is none or it cannot be read."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    except (OSError, pickle.UnpicklingError, EOFError, RuntimeError, KeyError, TypeError):
        return None


def capture(epoch: int, members: list[Member], active: list[Member], optimizer, device) -> dict:
    """The loop's state after `epoch` epochs: every member's, and the optimiser of the `active` ones."""
    at = {id(m): i for i, m in enumerate(members)}
    return {
        "epoch": epoch,
        "members": [
            {
                "model": m.model.state_dict(),
                "gen": m.gen.get_state(),
                "rng": m.rng,
                "curve": m.curve,
                "seconds": m.seconds,
                "best": m.best,
                "best_epoch": m.best_epoch,
                "best_state": m.best_state,
                "since": m.since,
                "done": m.done,
                "method": m.method.state(),
            }
            for m in members
        ],
        "active": [at[id(m)] for m in active],
        "optimizer": optimizer.state_dict(),
        "global_rng": rng_state(device),
    }


def restore(saved: dict, members: list[Member], device) -> list[Member]:
    """Put the state `capture` gave (loaded on the CPU) back into `members`, built as at the run's
    start, on `device`; returns the active ones, whose optimiser state is `saved["optimizer"]`.
    NotThisRun, before anything is changed, where the state does not fit the members."""
    states = saved.get("members", [])
    if len(states) != len(members) or not all(0 <= i < len(members) for i in saved["active"]):
        raise NotThisRun(f"{len(states)} members saved for {len(members)} runs")
    for m, s in zip(members, states):
        mine = {k: v.shape for k, v in m.model.state_dict().items()}
        if {k: v.shape for k, v in s["model"].items()} != mine:
            raise NotThisRun("its weights' names or shapes differ from the model's")
    for m, s in zip(members, states):
        m.model.load_state_dict(s["model"])
        m.gen.set_state(s["gen"])  # (random states are CPU tensors, whatever the device)
        m.rng = s["rng"]
        m.curve, m.seconds = s["curve"], s["seconds"]
        m.best, m.best_epoch, m.since, m.done = s["best"], s["best_epoch"], s["since"], s["done"]
        m.best_state = (
            None
            if s["best_state"] is None
            else {k: v.to(device) for k, v in s["best_state"].items()}
        )
        m.method.load_state(s["method"], device)
    set_rng_state(saved["global_rng"], device)
    return [members[i] for i in saved["active"]]
