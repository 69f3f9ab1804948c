"""Timings on one dataset (default ml-1m): `python -m cdlib.bench [--dataset ml-1m] [--device cpu] [--out F.json]`.

Prints seconds per training epoch (CDAE teacher; student with method none and with CD
student-guided), the student-guided sample refresh for all users, full-protocol evaluation of
all users, the GFLOP/s of one CDAE training epoch beside a bare torch.matmul of the same shapes,
and seconds per epoch of groups of runs trained together (`--groups 1,5,15`, `loop.fit_group`), and
from these the paper profile's training time on this device (`--estimate F.json` gives it for a record).
Models are untrained (timings do not depend on the weights), so nothing is trained beforehand.

`--steps`: only the dense training step against the sparse ones (`Config.step`), seconds per epoch
of the CDAE and NeuMF teachers and CD students side by side with their ratios, and peak memory
(`stepbench.step_table`; results/bench/steps_<dataset>_<device>.json).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import costs, data, index, metrics, models, runs
from .config import STUDENT_SIZES, TEACHER_SIZE, Config, Execution, build_model, dataset_for
from .loop import fit, fit_group
from .samplers import CDSampler, top_missing


def timed(fn, repeat: int = 3, warmup_s: float = 0.0) -> float:
    """Best wall time of `repeat` calls, after warm-up calls (at least one) for `warmup_s` seconds."""
    t = time.perf_counter()
    fn()
    while time.perf_counter() - t < warmup_s:
        fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def write_probe(record: str, rec: dict) -> Path:
    """A tools/*_probe.py record `rec` (with its provenance), written atomically to
    results/`record`."""
    path = runs.results_dir() / record
    runs.write_atomic(path, json.dumps(rec, indent=1) + "\n")
    return path


def probe_command(doc: str, probe, write_record, option: str = "--datasets", what="datasets"):
    """The command line of a tools/*_probe.py: `write_record()`, its record; or, given `option` (a
    comma-separated list of `what`), `probe` on those, printed, no record written."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument(option, help=f"comma-separated {what}; print only, write no record")
    chosen = getattr(ap.parse_args(), option.lstrip("-"))
    if chosen:
        probe(chosen.split(","))
    else:
        print(f"wrote {write_record()}")


def perturbed_model(dataset: str, backbone: str, size: int, std: float = 0.3):
    """A model of `dataset` at its initial weights plus N(0, `std`) noise (weights of a trained
    model's scale, not the init's 0.01), for timing and comparing scoring paths: (model, dataset)."""
    cfg = Config(dataset=dataset, backbone=backbone, size=size, device="cpu").canonical()
    ds = dataset_for(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, ds, torch.device("cpu")).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * std)
    return model, ds


def epoch_seconds(
    cfg: Config, ds, teacher=None, epochs: int = 2, execution: Execution | None = None
) -> float:
    out = fit(
        Config(**{**cfg.__dict__, "epochs": epochs, "patience": epochs, "min_epochs": epochs}),
        ds,
        teacher,
        progress=False,
        execution=execution,
    )
    return min(c["seconds"] for c in out["curve"])


def group_epoch_seconds(
    cfg: Config, ds, teacher=None, n: int = 5, epochs: int = 2, execution: Execution | None = None
) -> float:
    """Seconds per epoch (best of `epochs`) of a group of `n` runs of `cfg`, seeds 0..n-1, trained
    together by `loop.fit_group` (one stacked step for all members)."""
    cfgs = [
        Config(
            **{
                **cfg.__dict__,
                "seed": s,
                "epochs": epochs,
                "patience": epochs,
                "min_epochs": epochs,
            }
        )
        for s in range(n)
    ]
    return min(
        c["seconds"]
        for c in fit_group(cfgs, ds, [teacher] * n, progress=False, execution=execution)[0]["curve"]
    )


def group_table(
    dataset: str,
    ds,
    device,
    sizes=(1, 5, 15),
    student_size: int = 20,
    epochs: int = 2,
    on_row=None,
    rounds: int = 2,
    shapes: str | None = None,
    execution: Execution | None = None,
) -> pd.DataFrame:
    """Seconds per epoch of groups of each size, for the CDAE teacher, the CDAE student distilled by
    CD (student-guided), the NeuMF teacher and the NeuMF student distilled by CD (student-guided), with
    throughput in member-epochs per second, its gain over the same runs one after another, and for
    CDAE the effective GFLOP/s (`cdae_epoch_flops` per member). The sizes of a kind are timed in turn,
    `rounds` times over, and each keeps its best: a one-off slow measurement of the lone run (a shared
    machine's noise) would otherwise pass for a gain of the group. on_row(rows so far) is called after
    each row (main() saves what it has, so that a time limit leaves the rows measured)."""
    dev = models.default_device(device)
    base = dict(dataset=dataset, device=dev.type, shapes=shapes)
    torch.manual_seed(0)
    teachers = {
        b: models.build(b, ds.train, TEACHER_SIZE[b], 0.5, dev).eval() for b in TEACHER_SIZE
    }
    kinds = [
        ("CDAE teacher", Config(**base, backbone="cdae").canonical(), None),
        (
            "CDAE student, CD student-guided",
            Config(
                **base, backbone="cdae", size=student_size, method="cd", guide="student"
            ).canonical(),
            "cdae",
        ),
        ("NeuMF teacher", Config(**base, backbone="neumf").canonical(), None),
        (
            "NeuMF student, CD student-guided",
            Config(
                **base,
                backbone="neumf",
                size=STUDENT_SIZES["neumf"][1],
                method="cd",
                guide="student",
            ).canonical(),
            "neumf",
        ),
    ]
    rows = []
    for what, cfg, teacher in kinds:
        best = {n: float("inf") for n in sizes}
        for _ in range(rounds):  # interleaved: 1, 5, 15, 1, 5, 15
            for n in sizes:
                best[n] = min(
                    best[n],
                    group_epoch_seconds(cfg, ds, teachers.get(teacher), n, epochs, execution),
                )
        one = best.get(1)
        for n in sizes:
            sec = best[n]
            row = {
                "run": what,
                "size": cfg.size,
                "group": n,
                "seconds per epoch": sec,
                "member-epochs per second": n / sec,
                "gain over one after another": (n * one / sec) if one else np.nan,
                "GFLOP/s": (
                    n * cdae_epoch_flops(ds.n_users, ds.n_items, cfg.size) / sec / 1e9
                    if cfg.backbone == "cdae"
                    else np.nan
                ),
            }
            rows.append(row)
            if on_row is not None:
                on_row(pd.DataFrame(rows))
            print(
                f"{what:<34s} group {n:>2d}: {sec:8.3f} s/epoch, {n / sec:6.2f} member-epochs/s",
                flush=True,
            )
    return pd.DataFrame(rows)


def cdae_epoch_flops(n_users: int, n_items: int, hidden: int) -> float:
    """Dense multiply-adds of one CDAE epoch x 2: encoder forward + weight gradient (2 x 2UIH),
    decoder forward + weight and input gradients (3 x 2UIH): 10 U I H."""
    return 10.0 * n_users * n_items * hidden


def matmul_gflops(n_users: int, n_items: int, hidden: int, batch: int, device) -> float:
    """GFLOP/s of bare torch.matmul over the same shapes as one CDAE epoch."""
    x = torch.rand(batch, n_items, device=device)
    w = torch.rand(n_items, hidden, device=device)
    h = torch.rand(batch, hidden, device=device)
    g = torch.rand(batch, n_items, device=device)
    steps = -(-n_users // batch)

    def epoch():
        for _ in range(steps):
            x @ w  # encoder forward            [B,I]x[I,H]
            x.T @ h  # encoder weight gradient    [I,B]x[B,H]
            h @ w.T  # decoder forward            [B,H]x[H,I]
            g.T @ h  # decoder weight gradient    [I,B]x[B,H]
            g @ w  # decoder input gradient     [B,I]x[I,H]
        if x.is_cuda:
            torch.cuda.synchronize()

    return cdae_epoch_flops(steps * batch, n_items, hidden) / timed(epoch, 2) / 1e9


def latency_ms(model, users: torch.Tensor, repeat: int | None = None) -> float:
    """Best wall time (ms) of scoring all items for `users`, after 0.5 s of warm-up calls (a GPU
    idles at low clocks: one call is not enough); best of `repeat` (default 5 on the CPU, 50 on a
    GPU, where a call takes under a ms)."""
    dev = model.device
    repeat = repeat or (5 if dev.type == "cpu" else 50)

    def once():
        model.score_all(users)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    return 1e3 * timed(once, repeat, warmup_s=0.5)


def inference(
    backbone: str, size: int, ds, batch: int = 256, device=None, repeat: int | None = None
) -> dict:
    """Parameters, latency (ms) and throughput (users/s) of scoring all items for a batch of users
    with an untrained model of this backbone and size (`latency_ms`)."""
    dev = models.default_device(device)
    torch.manual_seed(0)
    m = models.build(backbone, ds.train, size, 0.5, dev).eval()
    users = torch.arange(min(batch, ds.n_users), device=dev)
    ms = latency_ms(m, users, repeat)
    return {
        "backbone": backbone,
        "size": size,
        "n_params": m.n_params(),
        "batch": len(users),
        "latency_ms": ms,
        "throughput_users_s": 1e3 * len(users) / ms,
        "device": runs.device_name(dev),
    }


def timing_table(
    datasets, backbones, devices=None, batch: int = 256, keep: pd.DataFrame | None = None
) -> pd.DataFrame:
    """`inference` of the teacher and every student size per dataset, backbone and device (Table 8);
    `devices` default: cpu, and cuda if present.

    Rows of `keep` (recorded timings) are kept unless this call measures their dataset, backbone and
    kind of device again, so a GPU machine adds its rows to the CPU ones instead of replacing them.
    """
    devices = devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for d in datasets:
        ds = data.load(d)
        for b in backbones:
            sizes = [("Teacher", TEACHER_SIZE[b])] + [("Student", s) for s in STUDENT_SIZES[b]]
            for label, size in sizes:
                for dev in devices:
                    rows.append(
                        {"dataset": d, "label": label, **inference(b, size, ds, batch, dev)}
                    )
    new = pd.DataFrame(rows)
    if keep is None or keep.empty:
        return new

    def keys(df):
        return list(zip(df.dataset, df.backbone, df.device.map(runs.device_kind)))

    measured = set(keys(new))
    old = keep[[k not in measured for k in keys(keep)]]
    return pd.concat([old, new], ignore_index=True)[new.columns]


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dataset", default="ml-1m")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    ap.add_argument("--student-size", type=int, default=20)
    ap.add_argument(
        "--groups", default="1,5,15", help="group sizes to time (loop.fit_group); '' for none"
    )
    ap.add_argument(
        "--rounds", type=int, default=2, help="times each group size is timed, in turn (best kept)"
    )
    ap.add_argument(
        "--shapes",
        choices=("dynamic", "static"),
        default=None,
        help="the training step's shapes (train.Config.shapes; default: static on CUDA, else dynamic)",
    )
    ap.add_argument(
        "--compile",
        metavar="MODE",
        default=None,
        help="torch.compile the step's forward pass and loss in this mode (CDLIB_COMPILE; static shapes)",
    )
    ap.add_argument(
        "--out", help="also write the timings, with their provenance, to this JSON file"
    )
    ap.add_argument(
        "--estimate",
        metavar="JSON",
        help="measure nothing: the paper profile's training time on the "
        "device of this bench record (costs.device_estimate)",
    )
    ap.add_argument(
        "--steps",
        action="store_true",
        help="only the dense step against the sparse ones (Config.step): seconds per epoch of each "
        "kind of run side by side, their ratios and the process's peak memory "
        "(stepbench.step_table)",
    )
    args = ap.parse_args(argv)
    if args.steps:
        from .stepbench import steps_main  # (stepbench imports bench's helpers)

        return steps_main(args)
    if args.estimate:
        print(
            json.dumps(costs.device_estimate(json.loads(Path(args.estimate).read_text())), indent=1)
        )
        return
    t0 = time.time()
    execution = Execution(compile=args.compile)
    dev = models.default_device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        ap.error(
            "--device cuda: this machine has no CUDA device (torch.cuda.is_available() is False)"
        )
    ds = data.load(args.dataset)
    print(f"{ds}  device: {runs.device_name(dev)}  torch {torch.__version__}")
    rows = []

    def record(groups=None, **extra) -> dict:
        return {
            "seconds": dict(rows),
            "groups": [] if groups is None else groups.to_dict(orient="records"),
            "shapes": teacher_cfg.shapes,
            "compile": args.compile,
            "wall_seconds": time.time() - t0,
            "complete": False,
            "dataset": runs.dataset_info(ds),
            "provenance": runs.provenance(dev, args.compile),
            **extra,
        }

    def save(
        groups=None, **extra
    ):  # after every measurement: a run cut short by a time limit keeps what it measured
        if args.out:
            runs.write_atomic(Path(args.out), json.dumps(record(groups, **extra), indent=1) + "\n")

    def measured(what, seconds, extra=""):
        rows.append((what, seconds))
        print(f"{what:<58s} {seconds:8.3f} s {extra}", flush=True)
        save()

    base = dict(dataset=args.dataset, backbone="cdae", device=dev.type, shapes=args.shapes)
    teacher_cfg = Config(**base).canonical()
    print(f"training step: {teacher_cfg.shapes} shapes, {args.compile or 'eager'}")
    warm = (
        2 if args.compile else 0
    )  # epochs that compile (a new graph per new shape) before the timed ones
    t_sec = epoch_seconds(teacher_cfg, ds, epochs=2 + warm, execution=execution)
    flops = cdae_epoch_flops(ds.n_users, ds.n_items, teacher_cfg.size)
    measured("CDAE teacher (H=200) epoch", t_sec, f"({flops / t_sec / 1e9:.1f} GFLOP/s)")
    mm = matmul_gflops(ds.n_users, ds.n_items, teacher_cfg.size, teacher_cfg.batch_size, dev)
    print(f"{'  bare torch.matmul, same shapes':<58s} {flops / mm / 1e9:8.3f} s ({mm:.1f} GFLOP/s)")

    torch.manual_seed(0)
    teacher = models.build("cdae", ds.train, teacher_cfg.size, 0.5, dev).eval()
    s_none = Config(**base, size=args.student_size).canonical()
    measured(
        f"CDAE student (H={args.student_size}) epoch, method none",
        epoch_seconds(s_none, ds, epochs=2 + warm, execution=execution),
    )
    s_cd = Config(**base, size=args.student_size, method="cd", guide="student").canonical()
    measured(
        f"CDAE student (H={args.student_size}) epoch, CD student-guided",
        epoch_seconds(s_cd, ds, teacher, 2 + warm, execution),
    )

    student = models.build("cdae", ds.train, args.student_size, 0.5, dev).eval()
    pos = index.UserItems(ds.train, dev)
    sampler = CDSampler(pos, teacher, guide="student")
    refresh = timed(lambda: top_missing(student, pos, sampler.max_rank))
    cd_epoch = rows[-1][1]
    measured(
        "student-guided refresh, all users (top-100 missing)",
        refresh,
        f"({100 * refresh / cd_epoch:.1f}% of the CD student epoch; target <= 10%)",
    )

    for backbone, size in (("cdae", 200), ("cdae", args.student_size), ("neumf", 64), ("neumf", 8)):
        m = models.build(backbone, ds.train, size, 0.5, dev).eval()
        sec = timed(lambda m=m: metrics.evaluate(m, ds, "test", "full", positives=pos), 2)
        measured(
            f"full-protocol evaluation, all users, {backbone} size {size}",
            sec,
            "(target < 2 s)" if backbone == "cdae" and size == 200 else "",
        )
    for backbone, size in (("neumf", 64), ("neumf", 8)):
        cfg = Config(
            dataset=args.dataset, backbone=backbone, size=size, device=dev.type, shapes=args.shapes
        ).canonical()
        measured(
            f"NeuMF (d={size}) epoch, method none",
            epoch_seconds(cfg, ds, epochs=1 + warm, execution=execution),
        )
    groups = pd.DataFrame()
    if args.groups:
        groups = group_table(
            args.dataset,
            ds,
            dev,
            [int(n) for n in args.groups.split(",")],
            args.student_size,
            on_row=save,
            rounds=args.rounds,
            shapes=args.shapes,
            execution=execution,
        )
    est = costs.device_estimate(record(groups))  # from the tables in results/ (empty without them)
    if est:
        print(
            f"paper profile, one run at a time: {est['hours']:.1f} h of training epochs on this device "
            f"({est['runs']} runs, {est['epochs']:.0f} epochs; costs.device_estimate)"
        )
    if args.out:
        save(groups, complete=True, paper_profile_estimate=est)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
