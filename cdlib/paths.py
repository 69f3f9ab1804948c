"""Where things are, resolved in one place: the datasets ($CDLIB_DATA), the cache of downloads,
weights and prepared files ($CDLIB_CACHE), and how a file is checked (SHA-256) and written
(atomically: a reader never sees half a file)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def data_dir() -> Path | None:
    d = os.environ.get("CDLIB_DATA")
    return Path(d) if d else None


def cache_dir() -> Path:
    d = os.environ.get("CDLIB_CACHE")
    return (
        Path(d) if d else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cdlib"
    )


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
