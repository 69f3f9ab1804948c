"""tools/refresh_probe.py: its feature-major tower is NeuMF's score_all up to rounding, and the
recorded share counts each run's refreshes from the epoch its student guides."""

import importlib.util

import torch
from conftest import ROOT

from cdlib import runs

spec = importlib.util.spec_from_file_location("refresh_probe", ROOT / "tools" / "refresh_probe.py")
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)


def test_the_feature_major_tower_is_score_all_up_to_rounding():
    model, _ = probe.perturbed_neumf("ml-100k", 8)
    users = torch.arange(100)
    want = model.score_all(users)
    got = probe.feature_major(model, users, max_elems=1 << 14)  # several chunks
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_the_recorded_share_counts_refreshes_from_the_student_s_first_epoch(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("CDLIB_RESULTS", str(tmp_path))
    for key, guide, switch in (("a", "student", None), ("b", "hybrid", 50)):
        runs.write_record(
            {
                "key": key,
                "config": {
                    "dataset": "x",
                    "backbone": "cdae",
                    "method": "cd",
                    "guide": guide,
                    "switch_epoch": switch,
                    "refresh_every": 1,
                },
                "epochs_run": 100,
                "timing": {
                    "refresh_seconds_mean": 1.0,
                    "epoch_seconds_mean": 2.0,
                    "train_seconds": 200.0,
                },
            },
            tmp_path,
        )
    probe.recorded_share()
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[2:] == ["hybrid", "1", "1.00", "2.00", "25%"]  # 50 refreshes of 200 s
    assert lines[2].split()[2:] == ["student", "1", "1.00", "2.00", "50%"]
