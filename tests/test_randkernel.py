"""The uniform-number kernel (cdlib/randkernel.py, cdlib/mt19937.c): torch.rand's numbers, and the
generator left where torch.rand leaves it, from fresh and used generators, across the state's
twists, for draws that end inside the state, at its end and past it."""

from __future__ import annotations

import shutil

import pytest
import torch

from cdlib import randkernel

KERNEL = randkernel.load()
needs_kernel = pytest.mark.skipif(
    KERNEL is None, reason="the uniform-number kernel did not build here"
)


def test_the_kernel_builds_and_matches_where_there_is_a_c_compiler():
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    assert KERNEL is not None


@needs_kernel
@pytest.mark.parametrize("seed", [0, 1, 2**40 + 3])
@pytest.mark.parametrize("before", [0, 1, 622, 623, 624, 625, 5000])
@pytest.mark.parametrize("shape", [(1,), (623,), (624,), (625,), (64, 20033)])
def test_the_kernel_draws_torchs_numbers_and_leaves_its_state(seed, before, shape):
    ours, theirs = (torch.Generator().manual_seed(seed) for _ in range(2))
    if before:
        torch.rand(before, generator=ours), torch.rand(before, generator=theirs)
    assert torch.equal(KERNEL(shape, ours), torch.rand(shape, generator=theirs))
    assert torch.equal(ours.get_state(), theirs.get_state())
    # torch's own draws of every kind go on from the same state
    assert torch.equal(torch.randn(3, generator=ours), torch.randn(3, generator=theirs))
    assert torch.equal(
        torch.randint(5, (9,), generator=ours), torch.randint(5, (9,), generator=theirs)
    )


@needs_kernel
def test_rand_takes_the_kernel_for_large_draws_only(monkeypatch):
    calls = []
    monkeypatch.setattr(randkernel.Kernel, "__call__", lambda self, *a: calls.append(a))
    randkernel.rand((2, randkernel.KERNEL_MIN // 2 - 1), torch.Generator())
    assert not calls
    randkernel.rand((2, randkernel.KERNEL_MIN // 2), torch.Generator())
    assert len(calls) == 1


def test_rand_is_torch_rand_without_the_kernel(monkeypatch):
    monkeypatch.setattr(randkernel, "load", lambda: None)
    ours, theirs = (torch.Generator().manual_seed(4) for _ in range(2))
    assert torch.equal(randkernel.rand((3, 5000), ours), torch.rand((3, 5000), generator=theirs))
    assert torch.equal(ours.get_state(), theirs.get_state())


@needs_kernel
def test_a_kernel_that_draws_other_numbers_is_refused(monkeypatch):
    """`load` checks the kernel against torch.rand before any run uses it."""

    def off_by_one(self, shape, generator):
        return torch.rand(shape, generator=generator).add_(2**-24)

    monkeypatch.setattr(randkernel.Kernel, "__call__", off_by_one)
    assert not randkernel._matches(KERNEL)
