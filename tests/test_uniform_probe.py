"""tools/uniform_probe.py: its record of both ways of drawing CD's uniform K_u, on a dataset of few
items (every row takes the keys) and one of many (most rows take their numbers)."""

import importlib.util
import json

from conftest import ROOT

spec = importlib.util.spec_from_file_location("uniform_probe", ROOT / "tools" / "uniform_probe.py")
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)


def test_the_record_times_both_ways_and_finds_them_equal(tmp_path, monkeypatch):
    monkeypatch.setenv("CDLIB_RESULTS", str(tmp_path / "results"))
    rec = json.loads(probe.write_record(("ml-100k", "amazon-music")).read_text())
    assert [(r["dataset"], r["users a batch"]) for r in rec["draws"]] == [
        ("ml-100k", 16),
        ("ml-100k", 64),
        ("amazon-music", 16),
        ("amazon-music", 64),
    ]
    for r in rec["draws"]:
        assert r["same numbers"] and r["same items"], r
        assert r["torch.rand s"] > 0 < r["randkernel.rand s"]
        assert r["Gumbel keys s"] > 0 < r["uniform_missing s"]
    few, many = rec["draws"][1], rec["draws"][3]
    assert few["rows by their keys"] == 1.0
    assert 0 < many["rows by their keys"] < 0.05  # ties: about 1 row in 200 here
    assert rec["provenance"]["git"] and rec["wall_seconds"] > 0
