"""The row kernels (cdlib/rowkernel.py, cdlib/rowadam.c): deferred RowAdam with them leaves its
tables, moments and step counts bit for bit as its Python path leaves them, in steps and in
training; their load-time check can fail, and a machine where they do not build or do not reproduce
torch gets the Python path."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import warnings

import numpy as np
import pytest
import torch

from cdlib import loop, rowadam, rowkernel, sparse, topkernel, towerkernel, train
from cdlib.config import Config

KERNELS = rowkernel.load()
needs_kernels = pytest.mark.skipif(KERNELS is None, reason="the row kernels did not load here")


def test_the_kernels_load_where_torch_is_this_projects_cpu_build():
    """On an x86-64 machine with a C compiler and torch's MKL build (this project's machines and
    CI), the kernels build and reproduce torch; a failure here is not left to a silent fallback."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    if not torch.backends.mkl.is_available() or rowkernel.vector_floats() is None:
        pytest.skip("not torch's x86-64 MKL build")
    assert KERNELS is not None and KERNELS.adam_vector == rowkernel.vector_floats()


def _train_table(width: int, kernels: bool, steps: int = 120):
    """A table (and a 1-D bias) trained by deferred RowAdam through look-ups: steps that read the
    table twice, steps that skip it, ids repeated; the state after each step."""
    gen = torch.Generator().manual_seed(width)
    p = torch.randn(3000, width, generator=gen).requires_grad_()
    b = torch.zeros(3000, requires_grad=True)
    opt = rowadam.RowAdam([p, b], lr=3e-3, deferred=True, row_kernels=kernels)
    opt.warmup = 0
    seen = []
    for t in range(steps):
        n = int(torch.randint(1, 400, (1,), generator=gen))
        ids = torch.randint(0, 3000, (n,), generator=gen)
        loss = torch.zeros(())
        if t % 9:
            e = sparse.embedding(p, ids)
            loss = loss + (e * torch.randn(e.shape, generator=gen)).sum()
            loss = loss + sparse.take(b, ids).square().sum()
            if t % 4 == 0:  # read twice: overlapping rows
                loss = loss + sparse.embedding(p, ids[: n // 2 + 1]).square().sum()
        opt.zero_grad()
        if loss.requires_grad:
            loss.backward()
            opt.step()
        st = opt.state.get(p, {})
        seen.append([x.detach().clone() for x in (p, b, *(st.get(k) for k in ("exp_avg", "last")))
                     if x is not None])  # fmt: skip
    opt.flush()
    return seen, opt.state_dict(), p.detach(), b.detach()


@needs_kernels
@pytest.mark.parametrize("width", [1, 8, 64, 300])
def test_the_kernels_step_and_catch_up_rows_to_the_bit(width, monkeypatch):
    """Deferred RowAdam with the kernels against its Python path: every table, moment, last step
    and step count equal after every step and after the flush; and the tables were deferred."""
    monkeypatch.setattr(rowadam, "DEFER_MIN", 0)
    calls, adam_rows = [], rowkernel.Kernels.adam_rows
    monkeypatch.setattr(rowkernel.Kernels, "adam_rows", lambda *a: calls.append(1) or adam_rows(*a))
    fast, python = _train_table(width, True), _train_table(width, False)
    assert len(calls) > 100
    for a, b in zip(fast[0], python[0]):
        assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))
    for i, st in python[1]["state"].items():
        for k, v in st.items():
            assert (
                torch.equal(fast[1]["state"][i][k], v)
                if torch.is_tensor(v)
                else v == fast[1]["state"][i][k]
            )
    assert torch.equal(fast[2], python[2]) and torch.equal(fast[3], python[3])


@needs_kernels
@pytest.mark.parametrize("backbone", ["cdae", "neumf"])
def test_a_run_trains_to_the_same_bits_with_the_kernels(backbone, monkeypatch):
    """Two epochs of deferred training, steps of 8 users, past the warm-up: the same validation
    curve and weights with the kernels and without them (`rowkernel.load` None)."""
    monkeypatch.setattr(rowadam, "DEFER_MIN", 0)  # (tables this small are otherwise stepped whole)
    monkeypatch.setattr(rowadam, "WARMUP", 0.0)
    cfg = Config(
        dataset="ml-100k", subset_users=300, epochs=2, patience=2, min_epochs=1, device="cpu",
        backbone=backbone, size=16, step="deferred", lr=1e-3, batch_size=8,
    ).canonical()  # fmt: skip
    ds = train.dataset_for(cfg)
    out = [loop.fit(cfg, ds, progress=False)]
    monkeypatch.setattr(rowkernel, "load", lambda: None)
    out.append(loop.fit(cfg, ds, progress=False))
    curves = [[c["valid_NDCG@10"] for c in o["curve"]] for o in out]
    assert curves[0] == curves[1]
    weights = [o["model"].state_dict() for o in out]
    assert all(torch.equal(w, weights[1][n]) for n, w in weights[0].items())


@needs_kernels
@pytest.mark.parametrize("what", ["adam_tail", "adam_vector", "sqrt"])
def test_the_load_time_check_fails_on_a_wrong_reading_of_torch(what):
    """The check `calibrate` makes fails where the kernels are told a wrong place for torch's
    scalar loop, a wider vector, or C's correctly rounded sqrtf instead of torch.sqrt's
    (MKL's, which differs in about 0.5% of floats): what makes the kernels refuse, not agree."""
    wrong = dict(
        adam_tail=dict(adam_tail=0 if KERNELS.adam_tail else KERNELS.adam_vector // 2),
        adam_vector=dict(adam_vector=KERNELS.adam_vector * 2),
        sqrt=dict(sqrt=None),
    )[what]
    x = torch.rand(4099, generator=torch.Generator().manual_seed(0))
    if what == "sqrt" and torch.equal(torch.sqrt(x), torch.from_numpy(np.sqrt(x.numpy()))):
        pytest.skip("torch.sqrt is correctly rounded here: sqrtf is no wrong reading")
    at = dict(
        adam_vector=KERNELS.adam_vector,
        adam_tail=KERNELS.adam_tail,
        pow_vector=KERNELS.pow_vector,
        sqrt=KERNELS.sqrt,
    )
    bad = rowkernel.Kernels(KERNELS.lib, **{**at, **wrong})
    assert rowkernel._adam_matches(KERNELS) and rowkernel._catch_up_matches(KERNELS)
    assert not (rowkernel._adam_matches(bad) and rowkernel._catch_up_matches(bad))
    # (the whole step's sqrt is the correctly rounded one, as in torch's vector loop: not MKL's)
    if what != "sqrt":
        assert rowkernel._whole_matches(KERNELS) and not rowkernel._whole_matches(bad)


def _train_whole(kernels: bool, steps: int = 1200):
    """A 20,000 x 2 table and a bias, small enough that deferred RowAdam steps them whole, trained
    through look-ups of 20 rows a step: most rows go unread for a thousand steps, so that their m
    decays through the subnormal range. The state every 100 steps, and how many m were subnormal
    then."""
    gen = torch.Generator().manual_seed(0)
    p = torch.randn(20_000, 2, generator=gen).requires_grad_()
    b = torch.zeros(20_000, requires_grad=True)
    opt = rowadam.RowAdam([p, b], lr=1e-3, deferred=True, row_kernels=kernels)
    seen, subnormal = [], 0
    for t in range(steps):
        ids = torch.randint(0, 20_000, (20,), generator=gen)
        e = sparse.embedding(p, ids)
        loss = (e * torch.randn(e.shape, generator=gen)).sum() + sparse.take(b, ids).square().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if t % 100 == 99:
            m = opt.state[p]["exp_avg"].abs()
            subnormal += int(((m > 0) & (m < torch.finfo(torch.float32).tiny)).sum())
            st = opt.state[p]
            seen.append([x.detach().clone() for x in (p, b, st["exp_avg"], st["exp_avg_sq"])])
    return seen, subnormal


@needs_kernels
def test_whole_table_steps_through_the_subnormal_range_to_the_bit(monkeypatch):
    """Tables stepped whole (too small to defer) by the kernel (`adam_whole`) against torch's fused
    Adam: the same bits (-0 told from 0) every 100 steps over 1,200 steps in which many m were
    subnormal, where the kernel's shortcuts work."""
    calls, whole = [], rowkernel.Kernels.adam_whole
    monkeypatch.setattr(rowkernel.Kernels, "adam_whole", lambda *a: calls.append(1) or whole(*a))
    (fast, subnormal), (torchs, _) = _train_whole(True), _train_whole(False)
    assert len(calls) >= 2 * 1200 and subnormal > 10_000
    for a, b in zip(fast, torchs):
        assert all(rowkernel._same_bits(x, y) for x, y in zip(a, b))


@needs_kernels
@pytest.mark.parametrize(
    "wrong",
    [
        ("even = (x + 0x1p52) - 0x1p52;", "even = floor(x);"),  # m's shortcut rounded down
        ("(uint32_t)even | (mb & 0x80000000u)", "(uint32_t)even"),  # m's sign lost
        ("tiny & -(uint32_t)(ag == 0)", "tiny"),  # the integer shortcut with a gradient
        ("(float)am * 0x1p-85f", "(float)am * 0x1p-86f"),  # the scaled one's m halved
        ("(ag - G_LOW < G_HIGH - G_LOW)", "(ag != 0)"),  # the scaled one at any gradient
        ("#define SMALL_M 0x0d800000u", "#define SMALL_M 0x2d800000u"),  # p stays for m < 2^-60
        ("pm = bound * ldexp(1.0, 26)", "pm = bound * ldexp(1.0, 10)"),  # p's bound too low
    ],
)
def test_the_load_time_check_fails_on_a_wrong_whole_step_shortcut(wrong, tmp_path):
    """A kernel library whose whole step takes a wrong shortcut (built from rowadam.c with one
    line changed) passes the row kernels' checks but not the whole step's: `calibrate` gives
    kernels whose whole steps are left to torch (and says so)."""
    source = rowkernel.SOURCE.read_text()
    assert wrong[0] in source
    (tmp_path / "bad.c").write_text(source.replace(*wrong))
    lib = tmp_path / "bad.so"
    cc = shutil.which("cc") or shutil.which("gcc")
    subprocess.run(
        [cc, *rowkernel.FLAGS, str(tmp_path / "bad.c"), "-o", str(lib), "-lm"], check=True
    )
    with pytest.warns(UserWarning, match="whole-table steps take torch's"):
        bad = rowkernel.calibrate(ctypes.CDLL(str(lib)))
    assert bad is not None and not bad.whole


def test_loading_the_kernels_draws_nothing_from_the_global_generator():
    """`load` (its check against torch) leaves torch's global random state as it found it: a run
    that builds its optimiser after seeding draws the same numbers with or without the kernels."""
    rowkernel.load.cache_clear()
    try:
        before = torch.get_rng_state()
        rowkernel.load()
        assert torch.equal(torch.get_rng_state(), before)
    finally:
        rowkernel.load.cache_clear()


@pytest.mark.parametrize(
    "module, env, says",
    [
        (rowkernel, "CDLIB_ROW_KERNEL", "deferred Adam takes its Python path"),
        (topkernel, "CDLIB_TOPK_KERNEL", "rankings take torch.topk"),
        (towerkernel, "CDLIB_TOWER_KERNEL", "a NeuMF refresh scores with torch"),
    ],
)
def test_each_kernel_is_off_or_says_what_runs_instead(module, env, says, monkeypatch, tmp_path):
    """Every compiled kernel loads through `rowkernel.library`: its variable set to off gives None
    without a build; a compiler that fails gives None with a warning that names the source and
    what runs instead, and leaves no library behind."""
    monkeypatch.setenv("CDLIB_CACHE", str(tmp_path))
    monkeypatch.setenv(env, "off")
    monkeypatch.setenv("CC", "false")  # (off is read first: no build, so no warning)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert module.load.__wrapped__() is None
    monkeypatch.setenv(env, "on")
    with pytest.warns(UserWarning, match=f"could not build .*{module.SOURCE.name}.*; {says}"):
        assert module.load.__wrapped__() is None
    assert not list(tmp_path.rglob("*.so"))


def test_no_kernels_when_off_or_unbuildable(monkeypatch, tmp_path):
    """CDLIB_ROW_KERNEL=off gives the Python path; so do a compiler that fails and a cache folder
    that cannot be made, each with a warning that says so."""
    monkeypatch.setenv("CDLIB_CACHE", str(tmp_path))
    rowkernel.load.cache_clear()
    try:
        monkeypatch.setenv("CDLIB_ROW_KERNEL", "off")
        assert rowkernel.load() is None
        assert (
            rowadam.RowAdam([torch.zeros(3, requires_grad=True)], lr=0.1, deferred=True).kernels
            is None
        )
        monkeypatch.setenv("CDLIB_ROW_KERNEL", "on")
        monkeypatch.setenv("CC", "false")
        rowkernel.load.cache_clear()
        with pytest.warns(UserWarning, match="Python path"):
            assert rowkernel.load() is None
        assert not list(tmp_path.rglob("*.so"))
        monkeypatch.delenv("CC")
        (tmp_path / "file").write_text("a file where the cache folder should be")
        monkeypatch.setenv("CDLIB_CACHE", str(tmp_path / "file"))
        rowkernel.load.cache_clear()
        with pytest.warns(UserWarning, match="Python path"):
            assert rowkernel.load() is None
    finally:
        rowkernel.load.cache_clear()
