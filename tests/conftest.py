import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("CDLIB_DATA", str((ROOT / ".." / "shared" / "data").resolve()))


@pytest.fixture(scope="session")
def ml100k():
    from cdlib import data

    return data.load("ml-100k")
