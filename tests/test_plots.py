import pandas as pd

from cdlib import plots, runs


def test_tuning_curves_draw_a_line_per_run_and_seed_in_its_cell_and_stage(tmp_path):
    """A panel per backbone x stage (rows) and dataset (columns), a line per recorded run of that
    cell and stage, seeds apart; a run not recorded draws nothing, an empty panel says so."""
    rows = []
    for dataset, backbone, stage, lr, seed, status in [
        ("ml-100k", "cdae", "Teacher", 1e-3, 0, "ok"),
        ("ml-100k", "cdae", "Teacher", 1e-3, 1, "ok"),
        ("ml-100k", "cdae", "Teacher", 3e-4, 0, "ok"),
        ("ml-100k", "cdae", "Student", 1e-3, 0, "ok"),
        ("yelp", "cdae", "Teacher", 1e-3, 0, "ok"),
        ("yelp", "cdae", "Student", 1e-3, 0, "missing"),
        ("yelp", "cdae", "RD", None, 0, "ok"),  # not a stage drawn
    ]:
        key = f"{dataset}-{stage}-{lr}-{seed}"
        n = 5 + seed  # each run its own length
        curve = [{"epoch": e + 1, "valid_NDCG@10": 0.1 + 0.01 * e} for e in range(n)]
        if status == "ok":
            runs.write_record({"key": key, "curve": curve}, tmp_path)
        label = f"{stage} lr={lr}" if lr else "RD lambda_rd=1, rd_k=10"
        rows.append(
            dict(
                dataset=dataset,
                backbone=backbone,
                stage=stage,
                label=label,
                seed=seed,
                status=status,
                key=key,
            )
        )
    fig = plots.tuning_curves(pd.DataFrame(rows), tmp_path)
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    assert set(panels) == {
        f"cdae · {s} / {d}" for s in ("Teacher", "Student") for d in ("ml-100k", "yelp")
    }
    lines = {
        t: [len(x) for x in (ln.get_xdata() for ln in ax.lines) if len(x)]
        for t, ax in panels.items()
    }
    assert sorted(lines["cdae · Teacher / ml-100k"]) == [5, 5, 6]
    assert lines["cdae · Student / ml-100k"] == [5] and lines["cdae · Teacher / yelp"] == [5]
    empty = panels["cdae · Student / yelp"]
    assert [t.get_text() for t in empty.texts] == ["not recorded yet"]
    plots.close(fig)
