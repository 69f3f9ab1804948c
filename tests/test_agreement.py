"""The agreement tables (cdlib/agreement.py): records of one configuration run two ways (devices,
shapes, steps, refresh towers), paired over seeds."""

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
                # a dense run of today names its step and shapes: the same configuration
                named = seed == 2 and step == "dense"
                cfg = {
                    "method": "cd",
                    "guide": guide,
                    "seed": seed,
                    "teacher_seed": seed,
                    **({"step": "sparse", "shapes": "dynamic"} if step == "sparse" else {}),
                    **({"step": "dense", "shapes": "dynamic"} if named else {}),
                }
                cpu_record(tmp_path, f"{guide}{step}{seed}", cfg, value)
    t = agreement.step_agreement(tmp_path).set_index("guide")
    assert t.seeds.to_dict() == {"teacher": 3, "student": 3, "hybrid": 1}
    assert pd.isna(t.loc["hybrid", "within 1 sd"])
    assert np.isclose(t.loc["teacher", "sparse - dense"], 0.0)
    assert np.isclose(t.loc["student", "sparse - dense"], -0.10)
    assert np.isclose(t.loc["teacher", "sd dense NDCG@10"], 0.02)
    assert t.loc["teacher", "within 1 sd"] is True and t.loc["student", "within 1 sd"] is False
    # equivalence (TOST) at +-1.35% of the dense mean: teacher's differences (+.01, -.01, 0) have too
    # much spread over 3 seeds to show it; the student's are far outside; at +-10% the teacher's pass
    from scipy import stats

    d, bound = np.array([0.01, -0.01, 0.0]), 0.0135 * 0.32
    tost = max(
        stats.ttest_1samp(d, -bound, alternative="greater").pvalue,
        stats.ttest_1samp(d, bound, alternative="less").pvalue,
    )
    assert np.isclose(t.loc["teacher", "TOST p"], tost) and t.loc["teacher", "equivalent"] is False
    assert t.loc["student", "TOST p"] > 0.99 and pd.isna(t.loc["hybrid", "TOST p"])
    wide = agreement.step_agreement(tmp_path, margin=0.10).set_index("guide")
    assert wide.loc["teacher", "equivalent"] is True and wide.loc["student", "equivalent"] is False


def test_step_equivalence_pools_each_seed_over_the_configurations_before_testing(
    tmp_path, cpu_record
):
    """Per dataset: each seed's relative difference averaged over the configurations that have it
    with both steps, then a t interval and TOST over the seeds (seed 3 lacks a configuration: out)."""
    from scipy import stats

    values = {  # (size, seed) -> (dense, deferred)
        (20, 0): (0.40, 0.404),
        (20, 1): (0.42, 0.418),
        (20, 2): (0.38, 0.381),
        (20, 3): (0.44, 0.44),
        (8, 0): (0.20, 0.199),
        (8, 1): (0.22, 0.221),
        (8, 2): (0.21, 0.210),
    }
    for (size, seed), pair in values.items():
        for step, value in zip(("dense", "deferred"), pair):
            cfg = {"size": size, "method": "none", "seed": seed}
            cfg |= {"step": "deferred"} if step == "deferred" else {}
            cpu_record(tmp_path, f"{size}{step}{seed}", cfg, value)
    assert agreement.step_equivalence(tmp_path / "none", step="deferred").empty
    t = agreement.step_equivalence(tmp_path, step="deferred").iloc[0]
    # each difference relative to its configuration's dense mean over all its paired seeds
    big = np.array([0.004, -0.002, 0.001]) / np.mean([0.40, 0.42, 0.38, 0.44])
    small = np.array([-0.001, 0.001, 0.0]) / np.mean([0.20, 0.22, 0.21])
    x = (big + small) / 2  # per seed, over the two configurations
    assert (t.configurations, t.seeds) == (2, 3)
    assert np.isclose(t["deferred - dense %"], 100 * x.mean())
    half = stats.t.ppf(0.95, 2) * x.std(ddof=1) / np.sqrt(3)  # 90%: the TOST's interval
    assert np.isclose(t["90% CI low %"], 100 * (x.mean() - half))
    assert np.isclose(t["TOST p"], agreement.tost(x, 0.0135)) and t.equivalent == (
        t["TOST p"] < 0.05
    )
    lower = stats.ttest_1samp(x, -0.0135, alternative="greater").pvalue
    upper = stats.ttest_1samp(x, 0.0135, alternative="less").pvalue
    assert np.isclose(agreement.tost(x, 0.0135), max(lower, upper))
    assert agreement.tost(np.array([0.001, 0.001]), 0.01) == 0.0 and np.isnan(
        agreement.tost(x[:1], 0.01)
    )


def test_tower_agreement_pairs_the_towers_and_pools_them_as_the_steps(tmp_path, cpu_record):
    """Records that differ only in refresh_tower (the item-major ones predate the field), per
    configuration with its sampling shown, then pooled per dataset as `step_equivalence`."""
    assert agreement.tower_agreement(tmp_path).empty
    assert agreement.tower_equivalence(tmp_path).empty
    values = {  # (sampling, seed) -> (item-major, feature-major)
        ("rank", 0): (0.40, 0.401),
        ("rank", 1): (0.42, 0.419),
        ("rank", 2): (0.38, 0.381),
        ("topk", 0): (0.30, 0.300),
        ("topk", 1): (0.31, 0.312),
        ("topk", 2): (0.32, None),  # no feature-major twin: seed 2 out of the pooled test
    }
    for (sampling, seed), pair in values.items():
        for tower, value in zip((None, "feature-major"), pair):
            if value is None:
                continue
            cfg = {"method": "cd", "guide": "student", "sampling": sampling, "seed": seed}
            cfg |= {"refresh_tower": tower} if tower else {}
            cpu_record(tmp_path, f"{sampling}{tower}{seed}", cfg, value)
    t = agreement.tower_agreement(tmp_path).set_index("sampling")
    assert t.seeds.to_dict() == {"rank": 3, "topk": 2}
    assert np.isclose(t.loc["rank", "feature-major - item-major"], 0.001 / 3)
    assert np.isclose(t.loc["topk", "item-major NDCG@10"], 0.305)
    assert (t["TOST p"] < 0.05).tolist() == t.equivalent.tolist()
    p = agreement.tower_equivalence(tmp_path).iloc[0]
    rank = np.array([0.001, -0.001]) / np.mean([0.40, 0.42, 0.38])
    topk = np.array([0.0, 0.002]) / 0.305
    assert (p.configurations, p.seeds) == (2, 2)
    assert np.isclose(p["feature-major - item-major %"], 100 * ((rank + topk) / 2).mean())
