"""tools/put_rows_probe.py: its record of deferred Adam's row writes, numpy against index_copy_."""

import importlib.util
import json

from conftest import ROOT

from cdlib import rowadam, sparse

spec = importlib.util.spec_from_file_location(
    "put_rows_probe", ROOT / "tools" / "put_rows_probe.py"
)
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)


def test_the_record_times_both_ways_and_finds_the_same_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("CDLIB_RESULTS", str(tmp_path / "results"))
    least, warmup = sparse.PUT_NUMPY_MIN, rowadam.WARMUP
    rec = json.loads(probe.write_record(("ml-100k/cdae",), rounds=1, epochs=1).read_text())
    (row,) = rec["rows"]
    assert row["dataset"] == "ml-100k" and row["run"].startswith("cdae teacher")
    assert row["same weights"] and row["index_copy_ s/epoch"] > 0 < row["numpy s/epoch"]
    assert rec["put_numpy_min"] == least and rec["provenance"]["git"]
    assert (sparse.PUT_NUMPY_MIN, rowadam.WARMUP) == (least, warmup)  # (put back)
