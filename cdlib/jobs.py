"""The jobs of a reproduction and where they run: one notebook (or, without Jupyter, what it trains)
for one dataset, executed by papermill in a process of its own, in a local process pool or on a
Dask distributed cluster whose results come back to this machine (`run_jobs`). A failing job
neither stops nor damages the others."""

from __future__ import annotations

import base64
import contextlib
import multiprocessing
import os
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from . import experiments, profiles, runs

KERNEL = "python3"


NB_DIR = runs.REPO / "notebooks"


@dataclass
class Job:
    notebook: str
    parameters: dict
    output: str  # executed notebook path (on the launching machine)
    log: str
    name: str = ""
    threads: int = 1
    retries: int = 2
    status: str = "pending"
    seconds: float = 0.0
    error: str = ""
    files: dict = field(default_factory=dict)  # remote jobs: files to write back, path -> bytes
    env: dict = field(
        default_factory=dict
    )  # environment of the job's kernel (CDLIB_DEADLINE, CDLIB_GROUP_SIZE)


def _execute(job: Job) -> Job:
    """Run one papermill job in this process (a worker of the pool or of a Dask cluster)."""
    import papermill as pm

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(job.threads)
    os.environ.update(job.env)
    Path(job.output).parent.mkdir(parents=True, exist_ok=True)
    Path(job.log).parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    for attempt in range(job.retries + 1):
        with open(job.log, "a") as log:
            log.write(f"== {job.name} attempt {attempt + 1}, parameters {job.parameters}\n")
            log.flush()
            try:
                tmp = str(
                    Path(job.output).with_name(f".{Path(job.output).name}.tmp{os.getpid()}.ipynb")
                )
                pm.execute_notebook(
                    str(NB_DIR / f"{job.notebook}.ipynb"),
                    tmp,
                    parameters=job.parameters,
                    kernel_name=KERNEL,
                    log_output=True,
                    stdout_file=log,
                    stderr_file=log,
                    progress_bar=False,
                    cwd=str(NB_DIR),
                )
                os.replace(tmp, job.output)
                job.status, job.error = "ok", ""
                break
            except pm.PapermillExecutionError as e:  # a cell failed: retrying will not help
                job.status, job.error = "failed", f"{e.ename}: {e.evalue}"
                if os.path.exists(tmp):
                    os.replace(tmp, job.output)  # keep the executed notebook to read the error
                break
            except Exception as e:  # noqa: BLE001 -- kernel did not start or died: try again
                job.status, job.error = "failed", f"{type(e).__name__}: {e}"
                log.write(f"kernel failure: {job.error}; retrying\n")
    job.seconds = time.time() - t0
    return job


def _execute_direct(job: Job) -> Job:
    """Run one training job without papermill or Jupyter (--no-notebooks): what its notebook trains
    (`experiments.train_notebook`), in this process, its output in the job's log."""

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(job.threads)
    os.environ.update(job.env)
    Path(job.log).parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with (
        open(job.log, "a") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        print(f"== {job.name} without a notebook, parameters {job.parameters}", flush=True)
        try:
            torch.set_num_threads(job.threads)
            q = job.parameters
            p = profiles.profile(
                q["profile"], q.get("datasets"), q.get("backbones"), q.get("seeds"), q.get("device")
            )
            df = experiments.train_notebook(job.notebook, p, q.get("results_dir"), progress=False)
            ok = int((df.status == "ok").sum()) if "status" in df else 0
            print(f"{ok} of {len(df)} runs recorded", flush=True)
            job.status, job.error = "ok", ""
        except Exception as e:  # noqa: BLE001 -- one failing job neither stops nor damages the others
            traceback.print_exc()
            job.status, job.error = "failed", f"{type(e).__name__}: {e}"
    job.seconds = time.time() - t0
    return job


def _execute_remote(job: Job, inputs: dict) -> Job:
    """Run a job on a Dask worker without a shared disk: the launcher's records and tables in
    ({path under results: text}), new records, tables, figures, notebook and log out."""
    with tempfile.TemporaryDirectory() as tmp:
        res = Path(tmp) / "results"
        for name, text in inputs.items():
            (res / name).parent.mkdir(parents=True, exist_ok=True)
            (res / name).write_text(text)
        local = Job(
            job.notebook,
            dict(job.parameters, results_dir=str(res), figures_dir=str(Path(tmp) / "figures")),
            str(Path(tmp) / "out.ipynb"),
            str(Path(tmp) / "job.log"),
            job.name,
            job.threads,
            job.retries,
            env=job.env,
        )
        _execute(local)
        job.status, job.error, job.seconds = local.status, local.error, local.seconds
        files = {}
        for p in [*_records(res), *res.rglob("*.csv")]:  # (v1/, next/: tables in folders)
            name = str(p.relative_to(res))
            if inputs.get(name) != p.read_text():
                files[name] = p.read_bytes()
        for p in (Path(tmp) / "figures").glob("*"):
            files[f"figures/{p.name}"] = p.read_bytes()
        for src, key in ((local.output, "notebook"), (local.log, "log")):
            if os.path.exists(src):
                files[key] = Path(src).read_bytes()
        job.files = {k: base64.b64encode(v).decode() for k, v in files.items()}
    return job


def _records(results: Path) -> list[Path]:
    """Every run record under `results` (each folder of runs.RECORD_FOLDERS)."""
    return [p for folder in runs.RECORD_FOLDERS for p in sorted((results / folder).glob("*.json"))]


def _write_back(job: Job, results: Path, figures: Path) -> None:
    for key, blob in job.files.items():
        data = base64.b64decode(blob)
        if key == "notebook":
            dest = Path(job.output)
        elif key == "log":
            dest = Path(job.log)
        elif key.startswith("figures/"):
            dest = figures / key.split("/", 1)[1]
        else:
            dest = results / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, dest)
    job.files = {}


def run_jobs(
    jobs: list[Job],
    n_jobs: int,
    desc: str,
    scheduler: str | None = None,
    results: Path | None = None,
    figures: Path | None = None,
    direct: bool = False,
) -> list[Job]:
    """Run jobs on a local process pool (or a Dask cluster), one overall progress bar. direct: training
    jobs without papermill (`_execute_direct`), in fresh (spawned) processes, CUDA-safe."""
    if not jobs:
        return []
    done = []
    bar = tqdm(total=len(jobs), desc=desc, unit="job")
    if scheduler:
        from dask.distributed import Client
        from dask.distributed import as_completed as dask_completed

        inputs = {
            str(p.relative_to(results)): p.read_text()
            for p in [*_records(results), *results.rglob("*.csv")]
        }
        with Client(scheduler) as client:
            futures = [
                client.submit(
                    _execute_remote, j, inputs, pure=False, key=f"cdlib-{j.name}-{time.time_ns()}"
                )
                for j in jobs
            ]
            for f in dask_completed(futures):
                j = f.result()
                _write_back(j, results, figures)
                done.append(j)
                bar.set_postfix_str(f"{j.name}: {j.status}")
                bar.update()
    else:
        ctx = multiprocessing.get_context("spawn") if direct else None
        with ProcessPoolExecutor(max_workers=min(n_jobs, len(jobs)), mp_context=ctx) as pool:
            futures = {pool.submit(_execute_direct if direct else _execute, j): j for j in jobs}
            for f in as_completed(futures):
                try:
                    j = f.result()
                except Exception as e:  # noqa: BLE001 -- the worker process itself died
                    j = futures[f]
                    j.status, j.error = "failed", f"{type(e).__name__}: {e}"
                done.append(j)
                bar.set_postfix_str(f"{j.name}: {j.status}")
                bar.update()
    bar.close()
    return done
