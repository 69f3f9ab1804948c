"""Where things are, resolved in one place: the datasets ($CDLIB_DATA), the cache of downloads,
weights and prepared files ($CDLIB_CACHE), and how a file is checked (SHA-256) and written
(atomically: a reader never sees half a file)."""

from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def atomic(path: Path):
    """Yield a temporary file beside `path` (.<name>.tmp<pid>) to write, renamed to `path` once the
    block ends without an exception: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    yield tmp
    os.replace(tmp, path)


def write_bytes(path: Path, data: bytes) -> None:
    with atomic(path) as tmp:
        tmp.write_bytes(data)
