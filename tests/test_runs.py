"""Provenance: which commit a record names, and when it calls the tree dirty."""

import subprocess

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
