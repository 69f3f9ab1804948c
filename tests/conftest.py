import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("CDLIB_DATA", str((ROOT / ".." / "shared" / "data").resolve()))


@pytest.fixture(scope="session")
def ml100k():
    from cdlib import data

    return data.load("ml-100k")


def _cpu_record(results, key: str, config: dict, ndcg: float) -> None:
    """A record of a CPU run with its test NDCG@10 (sampled), what the agreement tables read."""
    from cdlib import runs

    runs.write_record(
        {
            "key": key,
            "config": {"dataset": "a", "backbone": "cdae", "size": 20, "device": "cpu", **config},
            "test_sampled": {"NDCG@10": ndcg},
            "provenance": {"device": "cpu: x, 1 threads"},
        },
        results,
    )


@pytest.fixture
def cpu_record():
    """`_cpu_record`: writes a minimal CPU run record (agreement tables, the README's step section)."""
    return _cpu_record
