"""Table 8 timings: a measuring run adds its device's rows and keeps the others."""

import pandas as pd
import pytest
import torch

from cdlib import bench, config, runs


def test_timing_table_keeps_other_devices_and_replaces_its_own(ml100k):
    def row(dataset, backbone, device):
        return {
            "dataset": dataset,
            "label": "Teacher",
            "backbone": backbone,
            "size": 1,
            "n_params": 1,
            "batch": 1,
            "latency_ms": 99.0,
            "throughput_users_s": 1.0,
            "device": device,
        }

    keep = pd.DataFrame(
        [
            row("ml-100k", "cdae", "cpu: old"),
            row("ml-100k", "cdae", "NVIDIA H100"),
            row("ml-1m", "cdae", "cpu: old"),
            row("ml-100k", "neumf", "cpu: old"),
        ]
    )
    t = bench.timing_table(["ml-100k"], ["cdae"], ["cpu"], batch=16, keep=keep)
    new = t[t.latency_ms != 99.0]
    assert len(new) == 1 + len(config.STUDENT_SIZES["cdae"])
    assert set(new["size"]) == {config.TEACHER_SIZE["cdae"], *config.STUDENT_SIZES["cdae"]}
    assert (new.device.map(runs.device_kind) == "cpu").all() and (new.batch == 16).all()
    kept = t[t.latency_ms == 99.0]
    assert sorted(zip(kept.dataset, kept.backbone, kept.device)) == [
        ("ml-100k", "cdae", "NVIDIA H100"),
        ("ml-100k", "neumf", "cpu: old"),
        ("ml-1m", "cdae", "cpu: old"),
    ]
    assert list(t.columns) == list(keep.columns)


def test_group_table_times_each_kind_of_run_per_group_size():
    from cdlib import data

    ds = data.load("ml-100k").subset(100)
    t = bench.group_table("ml-100k", ds, "cpu", sizes=(1, 2), student_size=4, epochs=1)
    assert list(t.group) == [1, 2] * 4 and (t["seconds per epoch"] > 0).all()
    assert t["gain over one after another"].iloc[0] == 1.0
    assert t["GFLOP/s"].notna().tolist() == [True] * 4 + [False] * 4  # CDAE only


def test_bench_refuses_cuda_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit):
        bench.main(["--device", "cuda", "--dataset", "ml-100k"])
