"""Run records: which commit a record names, when it calls the tree dirty, and reading them back."""

import subprocess

import numpy as np
import pytest

from cdlib import runs


def git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_git_state_counts_code_not_outputs(tmp_path, monkeypatch):
    monkeypatch.delenv("CDLIB_GIT_COMMIT", raising=False)
    monkeypatch.setattr(runs, "REPO", tmp_path)
    for f in ("cdlib/x.py", "results/t.csv", "figures/f.png", "notebooks/n.ipynb", "README.md"):
        (tmp_path / f).parent.mkdir(exist_ok=True)
        (tmp_path / f).write_text("a\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    head = subprocess.run(
        ["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert runs.git_state() == {"commit": head, "dirty": False}
    (tmp_path / "results/t.csv").write_text("b\n")  # a rewritten table or figure
    (tmp_path / "figures/f.png").write_text("b\n")
    (tmp_path / "notebooks/n.ipynb").write_text("b\n")  # an executed notebook
    (tmp_path / "README.md").write_text("b\n")  # its generated results section
    (tmp_path / "cdlib/new.py").write_text("b\n")  # untracked
    assert runs.git_state()["dirty"] is False
    (tmp_path / "cdlib/x.py").write_text("b\n")  # changed code
    assert runs.git_state()["dirty"] is True
    monkeypatch.setenv("CDLIB_GIT_COMMIT", "abc")  # a copy whose .git is not its own
    assert runs.git_state() == {"commit": "abc", "dirty": None, "from": "CDLIB_GIT_COMMIT"}


def test_provenance_names_the_code_the_process_loaded(tmp_path, monkeypatch):
    """A tree edited (or committed) while a run goes on does not relabel the code the run loaded."""
    monkeypatch.setattr(runs, "_LOADED_GIT", {"commit": "c0de", "dirty": False})
    monkeypatch.setenv("CDLIB_GIT_COMMIT", "later")  # what git_state() would say now
    assert runs.git_state()["commit"] == "later"
    assert runs.provenance("cpu")["git"] == {"commit": "c0de", "dirty": False}


def test_a_run_costs_its_cpu_time_else_its_wall_time_less_paused_epochs():
    curve = [{"epoch": e, "seconds": s} for e, s in enumerate([1.0, 1.2, 0.9, 1.1, 4360.0, 1.0], 1)]
    # the 4,360 s epoch was stopped: its time beyond the (lower) median epoch, 1.0 s, is paused
    assert runs.paused_seconds(curve) == pytest.approx(4360.0 - 1.0)
    cpu = {"device": "cpu: Intel(R) Xeon(R) Processor, 1 threads"}
    old = {"timing": {"wall_seconds": 4370.0}, "curve": curve, "provenance": cpu}
    assert runs.run_seconds(old) == pytest.approx(4370.0 - (4360.0 - 1.0))
    new = {
        "timing": {"wall_seconds": 4370.0, "cpu_seconds": 9.5},
        "curve": curve,
        "provenance": cpu,
    }
    assert runs.run_seconds(new) == 9.5
    # a GPU run's CPU time is not its cost; a slow epoch below the pause thresholds is not paused
    gpu = {**new, "provenance": {"device": "cuda: NVIDIA H200"}}
    assert runs.run_seconds(gpu) == pytest.approx(4370.0 - (4360.0 - 1.0))
    slow = [{"seconds": s} for s in (1.0, 1.0, 1.0, 50.0)]  # 50 x the median, under 60 s beyond it
    assert runs.paused_seconds(slow) == 0.0 and runs.paused_seconds([]) == 0.0
    assert runs.paused_seconds([{"seconds": 1.0}, {"seconds": 500.0}]) == 499.0  # two epochs
    # a member of a group of 15 shares the group's epochs, its pause and its wall time
    member = {"seconds": 1.0}
    curve15 = [member] * 50 + [{"seconds": 1000.0}]
    timing = {"wall_seconds": 1100.0 / 15, "group_wall_seconds": 1100.0}
    share = runs.run_seconds({**gpu, "timing": timing, "curve": curve15})
    assert share == pytest.approx((1100.0 - 999.0) / 15) and share > 0
    assert np.isnan(runs.run_seconds({}))


def test_all_records_reads_the_folder_again_once_a_file_in_it_changes(tmp_path):
    runs.write_record({"key": "a", "x": 1}, tmp_path)
    runs.write_record({"key": "b", "x": 2}, tmp_path)
    first = runs.all_records(tmp_path)
    assert [r["x"] for r in first] == [1, 2]
    assert runs.all_records(tmp_path)[0] is first[0]  # kept: not read again
    runs.write_record({"key": "a", "x": 10}, tmp_path)  # rewritten (a new file: atomic)
    assert [r["x"] for r in runs.all_records(tmp_path)] == [10, 2]
    runs.write_record({"key": "c", "x": 3}, tmp_path)
    (tmp_path / "runs" / "b.json").unlink()
    assert [r["x"] for r in runs.all_records(tmp_path)] == [10, 3]
    assert runs.all_records(tmp_path / "none") == []
