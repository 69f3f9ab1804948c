"""Deferred Adam's row kernels (`rowadam.c`), compiled on first use with the machine's C compiler
and called through ctypes: `RowAdam`'s catch-up of stale rows and Adam's step of the rows with a
gradient, in place on the tables, one pass over each row instead of the few dozen torch operations
(gathers, element-wise passes, scatters) its Python path takes per table and step; and its
whole-table step, torch's fused Adam without the subnormal arithmetic that makes an Intel CPU take
a microcode assist (a student's step on yelp spent two thirds of its time there).

The same numbers as the Python path, bit for bit: the kernels repeat torch's CPU kernels' operations
in their order, and where torch's result depends on an element's place in its tensor (its vector
loops against their scalar rest, which round or contract differently), they are told the place.
Those places depend on torch's build and the machine's vector width, so `load` measures them
(`calibrate`) against torch itself and returns None, leaving `RowAdam` on its Python path, where no
candidate reproduces torch to the bit, or where there is no C compiler, or CDLIB_ROW_KERNEL=off (and
leaves the whole-table steps to torch where `adam_whole` does not reproduce it)."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import math
import os
import platform
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.optim.adam import adam

from . import paths

SOURCE = Path(__file__).with_name("rowadam.c")
# -ffp-contract=off: no fused multiply-add but the kernels' own (fmaf), each operation rounded as
# torch's kernels round it; -fno-math-errno lets sqrtf vectorise (the same results)
FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fPIC", "-shared")
ADAM = dict(fused=True, amsgrad=False, maximize=False, weight_decay=0.0)  # as `RowAdam` calls it


class Hyper(ctypes.Structure):
    """rowadam.c's hyper_t: Adam's settings, `Kernels.table`, torch.pow's loop width, the sqrt."""

    _fields_ = [
        ("lr", ctypes.c_double),
        ("beta1", ctypes.c_double),
        ("beta2", ctypes.c_double),
        ("eps", ctypes.c_double),
        ("tab", ctypes.c_void_p),
        ("ntab", ctypes.c_int64),
        ("pow_vector", ctypes.c_int64),
        ("sqrt", ctypes.c_void_p),
    ]


def _ptr(t: torch.Tensor) -> int:
    return t.data_ptr()


class Kernels:
    """The compiled library with what reproduces torch on this machine (`calibrate`):
    `adam_vector` floats per vector of the fused Adam's vector loop, the first `adam_tail` of its
    scalar rest vectorised by the compiler (rounded as the vector loop), `pow_vector` doubles per
    step of the vector loop of torch.pow, and `sqrt` the address of torch.sqrt's float kernel
    (MKL's vsSqrt, which is not always correctly rounded) or None (sqrtf); `whole`: whether
    `adam_whole` reproduces torch's fused Adam (`calibrate`)."""

    def __init__(self, lib, adam_vector: int, adam_tail: int, pow_vector: int, sqrt=None):
        self.lib, self.adam_vector, self.adam_tail = lib, adam_vector, adam_tail
        self.pow_vector, self.sqrt, self.whole = pow_vector, sqrt, False

    def table(self, n: int, beta1: float, beta2: float, tails) -> torch.Tensor:
        """[6 x n] float64: `tails` (F and E of `rowadam.tail_sums`, [2 x n]), then the powers
        r^k, (r/sqrt(beta2))^k, beta1^k and beta2^k, k < n, as torch's vector loop computes them
        (`RowAdam._catch_up` computes them with torch.pow); n a multiple of `pow_vector`."""
        r = beta1 / math.sqrt(beta2)
        k = torch.arange(n, dtype=torch.float64)
        powers = [torch.pow(b, k) for b in (r, r / math.sqrt(beta2), beta1, beta2)]
        return torch.cat([torch.as_tensor(tails, dtype=torch.float64), torch.stack(powers)])

    def hyper(self, h: dict, table: torch.Tensor) -> Hyper:
        at = (h["lr"], h["beta1"], h["beta2"], h["eps"], _ptr(table), table.shape[1])
        return Hyper(*at, self.pow_vector, self.sqrt)

    def catch_up(self, hyper, p, m, v, last, rows, now: int) -> None:
        """The stale rows of `rows` (distinct, int64) of p, its moments m and v brought up to step
        `now` in place, their `last` set to it."""
        width = p.numel() // len(p)
        self.lib.catch_up(
            ctypes.byref(hyper), *map(_ptr, (p, m, v, last, rows)), len(rows), width, now
        )

    def adam_rows(self, hyper, p, m, v, last, rows, g, now: int, step: float) -> None:
        """Adam's step `step` of the rows `rows` (distinct, int64) of p, m, v with summed gradient g
        [len(rows) x width], in place; stale rows caught up to `now` first, `last` then now + 1."""
        numel = g.numel()
        self.lib.adam_rows(
            ctypes.byref(hyper),
            *map(_ptr, (p, m, v, last, rows)),
            len(rows),
            numel // max(len(rows), 1),
            _ptr(g),
            now,
            float(step),
            self._scalar(numel),
        )

    def adam_whole(self, hyper, p, m, v, g, step: float) -> None:
        """Adam's step `step` of the whole of p, m, v with gradient g, in place: torch's fused
        Adam, to the bit, without its subnormal arithmetic (`rowadam.c`)."""
        numel = p.numel()
        self.lib.adam_whole(
            ctypes.byref(hyper), *map(_ptr, (p, m, v, g)), numel, float(step), self._scalar(numel)
        )

    def _scalar(self, numel: int) -> int:
        """Where torch's fused Adam's scalar rest starts in a tensor of `numel` elements (the
        rounding of its vector loop before)."""
        rest = numel % self.adam_vector
        return numel - rest + (self.adam_tail if rest >= self.adam_tail > 0 else 0)


VEC_FLOATS = {"AVX512": 16, "AVX2": 8}  # floats per vector of torch's CPU kernels, by capability


def vector_floats() -> int | None:
    """Floats per vector of torch's CPU kernels here (None: a capability not listed)."""
    return VEC_FLOATS.get(torch.backends.cpu.get_cpu_capability())


def usable(*tensors: torch.Tensor) -> bool:
    """Whether the kernels can work on these tensors: float32 on a CPU, contiguous."""
    return all(
        t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous() for t in tensors
    )


def _machine() -> str:
    """What a build is for: the architecture and the CPU's instruction-set flags (-march=native)."""
    if not os.path.exists("/proc/cpuinfo"):
        return platform.machine()
    with open("/proc/cpuinfo") as f:
        return platform.machine() + next((x for x in f if x.startswith("flags")), "")


def build(source: Path, fallback: str) -> Path | None:
    """A kernel source compiled into $CDLIB_CACHE/kernels/ (once per source,
    flags and CPU); None where there is no C compiler or the build fails (warned: the build's error
    and `fallback`, what runs instead)."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    key = hashlib.sha256(source.read_bytes() + " ".join(FLAGS).encode() + _machine().encode())
    lib = paths.cache_dir() / "kernels" / f"{source.stem}-{key.hexdigest()[:16]}.so"
    if lib.exists():
        return lib
    tmp = lib.with_name(f".{lib.name}.tmp{os.getpid()}")
    try:
        lib.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([cc, *FLAGS, str(source), "-o", str(tmp), "-lm"], capture_output=True)
        why = done.stderr.decode(errors="replace")[-400:] if done.returncode else None
        if why is None:
            os.replace(tmp, lib)
    except OSError as e:  # (a cache folder that cannot be written, a compiler that cannot run)
        why = str(e)
    if why is not None:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        warnings.warn(
            f"could not build {source} with {cc} into {lib.parent}; {fallback}: {why}",
            stacklevel=4,
        )
        return None
    return lib


def library(source: Path, env: str, fallback: str) -> ctypes.CDLL | None:
    """A kernel source built (`build`) and opened; None where the environment variable `env` is
    "off", there is no C compiler, or the build fails (warned: `fallback`, what runs instead)."""
    if os.environ.get(env, "on") == "off":
        return None
    lib = build(source, fallback)
    return ctypes.CDLL(str(lib)) if lib is not None else None


def _adam_matches(kernels: Kernels) -> bool:
    """Whether `adam_rows` steps rows as torch's fused Adam steps their gathered copy, to the bit,
    for copies of every length modulo 64 elements and a few row widths."""
    gen = torch.Generator().manual_seed(0)
    h = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8)
    table = kernels.table(64, 0.9, 0.999, torch.zeros(2, 64, dtype=torch.float64))
    hyper = kernels.hyper(h, table)
    for width, n in [(1, k) for k in range(1, 65)] + [(3, 7), (8, 9), (20, 13), (64, 5)]:
        p, g = torch.randn(n + 3, width, generator=gen), torch.randn(n, width, generator=gen)
        m, v = (
            torch.randn(n + 3, width, generator=gen) * 0.01,
            torch.rand(n + 3, width, generator=gen) * 1e-4,
        )
        rows = torch.arange(n, dtype=torch.long) + 3
        copies = [t[rows].clone() for t in (p, m, v)]
        step = [torch.tensor(20.0)]
        adam(*([c] for c in copies[:1]), [g], *([c] for c in copies[1:]), [], step, **ADAM, **h)
        last = torch.full((n + 3,), 5, dtype=torch.long)
        kernels.adam_rows(hyper, p, m, v, last, rows, g, 5, 21.0)
        if not all(torch.equal(t[rows], c) for t, c in zip((p, m, v), copies)):
            return False
    return True


def _pow_vector() -> int | None:
    """Doubles per step of torch.pow's vector loop (a tensor of n: its first n - n % width elements;
    its scalar rest takes libm's pow, which differs from the vector loop's in the last bit for some
    k), or None where no k below 4,096 tells them apart (then any width gives the same numbers)."""
    base = 0.999
    k = torch.arange(4096, dtype=torch.float64)
    vector = torch.pow(base, k)
    differ = torch.tensor([i for i in range(4096) if math.pow(base, float(i)) != vector[i].item()])
    if len(differ) < 61:
        return None
    for width in (32, 16, 8, 4, 2, 1):
        for n in (37, 53, 61):
            out = torch.pow(base, k[differ[:n]])
            at = n - n % width
            if not (
                torch.equal(out[:at], vector[differ[:at]])
                and not (out[at:] == vector[differ[at:n]]).any()
            ):
                break
        else:
            return width
    return None


def _sqrt() -> int | None | bool:
    """The address of a function that computes torch.sqrt of floats to the bit: MKL's vsSqrt (in
    torch's library, which torch.sqrt calls where torch is built with MKL), None where C's sqrtf
    does, False where neither does."""
    x = torch.rand(4099, generator=torch.Generator().manual_seed(0)) * 1e-6
    want = torch.sqrt(x)
    lib = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
    if hasattr(lib, "vsSqrt"):
        f = lib.vsSqrt
        f.argtypes, f.restype = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p], None
        got = torch.empty_like(x)
        f(len(x), _ptr(x), _ptr(got))
        if torch.equal(got, want):
            return ctypes.cast(f, ctypes.c_void_p).value
    exact = torch.from_numpy(np.sqrt(x.numpy()))
    return None if torch.equal(exact, want) else False


def _catch_up_matches(kernels: Kernels) -> bool:
    """Whether `catch_up` brings rows up to date as `rowadam.RowAdam._catch_up` does, to the bit."""
    from .rowadam import RowAdam  # (rowadam imports this module)

    gen = torch.Generator().manual_seed(0)
    now, n = 1500, 3000
    for width in (1, 8, 64, 300):
        w = torch.nn.Parameter(torch.randn(n, width, generator=gen))
        opt = RowAdam([w], lr=1e-3, deferred=True, row_kernels=False)
        opt.kernels, opt.clock[w] = kernels, now
        m, v = (
            torch.randn(n, width, generator=gen) * 1e-3,
            torch.rand(n, width, generator=gen) * 1e-6,
        )
        last = torch.randint(900, now + 1, (n,), generator=gen)
        st = opt.state[w] = dict(exp_avg=m.clone(), exp_avg_sq=v.clone(), last=last.clone())
        for rows in (torch.arange(n), torch.randperm(n, generator=gen)[:197].sort().values):
            want = [t.index_select(0, rows) for t in (w.data, m, v)]
            opt._catch_up(w, st, rows, *want)
            got = [t.clone() for t in (w.data, m, v, last)]
            kernels.catch_up(opt._kernel_hyper(now), *got, rows, now)
            if not all(torch.equal(g[rows], x) for g, x in zip(got, want)):
                return False
    return True


# values at the edges of `adam_whole`'s shortcuts: signed zeros, subnormals, 2^-125 and 2^-100 (m),
# p about its bound (5e-18 at lr 1e-3); and gradients about 2^-100 and 2^60
EDGES = (0.0, -0.0, 2.0**-149, -(2.0**-126), 2.0**-125, -(2.0**-100), 0.9 * 2.0**-100, 5e-18, 6e-18)
GRAD_EDGES = (-0.0, 1e-40, 2.0**-110, -(2.0**-100), 1.3 * 2.0**-100, 2.0**-97, 2.0**60, -(2.0**61))


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two float32 tensors hold the same bits (torch.equal takes -0 for 0)."""
    return torch.equal(a.view(torch.int32), b.view(torch.int32))


def _whole_matches(kernels: Kernels) -> bool:
    """Whether `adam_whole` steps a tensor as torch's fused Adam does, to the bit, over 10 steps of
    tensors of every length modulo 64 elements and 30 of two longer ones (a large lr; from step 900):
    m of every magnitude, so that most elements (those without gradient) decay through the
    subnormal range to 0, p and v large and small, `EDGES` among all three and `GRAD_EDGES` among
    the gradients."""
    gen = torch.Generator().manual_seed(0)
    edges, grad_edges = torch.tensor(EDGES), torch.tensor(GRAD_EDGES)
    runs = [(k, 1e-3, 1, 10) for k in range(1, 65)] + [(1031, 3e-2, 1, 30), (1031, 1e-3, 900, 30)]
    for n, lr, first, steps in runs:
        h = dict(lr=lr, beta1=0.9, beta2=0.999, eps=1e-8)
        hyper = kernels.hyper(h, torch.zeros(6, 1, dtype=torch.float64))
        scale = torch.pow(2.0, torch.randint(-149, 0, (n,), generator=gen).double())
        m = (torch.randn(n, generator=gen, dtype=torch.float64) * scale).float()
        p = torch.randn(n, generator=gen)
        p[::2] *= 1e-17
        v = torch.rand(n, generator=gen) * 1e-6
        for t in (m, p, v):
            at = torch.randint(n, (n // 8 + 1,), generator=gen)
            t[at] = edges[torch.randint(len(edges), (len(at),), generator=gen)]
        v.abs_()
        mine = [t.clone() for t in (p, m, v)]
        step = torch.tensor(float(first - 1))
        for i in range(steps):
            g = torch.zeros(n)
            hit = torch.rand(n, generator=gen) < 0.05
            g[hit] = torch.randn(int(hit.sum()), generator=gen) * 1e-3
            at = torch.randint(n, (n // 64 + 1,), generator=gen)
            g[at] = grad_edges[torch.randint(len(grad_edges), (len(at),), generator=gen)]
            adam([p], [g], [m], [v], [], [step], **ADAM, **h)
            kernels.adam_whole(hyper, *mine, g, float(first + i))
            if not all(_same_bits(a, b) for a, b in zip(mine, (p, m, v))):
                return False
    return True


def calibrate(lib) -> Kernels | None:
    """The library with what reproduces torch on this machine (`Kernels`), or None."""
    lib.catch_up.restype = lib.adam_rows.restype = None
    lib.catch_up.argtypes = [ctypes.c_void_p] * 6 + [ctypes.c_int64] * 3
    lib.adam_rows.argtypes = [ctypes.c_void_p] * 6 + [ctypes.c_int64] * 2
    lib.adam_rows.argtypes += [ctypes.c_void_p, ctypes.c_int64, ctypes.c_double, ctypes.c_int64]
    lib.adam_whole.restype = None
    whole_args = [ctypes.c_int64, ctypes.c_double, ctypes.c_int64]
    lib.adam_whole.argtypes = [ctypes.c_void_p] * 5 + whole_args
    pow_vector, sqrt = _pow_vector(), _sqrt()
    if sqrt is False:
        return None
    for vector in dict.fromkeys((vector_floats() or 16, 16, 8, 4)):  # this machine's width first
        for tail in (vector // 2, 0, vector // 4):
            kernels = Kernels(lib, vector, tail, pow_vector or vector, sqrt)
            if _adam_matches(kernels):
                if not _catch_up_matches(kernels):
                    return None
                kernels.whole = _whole_matches(kernels)
                if not kernels.whole:
                    warnings.warn(
                        "adam_whole does not reproduce torch's fused Adam to the bit on this "
                        "machine; whole-table steps take torch's (the same numbers, slower)",
                        stacklevel=3,
                    )
                return kernels
    return None


@functools.cache
def load() -> Kernels | None:
    """The kernels, built and calibrated once per process; None: RowAdam's Python path. Draws
    nothing from torch's global random generator (a run's draws are the same with or without)."""
    lib = library(
        SOURCE, "CDLIB_ROW_KERNEL", "deferred Adam takes its Python path (the same numbers, slower)"
    )
    if lib is None:
        return None
    kernels = calibrate(lib)
    if kernels is None:
        warnings.warn(
            "the row kernels do not reproduce torch's Adam to the bit on this machine; deferred "
            "Adam takes its Python path (the same numbers, slower)",
            stacklevel=2,
        )
    return kernels
