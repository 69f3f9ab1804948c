"""tools/scoring_probe.py: its record of both ways of validating a NeuMF and of ranking by a CDAE."""

import importlib.util
import json

from conftest import ROOT

spec = importlib.util.spec_from_file_location("scoring_probe", ROOT / "tools" / "scoring_probe.py")
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)


def test_the_record_times_both_ways_and_finds_them_equal(tmp_path, monkeypatch):
    monkeypatch.setenv("CDLIB_RESULTS", str(tmp_path / "results"))
    rec = json.loads(probe.write_record(("ml-100k",)).read_text())
    assert [r["model"] for r in rec["validation"]] == ["NeuMF d=64", "NeuMF d=8"]
    assert [r["model"] for r in rec["ranking"]] == ["CDAE H=20", "CDAE H=200"]
    for r in rec["validation"]:
        assert r["same metrics"] and r["same scores"] and r["per pair s"] > 0 < r["chunked s"]
    for r in rec["ranking"]:
        assert r["same ranking"] and r["1024 users s"] > 0 < r["<= 256 users s"]
    assert rec["provenance"]["git"] and rec["wall_seconds"] > 0
