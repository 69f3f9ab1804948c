"""The agreement tables (cdlib/agreement.py): records of one configuration run two ways (devices,
shapes, steps), paired over seeds."""

import numpy as np
import pandas as pd

from cdlib import agreement


def test_device_agreement_pairs_records_that_differ_only_in_device(tmp_path):
    from cdlib import runs

    assert agreement.device_agreement(tmp_path).empty
    for seed, cpu, gpu in ((0, 0.30, 0.32), (1, 0.34, 0.35), (2, 0.31, None)):
        for device, value, name in (
            ("cpu", cpu, "cpu: x, 1 threads"),
            ("cuda", gpu, "NVIDIA H200"),
        ):
            if value is None:
                continue
            cfg = {
                "dataset": "a",
                "backbone": "cdae",
                "size": 20,
                "method": "cd",
                "seed": seed,
                "device": device,
                **({"shapes": "static"} if device == "cuda" else {}),
            }  # each device's default step
            runs.write_record(
                {
                    "key": f"{device}{seed}",
                    "config": cfg,
                    "test_sampled": {"NDCG@10": value},
                    "provenance": {"device": name},
                },
                tmp_path,
            )
    t = agreement.device_agreement(tmp_path)
    assert (
        len(t) == 1 and t.seeds.iloc[0] == 2 and t.gpu.iloc[0] == "NVIDIA H200"
    )  # seed 2 has no GPU twin
    assert np.isclose(t["GPU - CPU"].iloc[0], (0.02 + 0.01) / 2)
    assert np.isclose(t["CPU NDCG@10"].iloc[0], 0.32) and np.isclose(
        t["GPU NDCG@10"].iloc[0], 0.335
    )


def test_shapes_agreement_pairs_records_that_differ_only_in_the_step(tmp_path, cpu_record):
    assert agreement.shapes_agreement(tmp_path).empty
    for seed, dynamic, static in ((0, 0.30, 0.29), (1, 0.34, 0.36), (2, None, 0.31)):
        for shapes, value in (("dynamic", dynamic), ("static", static)):
            if value is None:
                continue
            cfg = {  # dynamic records predate the field
                "method": "cd",
                "seed": seed,
                **({"shapes": "static"} if shapes == "static" else {}),
            }
            cpu_record(tmp_path, f"{shapes}{seed}", cfg, value)
    t = agreement.shapes_agreement(tmp_path)
    assert len(t) == 1 and t.seeds.iloc[0] == 2  # seed 2 has no dynamic twin
    assert np.isclose(t["static - dynamic"].iloc[0], (-0.01 + 0.02) / 2)
    assert np.isclose(t["dynamic NDCG@10"].iloc[0], 0.32) and np.isclose(
        t["static NDCG@10"].iloc[0], 0.325
    )
    assert agreement.device_agreement(tmp_path).empty  # one device: no CPU-GPU pair


def test_step_agreement_pairs_the_steps_and_applies_the_one_sd_criterion(tmp_path, cpu_record):
    """Records that differ only in `step` (dense ones recorded before the field existed, and students
    whose teacher seed is their own) are paired per configuration; CD guides stay apart."""
    assert agreement.step_agreement(tmp_path).empty
    values = {  # guide: seed -> (dense, sparse)
        "teacher": {0: (0.30, 0.31), 1: (0.34, 0.33), 2: (0.32, 0.32)},
        "student": {0: (0.30, 0.20), 1: (0.31, 0.21), 2: (0.29, 0.19)},
        "hybrid": {0: (0.30, 0.30)},  # one seed: no standard deviation, no decision
    }
    for guide, by_seed in values.items():
        for seed, pair in by_seed.items():
            for step, value in zip(("dense", "sparse"), pair):
                cfg = {
                    "method": "cd",
                    "guide": guide,
                    "seed": seed,
                    "teacher_seed": seed,
                    **({"step": "sparse", "shapes": "dynamic"} if step == "sparse" else {}),
                }
                cpu_record(tmp_path, f"{guide}{step}{seed}", cfg, value)
    t = agreement.step_agreement(tmp_path).set_index("guide")
    assert t.seeds.to_dict() == {"teacher": 3, "student": 3, "hybrid": 1}
    assert pd.isna(t.loc["hybrid", "within 1 sd"])
    assert np.isclose(t.loc["teacher", "sparse - dense"], 0.0)
    assert np.isclose(t.loc["student", "sparse - dense"], -0.10)
    assert np.isclose(t.loc["teacher", "sd dense NDCG@10"], 0.02)
    assert t.loc["teacher", "within 1 sd"] is True and t.loc["student", "within 1 sd"] is False
