"""The tower kernel (cdlib/towerkernel.py, cdlib/tower.c): a NeuMF's feature-major scores with it
are torch's to the bit wherever it stands in, its check per shape can fail and then leaves torch's
path, and CD training with it ends at the same bits as without."""

from __future__ import annotations

import hashlib
import shutil

import pytest
import torch

from cdlib import loop, models, rowkernel, towerkernel
from cdlib.config import Config, build_model, dataset_for

TOWER = towerkernel.load()
needs_kernel = pytest.mark.skipif(TOWER is None, reason="the tower kernel did not build here")


def _model(ds, size: int) -> models.NeuMF:
    torch.manual_seed(size)
    m = models.NeuMF(ds.n_users, ds.n_items, size)
    for p in m.parameters():  # weights of every sign and size: ReLUs on and off
        torch.nn.init.normal_(p, std=0.3)
    return m.eval()


def _torch_scores(m, users, monkeypatch, **kw) -> torch.Tensor:
    with monkeypatch.context() as mp:
        mp.setattr(towerkernel, "load", lambda: None)
        return m.score_all_feature_major(users, **kw)


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32)


def test_the_kernel_builds_where_there_is_a_c_compiler():
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    assert TOWER is not None


def _intel_avx512_mkl() -> bool:
    """The machines where the kernel was seen to stand in for torch (Intel Xeons with AVX-512,
    torch's MKL build); elsewhere its check decides, and may keep torch's path."""
    try:
        with open("/proc/cpuinfo") as f:
            intel = "GenuineIntel" in f.read(4096)
    except OSError:
        return False
    return intel and torch.backends.mkl.is_available() and rowkernel.vector_floats() == 16


@needs_kernel
def test_it_stands_in_for_a_size_8_student_on_this_projects_intel_machines(ml100k):
    if not _intel_avx512_mkl():
        pytest.skip("not an Intel AVX-512 machine with torch's MKL build")
    for e, h in [(8, 4), (4, 2)]:
        assert TOWER.takes(e, h, {5, 3}, ml100k.n_items, torch.zeros(1))


@needs_kernel
@pytest.mark.parametrize("size", [4, 8])
def test_the_kernel_gives_torchs_bits(ml100k, size, monkeypatch):
    """d = 4 and 8 (the students' towers of 2 and 4 units, whose products this machine's BLAS sums
    as the kernel does), chunks of one user and of several with a short last one, and no user."""
    m = _model(ml100k, size)
    users = torch.tensor([0, 7, 942, 3, 500])
    TOWER.checked.clear()
    for elems in (1 << 20, 2 * ml100k.n_items * size, 1):
        want = _torch_scores(m, users, monkeypatch, max_elems=elems)
        got = m.score_all_feature_major(users, max_elems=elems)
        assert torch.equal(_bits(got), _bits(want))
    assert m.score_all_feature_major(users[:0]).shape == (0, ml100k.n_items)
    _skip_unless_it_stood_in()


def _skip_unless_it_stood_in():
    """(After the test's assertions: where the kernel's check refused every shape, they compared
    torch's path with itself.)"""
    if not TOWER.checked or not all(TOWER.checked.values()):
        pytest.skip(f"this machine's BLAS sums a tower's products otherwise: {TOWER.checked}")


@needs_kernel
def test_a_shape_whose_bits_differ_keeps_torchs_path(ml100k, monkeypatch):
    """The check per shape is real: a kernel one ulp off in one score is refused, for that shape
    only, and the scores are torch's."""
    m = _model(ml100k, 8)
    users = torch.arange(6)
    want = _torch_scores(m, users, monkeypatch)
    scores = TOWER.scores

    def off_by_one_ulp(*args):
        out = scores(*args)
        out.view(torch.int32).view(-1)[-1] += 1
        return out

    TOWER.checked.clear()
    monkeypatch.setattr(TOWER, "scores", off_by_one_ulp)
    got = m.score_all_feature_major(users)
    assert list(TOWER.checked.values()) == [False]
    assert torch.equal(_bits(got), _bits(want))
    monkeypatch.setattr(TOWER, "scores", scores)  # another shape is checked on its own
    TOWER.takes(4, 2, {3}, ml100k.n_items, torch.zeros(1))
    assert (4, 2, 3, 3, ml100k.n_items, torch.get_num_threads()) in TOWER.checked
    TOWER.checked.clear()


@needs_kernel
def test_it_refuses_what_it_was_not_built_for():
    e = towerkernel.MAX_E
    assert not TOWER.takes(e + 2, 4, {1}, 10, torch.zeros(1))
    assert not TOWER.takes(8, 4, {1}, 10, torch.zeros(1, dtype=torch.float64))


def test_off_keeps_torchs_path(monkeypatch):
    monkeypatch.setenv("CDLIB_TOWER_KERNEL", "off")
    assert towerkernel.load.__wrapped__() is None  # (load, uncached)


def _cd_student_sha(ml100k_name: str) -> str:
    cfg = Config(
        dataset=ml100k_name,
        backbone="neumf",
        size=8,
        method="cd",
        guide="student",
        refresh_tower="feature-major",
        step="deferred",
        epochs=3,
        min_epochs=1,
        batch_size=64,
        lr=3e-3,
    ).canonical()
    tcfg = cfg.teacher()
    torch.manual_seed(1)
    teacher = build_model(tcfg, dataset_for(tcfg), "cpu").eval()
    out = loop.fit(cfg, dataset_for(cfg), teacher, progress=False)
    h = hashlib.sha256()
    for k, v in out["model"].state_dict().items():
        h.update(k.encode() + v.numpy().tobytes())
    return h.hexdigest()


@needs_kernel
def test_a_student_guided_cd_run_trains_to_the_same_bits(monkeypatch):
    """Three epochs of a student-guided CD student on ml-100k (a refresh each), with the kernel and
    with torch's path: the same weights."""
    TOWER.checked.clear()
    with_kernel = _cd_student_sha("ml-100k")
    checked = dict(TOWER.checked)
    monkeypatch.setattr(towerkernel, "load", lambda: None)
    assert _cd_student_sha("ml-100k") == with_kernel
    TOWER.checked.update(checked)
    _skip_unless_it_stood_in()
