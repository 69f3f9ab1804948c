"""Checkpoints within a run: a run stopped mid-training (a session's end, a killed worker) resumes
from the end of its last saved epoch instead of from its first, and ends as the run it would have
been, bit for bit on the same machine (`tests/test_checkpoint.py`).

A checkpoint holds, after an epoch, everything the loop carries into the next one: each member's
weights, random streams (its sampling generator and the global state its dropout draws from),
learning curve, best state and early-stopping count, its method's state (`methods.NoKD.state`),
and the optimiser of the active members. It is written atomically every `every` seconds of wall
time, to $CDLIB_CACHE/checkpoints/<key>.pt, outside git, and deleted once the run's record is
written (a teacher retrained for its missing weights: once they are cached). A checkpoint of other
runs, of other teacher weights or of another format is not used: the run starts from its first
epoch, and says why. A GPU window's machine is new each time and the window sends back records
only (`tools/gpu_window.sh`), so there a run in flight at the window's end is still lost.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import torch

from . import paths, runs
from .batches import Member, rng_state, set_rng_state

FORMAT = 1  # the layout of a checkpoint; a checkpoint of another format is not read


def path_of(keys: list[str]) -> Path:
    """Where the checkpoint of a group of runs (one run: its key) is written."""
    name = (
        keys[0]
        if len(keys) == 1
        else "group-" + hashlib.sha256(" ".join(keys).encode()).hexdigest()[:16]
    )
    return paths.cache_dir() / "checkpoints" / f"{name}.pt"


class Resume:
    """The checkpoints of one group of runs (`keys`) distilled from teachers whose weights have the
    SHA-256s `teacher_sha256` (None for a run without one): `load` the last one, `save` a new one when
    `due`, `discard` it once the records are written. It keeps the wall and CPU seconds of the parts
    run before (`earlier`), which a record adds to its own."""

    def __init__(self, keys: list[str], teacher_sha256: list[str | None], every: float):
        self.path = path_of(keys)
        self.identity = {
            "format": FORMAT,
            "keys": list(keys),
            "teacher_sha256": list(teacher_sha256),
        }
        self.every = every
        self.earlier = {"wall_seconds": 0.0, "cpu_seconds": 0.0, "parts": []}
        self._t0, self._cpu0, self._last = time.time(), time.process_time(), time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.every

    def load(self, device) -> dict | None:
        """The saved state, or None when there is none or it is not this group's (with a message)."""
        if not self.path.is_file():
            return None
        try:
            saved = torch.load(self.path, map_location=device, weights_only=True)
        except Exception as e:  # noqa: BLE001 -- a damaged file: say which, start over, keep it
            return self._refuse(f"it cannot be read ({type(e).__name__}: {e})")
        if saved.get("identity") != self.identity:
            return self._refuse(
                f"it is of other runs, teacher weights or format ({saved.get('identity')} vs "
                f"{self.identity})"
            )
        self.earlier = saved["elapsed"]
        return saved

    def _refuse(self, why: str) -> None:
        bad = self.path.with_name(self.path.name + ".unused")
        os.replace(self.path, bad)
        print(
            f"checkpoint {self.path} not used: {why}; moved to {bad}, the run starts from its first epoch",
            file=sys.stderr,
            flush=True,
        )

    def save(self, state: dict, device) -> None:
        """Write `state` (`capture`) atomically, with this group's identity and the time spent so far."""
        part = {
            "epochs": state["epoch"],
            "provenance": json.loads(
                json.dumps(runs.provenance(device), default=str)
            ),  # plain types
        }
        state = {
            **state,
            "identity": self.identity,
            "elapsed": {
                "wall_seconds": self.earlier["wall_seconds"] + time.time() - self._t0,
                "cpu_seconds": self.earlier["cpu_seconds"] + time.process_time() - self._cpu0,
                "parts": [*self.earlier["parts"], part],
            },
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
        torch.save(state, tmp)
        os.replace(tmp, self.path)
        self._last = time.monotonic()

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def capture(epoch: int, members: list[Member], active: list[Member], optimizer, device) -> dict:
    """The loop's state after `epoch` epochs: every member's, and the optimiser of the `active` ones."""
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
        "active": [members.index(m) for m in active],
        "optimizer": optimizer.state_dict(),
        "global_rng": rng_state(device),
    }


def restore(saved: dict, members: list[Member], device) -> list[Member]:
    """Put the state `capture` gave back into `members` (built as at the run's start); returns the
    active ones, whose optimiser state is `saved["optimizer"]`."""
    for m, s in zip(members, saved["members"]):
        m.model.load_state_dict(s["model"])
        m.gen.set_state(s["gen"].cpu())  # (random states are CPU tensors, whatever the device)
        m.rng = s["rng"].cpu()
        m.curve, m.seconds = s["curve"], s["seconds"]
        m.best, m.best_epoch, m.best_state = s["best"], s["best_epoch"], s["best_state"]
        m.since, m.done = s["since"], s["done"]
        m.method.load_state(s["method"])
    set_rng_state(saved["global_rng"].cpu(), device)
    return [members[i] for i in saved["active"]]
