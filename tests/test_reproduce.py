"""The whole pipeline end to end under the smoke profile: papermill, in parallel, every notebook,
into a temporary results directory; once on the local process pool and once on a Dask cluster."""

import dataclasses
import json

import pandas as pd
import pytest

from cdlib import profiles, reproduce, tables


def check_outputs(res):
    for nb in reproduce.NOTEBOOKS:
        assert (res / "notebooks" / f"{nb}.ipynb").is_file(), nb
    for table in (
        "00_tuning",
        "01_datasets",
        "02_teachers",
        "03_main",
        "03_gain_cd_over_rd",
        "04_sampling",
        "05_guidance",
        "06_size",
        "07_sensitivity",
        "08_efficiency",
        "claims",
    ):
        assert (res / f"{table}.csv").is_file(), table
    main = pd.read_csv(res / "03_main_runs.csv")
    assert set(main.label) >= {"Teacher", "Student", "RD", "CD-T", "CD-S", "CD-H"}
    assert (main.status == "ok").all()
    for fig in (
        "03_main_ndcg10",
        "03_main_ndcg10_full",
        "05_guidance_curves",
        "06_size_ndcg10",
        "07_sensitivity_ndcg10",
        "08_accuracy_vs_latency",
        "10_your_data_ndcg10",
    ):
        assert (res / "figures" / f"{fig}.png").is_file() and (
            res / "figures" / f"{fig}.pdf"
        ).is_file()
    records = [json.loads(p.read_text()) for p in (res / "runs").glob("*.json")]
    assert records and all(r["config"]["subset_users"] == 150 for r in records)
    assert {r["config"]["dataset"] for r in records} == {
        "ml-100k",
        "data/synthetic.inter",
    }  # notebook 10's own file
    tuning = pd.read_csv(res / "00_tuning.csv")
    assert tuning.chosen.sum() == 8  # 4 stages x 2 backbones
    claims = pd.read_csv(res / "claims.csv")
    assert claims.claim.str.startswith("3. CD beats RD").any()
    assert {"held (sampled)", "held (full)", "p Holm (sampled)", "p Holm (full)"} <= set(
        claims.columns
    )


def test_smoke_profile_local_pool(tmp_path, monkeypatch, capsys):
    """The GPU machine's workflow (`cdlib.reproduce`'s docstring): `--no-notebooks` trains every
    run, then the notebooks, executed by papermill on the same results, find each one recorded:
    they train none and rewrite no record (resumable), and every notebook, table and figure is
    there. Training inside the notebooks is the Dask test's."""
    monkeypatch.setenv("CDLIB_CACHE", str(tmp_path / "cache"))
    res = tmp_path / "results"
    argv = ["--profile", "smoke", "--results", str(res), "--jobs", "2"]
    assert reproduce.main(argv + ["--no-notebooks"]) == 0
    assert not list(res.glob("*.csv")) and not (res / "notebooks").exists()  # no report stage
    trained = {p: p.stat().st_mtime_ns for p in (res / "runs").glob("*.json")}
    assert trained
    assert reproduce.main(argv) == 0
    check_outputs(res)
    assert "jobs ok" in capsys.readouterr().out
    after = {p: p.stat().st_mtime_ns for p in (res / "runs").glob("*.json")}
    new = {p for p in after if p not in trained}
    assert {json.loads(p.read_text())["config"]["dataset"] for p in new} == {
        "data/synthetic.inter"
    }  # notebook 10 trains its own file; nothing of ml-100k was left to train
    assert {p: after[p] for p in trained} == trained


def test_no_notebooks_refuses_a_scheduler(tmp_path):
    with pytest.raises(SystemExit):
        reproduce.main(
            [
                "--profile",
                "smoke",
                "--results",
                str(tmp_path / "r"),
                "--no-notebooks",
                "--scheduler",
                "tcp://127.0.0.1:1",
            ]
        )


def test_failing_job_is_named_and_others_finish(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CDLIB_CACHE", str(tmp_path / "cache"))
    res = tmp_path / "results"
    rc = reproduce.main(
        [
            "--profile",
            "smoke",
            "--results",
            str(res),
            "--jobs",
            "2",
            "--notebooks",
            "02",
            "--datasets",
            "ml-100k,no-such-dataset",
        ]
    )
    assert rc == 1
    err = capsys.readouterr().err
    assert "FAILED 02/no-such-dataset" in err and "unknown dataset" in err
    assert "FAILED 02/ml-100k" not in err
    assert (res / "notebooks" / "02_teachers__ml-100k.ipynb").is_file()
    # both teachers of ml-100k recorded, with the tuning stage they rest on (one point per stage, 2 backbones)
    assert len(list((res / "runs").glob("*.json"))) == 8


def test_smoke_profile_on_dask_local_cluster(tmp_path, monkeypatch):
    """The three stages (tuning, training, report) on a Dask cluster; notebooks 00 and 03 only, as
    every notebook goes through the same scheduler path and the local-pool test runs them all."""
    distributed = pytest.importorskip("dask.distributed")
    monkeypatch.setenv("CDLIB_CACHE", str(tmp_path / "cache"))
    res = tmp_path / "results"
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cl:
        argv = ["--profile", "smoke", "--results", str(res), "--notebooks", "00,03"]
        assert reproduce.main(argv + ["--scheduler", cl.scheduler_address]) == 0
    for nb in ("00_tuning", "00_tuning__ml-100k", "03_main", "03_main__ml-100k"):
        assert (res / "notebooks" / f"{nb}.ipynb").is_file(), nb
    assert pd.read_csv(res / "00_tuning.csv").chosen.sum() == 8  # 4 stages x 2 backbones
    main = pd.read_csv(res / "03_main_runs.csv")
    assert set(main.label) >= {"Teacher", "Student", "RD", "CD-T", "CD-S", "CD-H"}
    assert (main.status == "ok").all()
    recorded = {p.stem for folder in ("runs", "ials") for p in (res / folder).glob("*.json")}
    assert set(main.key) <= recorded  # the rows come from the runs the cluster trained


def test_help_says_what_each_profile_costs(capsys):
    with pytest.raises(SystemExit):
        reproduce.main(["--help"])
    out = capsys.readouterr().out
    for name in ("smoke", "quick", "paper"):
        assert name in out
    assert "--scheduler" in out and "--jobs" in out


def test_plan_passes_seeds_and_backbones_to_every_job(tmp_path):
    tuning, training, report, last = reproduce.plan(
        "paper",
        ["ml-1m", "/data/my.csv"],
        ["00_tuning", "03_main", "09_summary"],
        tmp_path,
        tmp_path,
        tmp_path,
        2,
        seeds=[1],
        backbones=["neumf"],
    )
    for job in tuning + training + report + last:
        assert job.parameters["seeds"] == [1] and job.parameters["backbones"] == ["neumf"]
    assert [j.name for j in tuning] == ["00/ml-1m"]  # my.csv uses ml-1m's tuning (paper profile)
    assert [j.name for j in training] == ["03/ml-1m", "03/my.csv"] and [
        j.notebook for j in last
    ] == ["09_summary"]
    assert training[1].output.endswith("03_main__my.csv.ipynb") and training[1].parameters[
        "datasets"
    ] == ["/data/my.csv"]
    # profile next's scope: the sensitivity figure on ml-1m and citeulike-t only; no notebook
    # runs on an empty grid
    _, training, report, _ = reproduce.plan(
        "next", ["ml-100k", "ml-1m"], ["06_student_size", "07_sensitivity"], *[tmp_path] * 3, 2
    )
    assert [j.name for j in training] == ["06/ml-100k", "06/ml-1m", "07/ml-1m"]
    assert tables.collect({}).columns[:7].tolist() == [*tables.COLLECTED, "status"]


def test_device_cuda_without_cuda_is_refused_before_anything_runs(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit):
        reproduce.main(["--profile", "smoke", "--results", str(tmp_path / "r"), "--device", "cuda"])
    assert "no CUDA device" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_group_size_reaches_the_jobs_and_groups_their_runs(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("CDLIB_CACHE", str(tmp_path / "cache"))
    res = tmp_path / "results"
    assert (
        reproduce.main(
            [
                "--profile",
                "smoke",
                "--results",
                str(res),
                "--jobs",
                "1",
                "--notebooks",
                "02",
                "--datasets",
                "ml-100k",
                "--backbones",
                "cdae",
                "--seeds",
                "1,2",
                "--group-size",
                "2",
            ]
        )
        == 0
    )
    recs = [json.loads(p.read_text()) for p in (res / "runs").glob("*.json")]
    pair = [r for r in recs if r["config"]["seed"] in (1, 2)]
    assert len(pair) == 2 and all(
        sorted(r["group"]) == sorted(x["key"] for x in pair) for r in pair
    )
    with pytest.raises(SystemExit):
        reproduce.main(["--profile", "smoke", "--results", str(res), "--group-size", "0"])


def test_a_profile_with_a_sparse_step_trains_its_runs_one_at_a_time(tmp_path, monkeypatch, capsys):
    """The sparse steps do not stack (loop.fit_group refuses a group): reproduce asks for groups of
    one, and refuses --group-size above 1 before anything runs."""
    sparse_smoke = dataclasses.replace(profiles.PROFILES["smoke"], step="deferred")
    monkeypatch.setitem(profiles.PROFILES, "smoke", sparse_smoke)
    res = tmp_path / "results"
    with pytest.raises(SystemExit):
        reproduce.main(["--profile", "smoke", "--results", str(res), "--group-size", "2"])
    assert "step='deferred'" in capsys.readouterr().err and not res.exists()
    monkeypatch.setenv("CDLIB_COMPILE", "default")  # every job would fail on its first run
    with pytest.raises(SystemExit):
        reproduce.main(["--profile", "smoke", "--results", str(res)])
    assert "unset CDLIB_COMPILE" in capsys.readouterr().err and not res.exists()
    monkeypatch.delenv("CDLIB_COMPILE")
    assert reproduce.default_group_size(sparse_smoke, "cuda") == 1
    dense = profiles.PROFILES["paper"]
    assert reproduce.default_group_size(dense, "cuda") == 15
    assert (
        reproduce.default_group_size(dense, "cpu") == reproduce.default_group_size(dense, None) == 1
    )
