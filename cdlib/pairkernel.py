"""A sparse NeuMF's training logits as one autograd node (`pairs.cpp`, a PyTorch C++ extension built
on first use): the forward operations of `models.NeuMF.pair_logits`, and a backward that calls the
operations autograd's formulas call on their graph, so the same logits and gradients, bit for bit,
with ~20 autograd nodes and their Python calls replaced by one. Epochs of deferred Adam, one thread,
nothing else running: a d = 8 student 1.15x faster on citeulike-t and 1.12x on yelp, a d = 64 teacher
1.06x on citeulike-t, with the same weights (`tools/pair_probe.py`: results/bench/pair_kernel_cpu.json;
an earlier run of the probe gave 1.11x, 1.16x and 1.09x);
a d = 8 RD student's forward and backward 1.43 -> 1.04 ms a step. The same node with its backward in
Python was slower than autograd's graph: at this size a step pays for each operation's call, which
C++ makes cheaper, not for the graph. Used for the sparse steps on a CPU (`Config.step` "sparse",
"deferred"); elsewhere, where the extension cannot be built (no C++ compiler, ninja or PyTorch's
headers: warned), or with CDLIB_PAIR_KERNEL=off, autograd's graph of `_pairs`.

Bit for bit is checked, not assumed: `load` compares the extension's logits and every gradient with
autograd's (`torch.equal`) on random models of a few shapes before it is used (`_matches`), since a
PyTorch release may change a formula, and gives it up, warned, where any differs."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import tempfile
import warnings
from pathlib import Path

import torch

from .sparse import fresh

SOURCE = Path(__file__).with_name("pairs.cpp")
FALLBACK = "a sparse NeuMF trains through autograd's graph (the same numbers, slower)"


def _build():
    """The extension, compiled once per source and PyTorch version into PyTorch's extension folder
    ($TORCH_EXTENSIONS_DIR, default ~/.cache/torch_extensions; shared by every process and test,
    whatever their $CDLIB_CACHE), ~40 s on two cores. Each build runs in a folder of its own and its
    library is moved into place whole (`os.replace`): a process stopped mid-build leaves no lock
    (torch's own build folder would, and every later process would wait on it) and no half-written
    library; processes that build at once each build, and the last one's move wins."""
    from torch.utils import cpp_extension

    key = hashlib.sha256(SOURCE.read_bytes() + torch.__version__.encode()).hexdigest()[:16]
    name = f"cdlib_pairs_{key}"
    base = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    lib = Path(base) / "cdlib" / f"{name}.so"
    if not lib.is_file():
        lib.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=lib.parent, prefix=f".{name}-") as tmp:
            module = cpp_extension.load(name, [str(SOURCE)], ["-O2"], build_directory=tmp)
            os.replace(Path(tmp) / f"{name}.so", lib)
        return module
    spec = importlib.util.spec_from_file_location(name, lib)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def load():
    """The built extension, checked (`_matches`); None where CDLIB_PAIR_KERNEL=off, the build fails or
    the check does (both warned)."""
    if os.environ.get("CDLIB_PAIR_KERNEL", "on") == "off":
        return None
    try:
        ext = _build()
    except Exception as e:  # noqa: BLE001 -- no compiler, ninja or headers: autograd's graph
        warnings.warn(
            f"could not build {SOURCE} (a C++ compiler, ninja and PyTorch's headers are needed; "
            f"`pip install ninja` gives ninja); {FALLBACK}: {type(e).__name__}: {e}",
            stacklevel=3,
        )
        return None
    if not _matches(ext):
        warnings.warn(
            f"{SOURCE} does not reproduce autograd's gradients on this PyTorch "
            f"({torch.__version__}); {FALLBACK}",
            stacklevel=3,
        )
        return None
    return ext


def pair_logits(model, users, rows, items, ext) -> torch.Tensor:
    """`models.NeuMF.pair_logits` of a sparse NeuMF through the extension `ext` (`load`'s); the
    tables' rows brought up to date first (`sparse.fresh`), in the order its look-ups read them."""
    gu, gi, mu, mi = (
        model.gmf_user.weight,
        model.gmf_item.weight,
        model.mlp_user.weight,
        model.mlp_item.weight,
    )
    fresh(gu, users)
    fresh(mu, users)
    fresh(gi, items)
    fresh(mi, items)
    l1, l2, out = model.layer1, model.layer2, model.out
    return ext.pair_logits(
        users, rows, items, model.size, gu, gi, mu, mi,
        l1.weight, l1.bias, l2.weight, l2.bias, out.weight, out.bias,
    )  # fmt: skip


# (users, items, d, mlp_scale, batch users, pairs) of `_matches`: a student's and a teacher's
# widths, NCF's wider tower, and batches of one user and of one pair
CHECKS = (
    (300, 2000, 8, 1, 16, 1300),
    (300, 2000, 64, 1, 16, 700),
    (50, 80, 8, 2, 1, 7),
    (50, 80, 2, 1, 3, 1),
)


def gradients(model, users, rows, items, dz, ext=None) -> tuple[torch.Tensor, dict]:
    """The logits of (users[rows], items) and each parameter's gradient of sum(logits * dz), through
    the extension `ext` or (None) autograd's graph of `_pairs`; sparse gradients as (ids, rows)."""
    model.zero_grad(set_to_none=True)
    if ext is None:
        z = model._pairs(*model._user_parts(users), rows, items)
    else:
        z = pair_logits(model, users, rows, items, ext)
    (z * dz).sum().backward()
    grads = {
        n: (p.grad._indices(), p.grad._values()) if p.grad.is_sparse else p.grad
        for n, p in model.named_parameters()
    }
    model.zero_grad(set_to_none=True)
    return z.detach(), grads


def _matches(ext) -> bool:
    """Whether the extension gives autograd's logits and gradients, `torch.equal`, on random sparse
    NeuMFs of the `CHECKS` shapes."""
    gen = torch.Generator().manual_seed(0)
    # (the models' initialisation draws from the global RNG, which the check leaves as it was)
    with torch.random.fork_rng(devices=[]):
        return all(_matches_one(ext, gen, *shape) for shape in CHECKS)


def _matches_one(ext, gen, n_users: int, n_items: int, d: int, scale: int, b: int, n: int) -> bool:
    from .models import NeuMF

    model = NeuMF(n_users, n_items, d, mlp_scale=scale, sparse=True, init="ncf")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    users = torch.randint(0, n_users, (b,), generator=gen)
    rows = torch.randint(0, b, (n,), generator=gen)
    items = torch.randint(0, n_items, (n,), generator=gen)
    dz = torch.randn(n, generator=gen)
    want, got = (gradients(model, users, rows, items, dz, e) for e in (None, ext))
    return torch.equal(want[0], got[0]) and _same(want[1], got[1])


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        all(torch.equal(x, y) for x, y in zip(a[k], b[k]))
        if isinstance(a[k], tuple)
        else torch.equal(a[k], b[k])
        for k in a
    )
