"""torch.rand of a CPU generator, the same numbers faster (`rand`): torch draws its Mersenne
Twister's words one call at a time (~3.5 ns a number, one thread of this machine's Xeon);
`mt19937.c`, compiled on first use and called through ctypes, advances a copy of the generator's
state in vectorised loops, 11-16x faster on [16 or 64 x items] draws of the larger datasets
(tools/uniform_probe.py: results/bench/uniform_cpu.json), and writes it back, so that the
generator then stands where torch.rand would have left it. It is used where a step draws a number
per (user, item) of its batch (`samplers.uniform_missing`). The kernel is used only once it has
drawn torch.rand's numbers to the bit from a few seeds, sizes and positions in the state (`load`);
CDLIB_RAND_KERNEL=off draws with torch.
"""

from __future__ import annotations

import ctypes
import functools
import math
from pathlib import Path

import numpy as np
import torch

from . import rowkernel

SOURCE = Path(__file__).with_name("mt19937.c")
N = 624  # words of the Mersenne Twister's state
# torch's CPU generator state (CPUGeneratorImpl.cpp, CPUGeneratorImplStateLegacy): the seed (uint64),
# `left` (int32), `seeded` (int32), `next` (uint64), the 624 words (one uint64 each), then the
# normal-sampling cache, which `rand` leaves as it is
STATE_BYTES, LEFT, NEXT, WORDS = 5056, 8, 16, 24


class Kernel:
    """The compiled kernel (`mt_uniform`)."""

    def __init__(self, lib):
        lib.mt_uniform.restype = None
        lib.mt_uniform.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64]
        self.lib = lib

    def __call__(self, shape, generator: torch.Generator) -> torch.Tensor:
        out = torch.empty(shape)
        if out.numel() == 0:
            return out
        raw = generator.get_state()
        state = raw.numpy()
        left = int(state[LEFT : LEFT + 4].view(np.int32)[0])
        words = np.ascontiguousarray(state[WORDS : WORDS + 8 * N].view(np.uint64), dtype=np.uint32)
        # at::mt19937 twists when `left` drops to 0 and then reads word `next`: left == 1 is a spent
        # state, else the next word is `next` (left == N + 1 - next)
        pos = np.array([N if left == 1 else int(state[NEXT : NEXT + 8].view(np.uint64)[0])])
        self.lib.mt_uniform(words.ctypes.data, pos.ctypes.data, out.data_ptr(), out.numel())
        p = int(pos[0])
        state[LEFT : LEFT + 4] = np.array([N + 1 - p], dtype=np.int32).view(np.uint8)
        state[NEXT : NEXT + 8] = np.array([p], dtype=np.uint64).view(np.uint8)
        state[WORDS : WORDS + 8 * N] = words.astype(np.uint64).view(np.uint8)
        generator.set_state(raw)
        return out


def _matches(kernel: Kernel) -> bool:
    """Whether the kernel draws torch.rand's numbers and leaves the generator's state as torch does,
    from fresh and used generators, across twists, for lengths that end inside and at a state."""
    for seed, before, shape in [(0, 0, (1,)), (1, 5, (3, 700)), (7, 623, (1249,)), (2, 1, (624,))]:
        ours, theirs = (torch.Generator().manual_seed(seed) for _ in range(2))
        if before:
            torch.rand(before, generator=ours), torch.rand(before, generator=theirs)
        a, b = kernel(shape, ours), torch.rand(shape, generator=theirs)
        if not (torch.equal(a, b) and torch.equal(ours.get_state(), theirs.get_state())):
            return False
        if not torch.equal(torch.rand(5, generator=ours), torch.rand(5, generator=theirs)):
            return False
    return True


@functools.cache
def load() -> Kernel | None:
    """The kernel, built and checked once per process; None where there is no C compiler, the build
    fails, CDLIB_RAND_KERNEL=off, or torch's generator differs from the one it reproduces (a
    state of another layout, other numbers): then `rand` is torch.rand."""
    lib = rowkernel.library(SOURCE, "CDLIB_RAND_KERNEL", "uniform draws take torch.rand")
    if lib is None:
        return None
    kernel = Kernel(lib)
    if torch.Generator().get_state().numel() != STATE_BYTES or not _matches(kernel):
        return None
    return kernel


# a draw this large takes the kernel: each call reads and writes the generator's 5 KB state (~20 us),
# which torch.rand's own loop repays from ~6,000 numbers
KERNEL_MIN = 1 << 13


def rand(shape, generator: torch.Generator) -> torch.Tensor:
    """torch.rand(shape, generator=generator) on the generator's device, float32: the same numbers,
    and the generator left in the same state, through the kernel where it is loaded, the generator
    is a CPU one and the draw has at least `KERNEL_MIN` numbers."""
    kernel = None
    if generator.device.type == "cpu" and math.prod(shape) >= KERNEL_MIN:
        kernel = load()
    if kernel is None:
        return torch.rand(shape, generator=generator, device=generator.device)
    return kernel(shape, generator)
