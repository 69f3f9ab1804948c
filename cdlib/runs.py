"""Run records: one small JSON per finished run in `results/runs/`, keyed by a hash of its full
configuration, written atomically, with provenance (git commit, packages, device, data hashes)."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import re
import statistics
import subprocess
from pathlib import Path

import pandas as pd

from . import paths

REPO = Path(__file__).resolve().parent.parent


def results_dir(path=None) -> Path:
    """`path`, else $CDLIB_RESULTS, else the repository's results/."""
    return Path(path or os.environ.get("CDLIB_RESULTS") or REPO / "results")


def readme_path(path=None) -> Path:
    """`path`, else $CDLIB_README, else the repository's README.md (whose results section
    `readme.update_readme` regenerates)."""
    return Path(path or os.environ.get("CDLIB_README") or REPO / "README.md")


def read_table(name: str, results=None) -> pd.DataFrame | None:
    """The table results/<name>.csv, or None where it is not written yet."""
    p = results_dir(results) / f"{name}.csv"
    return pd.read_csv(p) if p.is_file() else None


def config_key(config: dict) -> str:
    """16 hex digits of the SHA-256 of the configuration as canonical JSON."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


RECORD_FOLDERS = ("runs", "ials")  # the trained recommenders' records; iALS reference runs'


def record_path(key: str, results=None, folder: str = "runs") -> Path:
    """results/<folder>/<key>.json: `runs` for the trained recommenders, `ials` for iALS."""
    return results_dir(results) / folder / f"{key}.json"


def read_record(key: str, results=None, folder: str = "runs") -> dict | None:
    p = record_path(key, results, folder)
    if not p.is_file():
        return None
    with open(p) as f:
        return json.load(f)


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename: a reader never sees half a file."""
    with paths.atomic(path) as tmp, open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_record(record: dict, results=None, folder: str = "runs") -> Path:
    p = record_path(record["key"], results, folder)
    write_atomic(p, json.dumps(record, indent=1, sort_keys=True, default=str))
    return p


# the records `all_records` last read per folder, with the (name, size, mtime) of each file read
_read: dict = {}


def all_records(results=None) -> list[dict]:
    """Every record in results/runs/, in key order. The dictionaries are kept and shared between
    calls while no file in the folder changes (its names, sizes and modification times: a stat per
    file), so read them, never change them: notebook 09's agreement tables read the folder eight
    times, 2-3 s each."""
    d = results_dir(results) / "runs"
    if not d.is_dir():
        return []
    files = sorted(d.glob("*.json"))
    stamp = tuple((p.name, (s := p.stat()).st_size, s.st_mtime_ns) for p in files)
    kept = _read.get(d)
    if kept is None or kept[0] != stamp:
        kept = _read[d] = (stamp, [json.loads(p.read_text()) for p in files])
    return list(kept[1])


def git_state() -> dict:
    def git(*args):
        try:
            r = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        except OSError:  # no git installed
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    if os.environ.get(
        "CDLIB_GIT_COMMIT"
    ):  # a copy of the working tree whose .git is absent or not its own
        return {"commit": os.environ["CDLIB_GIT_COMMIT"], "dirty": None, "from": "CDLIB_GIT_COMMIT"}
    # dirty: the tracked code differs from the commit; what a reproduction rewrites while it goes on
    # (results/, figures/, the executed notebooks, the README's generated section) does not count
    status = git(
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        ".",
        ":!results",
        ":!figures",
        ":!notebooks/*.ipynb",
        ":!README.md",
    )
    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(status) if status is not None else None,
    }


@functools.cache
def has_commit(commit: str | None, ancestor: str) -> bool | None:
    """Whether the code of `commit` contains the commit `ancestor` (`git merge-base --is-ancestor`);
    None where git cannot tell (no commit recorded, no git, a commit this clone does not have)."""
    if not commit:
        return None
    try:
        r = subprocess.run(
            ["git", "merge-base", "--is-ancestor", ancestor, commit], cwd=REPO, capture_output=True
        )
    except OSError:  # no git installed
        return None
    return {0: True, 1: False}.get(r.returncode)


def _proc_cpuinfo() -> dict:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    out = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                k, _, v = line.partition(":")
                out[k.strip()] = v.strip()
    except OSError:
        pass
    return out


def device_name(device) -> str:
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    proc = _proc_cpuinfo().get("model name") or platform.processor() or platform.machine()
    return f"cpu: {proc}, {torch.get_num_threads()} threads"


# The vector extensions whose presence changes which kernels MKL and oneDNN pick on x86
VECTOR_FLAGS = (
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512_bf16",
    "avx512_vnni",
    "avx_vnni",
    "amx_tile",
)
# Variables that lower the instruction set PyTorch, MKL and oneDNN use below what the CPU has
ISA_OVERRIDES = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR")


def cpu_info() -> dict:
    """What decides how a CPU run rounds, beside the code and the packages: the instruction set
    PyTorch's kernels dispatch to (`torch.backends.cpu.get_cpu_capability()`), the CPU's vendor,
    family, model and vector flags (MKL picks its own kernels by them), any variable that lowers
    them, and the thread count (products are split by it)."""
    import torch

    info = _proc_cpuinfo()
    flags = set(info.get("flags", "").split())
    return {
        "capability": torch.backends.cpu.get_cpu_capability(),
        "vendor": info.get("vendor_id"),
        "family": info.get("cpu family"),
        "model": info.get("model"),
        "model_name": info.get("model name"),
        "flags": [f for f in VECTOR_FLAGS if f in flags],
        "threads": torch.get_num_threads(),
        "overrides": {k: os.environ[k] for k in ISA_OVERRIDES if k in os.environ},
    }


def arithmetic(prov: dict) -> dict | None:
    """The part of a CPU record's provenance that two runs must share to agree bit for bit (torch,
    instruction set, vendor, vector flags, overrides, threads); None where the record predates
    `cpu_info` or ran on a GPU."""
    cpu = prov.get("cpu")
    if cpu is None or device_kind(prov.get("device", "cpu")) != "cpu":
        return None
    return {
        "torch": prov.get("packages", {}).get("torch"),
        **{k: cpu.get(k) for k in ("capability", "vendor", "flags", "overrides", "threads")},
    }


def bit_for_bit_expected(recorded: dict, here: dict) -> bool | None:
    """Whether a run with provenance `here` should equal, to the last bit, one recorded with provenance
    `recorded` (or with any provenance in its `reproduced_on`): True or False where both say their
    arithmetic, None where the record does not. Across instruction sets runs agree only statistically."""
    mine = arithmetic(here)
    theirs = [
        a for a in map(arithmetic, [recorded, *recorded.get("reproduced_on", [])]) if a is not None
    ]
    if mine is None or not theirs:
        return None
    return mine in theirs


def threads(prov: dict) -> int | None:
    """The CPU threads a record ran with (None for a GPU record)."""
    found = re.search(r", (\d+) threads$", prov.get("device", ""))
    return int(found.group(1)) if found else None


# an epoch whose wall time is over PAUSE_FACTOR x its run's median epoch and PAUSE_S seconds beyond
# it was stopped, not slow: a worker paused by SIGSTOP, a machine suspended between sessions
# (a record of 84 epochs of ~1.1 s holds one of 4,360 s)
PAUSE_FACTOR, PAUSE_S = 20.0, 60.0


def paused_seconds(curve: list[dict]) -> float:
    """The wall seconds a record's epochs (`curve`) spent stopped: each paused epoch's time beyond
    its run's median epoch (`PAUSE_FACTOR`, `PAUSE_S`; the lower median, so that a run of two
    epochs can show one); 0 for a record without epochs. An epoch's seconds time its training
    steps only, so a pause during validation, or while the data or a teacher loaded, is not seen."""
    seconds = [e["seconds"] for e in curve if "seconds" in e]
    if not seconds:
        return 0.0
    median = statistics.median_low(seconds)
    over = [s - median for s in seconds if s > PAUSE_FACTOR * median and s - median > PAUSE_S]
    return float(sum(over))


def run_seconds(rec: dict) -> float:
    """The seconds a recorded run cost its machine. On the CPU: its process's CPU time summed over
    all its threads (`timing.cpu_seconds`, core-seconds; a pause or a busy machine does not inflate
    it), its share where runs trained as a group. Otherwise (a GPU run, a CPU record older than
    `cpu_seconds`): its wall time (`timing.wall_seconds`, a group member's share of the group's)
    less the same share of its epochs' `paused_seconds` (a group's members share its epochs and
    their pauses). NaN where the record has neither time."""
    timing = rec.get("timing", {})
    on_cpu = device_kind(rec.get("provenance", {}).get("device", "")) == "cpu"
    if on_cpu and "cpu_seconds" in timing:
        return float(timing["cpu_seconds"])
    if "wall_seconds" not in timing:
        return float("nan")
    wall = float(timing["wall_seconds"])
    share = wall / timing["group_wall_seconds"] if timing.get("group_wall_seconds") else 1.0
    return max(wall - share * paused_seconds(rec.get("curve", [])), 0.0)


def describe_arithmetic(prov: dict) -> str:
    a = arithmetic(prov)
    if a is None:
        return f"{prov.get('device', '?')} (instruction set not recorded)"
    extra = f", overrides {a['overrides']}" if a["overrides"] else ""
    return f"{a['vendor']} {a['capability']}, torch {a['torch']}, {a['threads']} threads{extra}"


def device_kind(name: str) -> str:
    """'cpu' or 'cuda' from a name as `device_name` writes it."""
    return "cpu" if name.startswith("cpu") else "cuda"


def dataset_info(ds) -> dict:
    """What a record says of its dataset: name, SHA-256 of every file read (and the path of a
    user's own file), and size."""
    out = {
        "name": ds.name,
        "sha256": ds.meta["sha256"],
        "users": ds.n_users,
        "items": ds.n_items,
        "train_interactions": int(ds.train.nnz),
    }
    if ds.meta.get("file"):
        out["file"] = ds.meta["file"]
    return out


def provenance(device, compile: str | None = None) -> dict:
    import numpy
    import pandas
    import scipy
    import torch

    return {
        "git": _LOADED_GIT,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {
            "torch": torch.__version__,
            "numpy": numpy.__version__,
            "scipy": scipy.__version__,
            "pandas": pandas.__version__,
        },
        "device": device_name(device),
        "cpu": cpu_info(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "compile": compile,
    }


# The git state of the code this process runs, taken once at import, not when a record is written:
# editing or committing the tree while a long run goes on does not relabel the code it loaded.
_LOADED_GIT = git_state()
