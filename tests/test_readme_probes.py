"""The README's generated sections on the engine's probes (cdlib/readme_probes.py): what they say
comes from the files they name."""

import json

from cdlib import readme_probes


def _cells(text: str, start: str) -> list[str]:
    """The cells of the first table row of `text` that starts with `start`."""
    line = next(t for t in text.split("\n") if t.startswith(start))
    return [c.strip() for c in line.strip("|").split("|")]


def test_gpu_section_reports_the_windows_check_and_groups(tmp_path):
    assert readme_probes.gpu_section(tmp_path) == []  # nothing recorded, nothing said
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
    text = " ".join(readme_probes.gpu_section(tmp_path))
    assert "GPU X, torch 9.9, commit abcdef0" in text and "gave different curves" in text
    assert "3.1e-04" in text and "2.0e-07" in text
    assert "5-9 times with the dynamic step and 0 times with the static one" in text
    assert "groups on the GPU X of `results/bench/ml-1m_cuda.json`" in text
    assert "T 2.5x (groups of 5)" in text


def test_uniform_draw_section_shows_the_probes_record(tmp_path):
    assert readme_probes.uniform_draw_section(tmp_path) == []  # nothing recorded, nothing said
    (tmp_path / "bench").mkdir()
    row = {
        "dataset": "yelp",
        "users a batch": 64,
        "items": 20033,
        "batches": 100,
        "torch.rand s": 0.00508,
        "randkernel.rand s": 0.00038,
        "same numbers": True,
        "Gumbel keys s": 0.01342,
        "uniform_missing s": 0.00311,
        "speed-up": 4.315,
        "same items": False,
        "rows by their keys": 0.0048,
    }
    rec = {"draws": [row], "provenance": {"device": "CPU X"}, "wall_seconds": 1.0}
    (tmp_path / "bench" / "uniform_cpu.json").write_text(json.dumps(rec))
    text = "\n".join(readme_probes.uniform_draw_section(tmp_path))
    assert "over 100 batches a row, one thread (`python tools/uniform_probe.py`, CPU X)" in text
    assert _cells(text, "| yelp") == [
        "yelp",
        "64",
        "20033",
        "5.08",
        "0.38",
        "13.42",
        "3.11",
        "4.32",
        "0.48%",
        "False",
    ]


def test_defer_section_shows_the_probes_record(tmp_path):
    assert readme_probes.defer_section(tmp_path) == []  # nothing recorded, nothing said
    (tmp_path / "bench").mkdir()
    row = {
        "dataset": "yelp",
        "run": "NeuMF student, none",
        "size": 8,
        "epochs": 3,
        "size rule s/epoch": 6.0,
        "all s/epoch": 4.0,
        "size rule valid NDCG@10": [0.19, 0.20, 0.23],
        "all valid NDCG@10": [0.19, 0.197, 0.2301],
        "size rule 2 threads valid NDCG@10": [0.19, 0.20, 0.225],
        "same bits": False,
    }
    rec = {"runs": [row], "provenance": {"device": "CPU X"}, "wall_seconds": 1.0}
    (tmp_path / "bench" / "defer_cpu.json").write_text(json.dumps(rec))
    text = "\n".join(readme_probes.defer_section(tmp_path))
    assert (
        "3 epochs of untrained runs each way, one thread (`python tools/defer_probe.py`, CPU X)"
        in text
    )
    assert _cells(text, "| yelp") == [
        "yelp",
        "NeuMF student, none",
        "8",
        "6.0",
        "4.0",
        "1.5",
        "3.0e-03",
        "False",
        "5.0e-03",
    ]
    assert "defers every table on yelp neumf (`Profile.defer_for`)" in text
