"""The README's generated sections on the engine: what they say comes from the files they name."""

import json

from cdlib import readme_steps


def test_gpu_section_reports_the_windows_check_and_groups(tmp_path):
    assert readme_steps.gpu_section(tmp_path) == []  # nothing recorded, nothing said
    bench = tmp_path / "bench"
    bench.mkdir()
    prov = {"device": "GPU X", "packages": {"torch": "9.9"}, "git": {"commit": "abcdef0123"}}
    check = {
        "provenance": prov,
        "device_deterministic": False,
        "max_loss_difference_cpu_vs_device": 0.00031,
        "group_max_loss_difference": 2e-7,
        "host_waits_in_one_epoch": {
            "A, dynamic": 5,
            "B, dynamic": 9,
            "A, static": 0,
            "B, static": 0,
        },
    }
    (bench / "gpu_check.json").write_text(json.dumps(check))
    groups = [
        {"run": "T", "group": g, "gain over one after another": gain}
        for g, gain in ((1, 1.0), (5, 2.5), (15, 2.0))
    ]
    (bench / "ml-1m_cuda.json").write_text(json.dumps({"groups": groups, "provenance": prov}))
    text = " ".join(readme_steps.gpu_section(tmp_path))
    assert "GPU X, torch 9.9, commit abcdef0" in text and "gave different curves" in text
    assert "3.1e-04" in text and "2.0e-07" in text
    assert "5-9 times with the dynamic step and 0 times with the static one" in text
    assert "groups on the GPU X of `results/bench/ml-1m_cuda.json`" in text
    assert "T 2.5x (groups of 5)" in text
