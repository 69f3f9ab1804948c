"""tools/refresh_probe.py: its record of both towers, timed and ranking trained models."""

import importlib.util
import json

from conftest import ROOT

from cdlib import train

spec = importlib.util.spec_from_file_location("refresh_probe", ROOT / "tools" / "refresh_probe.py")
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)


def test_the_record_times_both_towers_and_ranks_every_cached_neumf(tmp_path, monkeypatch):
    """--agreement's record: both towers timed on a dataset, and the rankings of the one NeuMF run
    trained (weights cached) in a results directory of its own, not a CDAE run's."""
    monkeypatch.setenv("CDLIB_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("CDLIB_CACHE", str(tmp_path / "cache"))
    tiny = dict(dataset="ml-100k", subset_users=100, epochs=1, min_epochs=1, device="cpu")
    neumf = train.Config(backbone="neumf", size=4, **tiny).canonical()
    for cfg in (neumf, train.Config(backbone="cdae", size=4, **tiny).canonical()):
        train.run(cfg, tmp_path / "results", progress=False)
    rec = json.loads(probe.write_record(8, datasets=("ml-100k",)).read_text())
    (t,) = rec["timings"]
    assert t["dataset"] == "ml-100k" and t["item-major s"] > 0 and t["feature-major s"] > 0
    assert 0 < t["largest score difference"] < 1e-5
    assert t["refresh item-major s"] > 0 and t["refresh feature-major s"] > 0
    (r,) = rec["rankings"]
    assert r["key"] == neumf.key() and r["users"] == 100 and r["k"] == 100
    assert r["identical lists"] > 0.9 and r["largest gap at a difference"] < 1e-5
    assert rec["provenance"]["git"] and rec["wall_seconds"] > 0
