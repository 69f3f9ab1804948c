"""Losses of METHOD.md. Normalisation: every term is a mean over the (user, item) pairs of the
batch it covers (L_CF over positives and negatives, L_KD over the distilled items, L_RD over users
of per-user weighted sums whose position weights sum to 1), so lambda weighs like against like."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cf_loss(
    logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Point-wise CF loss, METHOD.md "The base loss":
    L_CF = -[sum_{i in O_u} log s(z_ui) + sum_{j in N_u} log(1 - s(z_uj))], as a mean over pairs;
    weight: 1 for the batch's pairs, 0 for padding (a mean over the weight-1 pairs)."""
    if weight is None:
        return F.binary_cross_entropy_with_logits(logits, labels)
    return (
        F.binary_cross_entropy_with_logits(logits, labels, weight, reduction="sum") / weight.sum()
    )


def soft_labels(teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """t_uj = s(z^T_uj / T), METHOD.md "The CD loss"."""
    return torch.sigmoid(teacher_logits / temperature)


def cd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """KD term of CD, METHOD.md "The CD loss":
    L_KD = -sum_{j in K_u} [t_uj log s(z^S_uj) + (1 - t_uj) log(1 - s(z^S_uj))], mean over pairs.
    The full CD objective is L = L_CF + lambda * L_KD."""
    return F.binary_cross_entropy_with_logits(
        student_logits, soft_labels(teacher_logits, temperature)
    )


def rd_weights(
    k: int,
    rd_lambda: float,
    student_rank: torch.Tensor | None = None,
    rd_mu: float = 0.1,
    renormalize: bool = False,
    device=None,
) -> torch.Tensor:
    """Ranking Distillation weights (Tang & Wang, KDD 2018, Eq. 8-9; METHOD.md "RD"):
    w_r = w^pos_r x w^dyn_r, w^pos_r = exp(-r / rd_lambda) / sum_r' exp(-r' / rd_lambda) (normalised
    once), w^dyn_r = tanh(max(rd_mu (r^_S(pi_r) - r), 0)).
    student_rank: [B x k] student ranks of the teacher's top-k items (1 = top); None = w^pos only
    (before the warm-up ends). As in the authors' code (`_weight_renormalize = False`) the product
    is not renormalised per user; renormalize=True divides it by its per-user sum (a variant).
    Returns [B x k] (or [1 x k]), on `device` (default: student_rank's), built there: a copy from the
    host would make a GPU step wait."""
    if device is None and student_rank is not None:
        device = student_rank.device
    r = torch.arange(1, k + 1, dtype=torch.float32, device=device)
    w = torch.exp(-r / rd_lambda)[None]
    w = w / w.sum()
    if student_rank is None:
        return w
    w = w * torch.tanh(torch.clamp(rd_mu * (student_rank.float() - r), min=0))
    return w / w.sum(-1, keepdim=True).clamp_min(1e-12) if renormalize else w


def rd_sampled_rank(
    item_logits: torch.Tensor, sample_logits: torch.Tensor, n_items: int
) -> torch.Tensor:
    """The student's rank (1 = top) of each of [B x k] items, estimated as Tang & Wang's code does
    from [B x S] uniformly sampled items: 1 + floor(n_items x #{samples scoring higher} / S)."""
    above = (sample_logits[:, None, :] > item_logits[:, :, None]).sum(-1)
    return 1 + torch.div(above * n_items, sample_logits.shape[1], rounding_mode="floor")


def rd_loss(student_logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """L_RD = -sum_u sum_r w_r log s(z^S_{u,pi_r}), a mean over users of the per-user weighted sums.
    The full RD objective is L = L_CF + lambda_RD * L_RD."""
    return -(weights * F.logsigmoid(student_logits)).sum(-1).mean()
