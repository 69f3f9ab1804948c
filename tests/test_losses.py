"""Losses against their written formulas (METHOD.md)."""

import math

import torch

from cdlib import losses


def sig(x):
    return 1 / (1 + math.exp(-x))


def test_cf_loss_is_mean_binary_cross_entropy():
    z, y = [0.3, -1.2, 2.0], [1.0, 0.0, 0.0]
    want = (
        -sum(yi * math.log(sig(zi)) + (1 - yi) * math.log(1 - sig(zi)) for zi, yi in zip(z, y)) / 3
    )
    assert abs(losses.cf_loss(torch.tensor(z), torch.tensor(y)).item() - want) < 1e-6
    padded = losses.cf_loss(
        torch.tensor(z + [5.0, -3.0]), torch.tensor(y + [1.0, 0.0]), torch.tensor([1.0, 1, 1, 0, 0])
    )  # the padding's weight 0: the same mean
    assert abs(padded.item() - want) < 1e-6


def test_cd_loss_uses_tempered_teacher_soft_labels():
    zs, zt, T = [0.5, -2.0, 1.0, 0.0], [3.0, -1.0, 0.2, -4.0], 2.0
    want = 0.0
    for s, t in zip(zs, zt):
        p = sig(t / T)
        want -= p * math.log(sig(s)) + (1 - p) * math.log(1 - sig(s))
    got = losses.cd_loss(torch.tensor(zs).view(2, 2), torch.tensor(zt).view(2, 2), T).item()
    assert abs(got - want / 4) < 1e-6
    # a student that copies the teacher (T = 1) has minimal loss in its logits
    z = torch.tensor(zt, requires_grad=True)
    losses.cd_loss(z, torch.tensor(zt)).backward()
    assert z.grad.abs().max() < 1e-6


def test_rd_weights_position_then_discrepancy_not_renormalised():
    w = losses.rd_weights(5, rd_lambda=1.0)
    raw = torch.exp(-torch.arange(1, 6) / 1.0)
    pos = raw / raw.sum()
    assert torch.allclose(w[0], pos)
    # student ranks above the teacher's -> zero discrepancy weight; below -> positive
    sr = torch.tensor([[1, 2, 3, 4, 5], [50, 2, 3, 4, 5]])
    w = losses.rd_weights(5, 1.0, sr, rd_mu=0.1)
    assert torch.all(w[0] == 0)
    assert torch.allclose(w[1, 0], pos[0] * math.tanh(0.1 * 49)) and torch.all(w[1, 1:] == 0)
    sr = torch.tensor([[11, 12, 13, 14, 15]])
    expect = pos * torch.tanh(0.1 * (sr[0] - torch.arange(1, 6)).float())
    assert torch.allclose(losses.rd_weights(5, 1.0, sr, rd_mu=0.1)[0], expect)  # the authors' code
    assert torch.allclose(
        losses.rd_weights(5, 1.0, sr, rd_mu=0.1, renormalize=True)[0], expect / expect.sum()
    )
    # the case the per-user renormalisation got wrong: items 1-8 ranked right, the 9th far down
    sr = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8, 500, 10]])
    w = losses.rd_weights(10, 1.0, sr, rd_mu=0.1)
    assert (
        w[0, 8] < 1e-3 and losses.rd_weights(10, 1.0, sr, rd_mu=0.1, renormalize=True)[0, 8] == 1.0
    )


def test_rd_sampled_rank_is_tang_and_wang_estimate():
    torch.manual_seed(0)
    items, samples = torch.randn(4, 3), torch.randn(4, 100)
    got = losses.rd_sampled_rank(items, samples, n_items=1682)
    for b in range(4):
        for k in range(3):
            above = int((samples[b] > items[b, k]).sum())
            assert got[b, k] == 1 + math.floor((1682 * above) / 100)


def test_rd_loss_is_weighted_log_sigmoid_per_user():
    z = torch.tensor([[0.0, 1.0], [2.0, -1.0]])
    w = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    want = -((0.5 * math.log(sig(0)) + 0.5 * math.log(sig(1))) + math.log(sig(2))) / 2
    assert abs(losses.rd_loss(z, w).item() - want) < 1e-6
