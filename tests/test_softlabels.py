"""softlabels: a CD teacher's soft labels on its top missing items, against a brute-force ranking
of every item by the same teacher."""

import dataclasses

import numpy as np
import pytest
import torch
from conftest import TINY

from cdlib import config, plots, softlabels, train


def test_soft_labels_match_a_brute_force_ranking_of_every_item(results):
    cfg = train.Config(
        backbone="neumf", size=4, method="cd", teacher_size=8, n_distill=5, mu=3.0, **TINY
    )
    with pytest.raises(train.NotRecorded):  # the teacher is not cached, and training is off
        softlabels.analyse(cfg, results, progress=False)
    out = softlabels.analyse(dataclasses.replace(cfg, temperature=2.0), results, train=True)
    teacher, _ = train.load_teacher(cfg, results, progress=False)
    ds = config.dataset_for(cfg.canonical())
    k = out["max_rank"]
    assert k == 30  # ceil(10 mu)
    with torch.no_grad():
        every = torch.arange(ds.n_items)
        z = torch.stack(
            [teacher.score(torch.tensor([u]), every[None])[0] for u in range(ds.n_users)]
        )
    z[torch.as_tensor(ds.train.toarray() > 0)] = -float("inf")
    top = z.topk(k, dim=1)
    labels = torch.sigmoid(top.values / 2.0).mean(0)
    assert np.allclose(out["per_rank"]["soft_label"], labels, rtol=1e-5, atol=1e-7)
    above = (torch.sigmoid(top.values / 2.0) > 0.5).float().mean(0)
    assert out["per_rank"]["soft_label_above_half"] == above.tolist()
    for name, items in (("valid", ds.valid_item), ("test", ds.test_item)):
        rate = (top.indices == torch.as_tensor(items)[:, None]).float().mean(0)
        assert out["per_rank"][f"{name}_item_rate"] == rate.tolist()
    p = torch.softmax(-torch.arange(1.0, k + 1) / 3.0, 0)
    assert out["under_sampling"]["soft_label"] == pytest.approx(float(p @ labels), rel=1e-5)
    assert sorted(out["at_rank"]) == [1, 10, 30]
    assert (results / "analysis" / f"soft_labels_{out['teacher_key']}_T2.json").is_file()
    table = softlabels.table(results)
    assert len(table) == 1 and table.loc[0, "T"] == 2.0 and "label @50" not in table  # k = 30
    assert table.loc[0, "label @10"] == round(out["per_rank"]["soft_label"][9], 4)
    assert table.loc[0, "valid item @1"] == round(out["per_rank"]["valid_item_rate"][0], 4)
    fig = plots.soft_labels(softlabels.records(results))
    assert [len(ax.lines) for ax in fig.axes] == [2, 1]
    plots.close(fig)
    with pytest.raises(ValueError, match="CD run"):
        softlabels.analyse(dataclasses.replace(cfg, method="rd"), results)
