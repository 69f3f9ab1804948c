"""Losses of METHOD.md. Normalisation: every term is a mean over the (user, item) pairs of the
batch it covers (L_CF over positives and negatives, L_KD over the distilled items, L_RD over users
of per-user weighted sums whose weights sum to 1), so lambda weighs like against like."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def cf_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Point-wise CF loss, METHOD.md "The base loss":
    L_CF = -[sum_{i in O_u} log s(z_ui) + sum_{j in N_u} log(1 - s(z_uj))], as a mean over pairs."""
    return F.binary_cross_entropy_with_logits(logits, labels)


def soft_labels(teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """t_uj = s(z^T_uj / T), METHOD.md "The CD loss"."""
    return torch.sigmoid(teacher_logits / temperature)


def cd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KD term of CD, METHOD.md "The CD loss":
    L_KD = -sum_{j in K_u} [t_uj log s(z^S_uj) + (1 - t_uj) log(1 - s(z^S_uj))], mean over pairs.
    The full CD objective is L = L_CF + lambda * L_KD."""
    return F.binary_cross_entropy_with_logits(student_logits, soft_labels(teacher_logits, temperature))


def rd_weights(k: int, rd_lambda: float, student_rank: torch.Tensor | None = None,
               rd_mu: float = 0.1) -> torch.Tensor:
    """Ranking Distillation weights (Tang & Wang, KDD 2018; METHOD.md "RD"):
    w_r ∝ exp(-r / rd_lambda) x tanh(max(rd_mu (r^_S(pi_r) - r), 0)), normalised per user to sum 1.
    student_rank: [B x k] student ranks of the teacher's top-k items (1 = top); None = position
    weight only (before the warm-up ends). Returns [B x k] (or [1 x k])."""
    r = torch.arange(1, k + 1, dtype=torch.float32)
    w = torch.exp(-r / rd_lambda)[None]
    if student_rank is not None:
        w = w.to(student_rank.device) * torch.tanh(torch.clamp(rd_mu * (student_rank.float() - r.to(student_rank.device)), min=0))
    return w / w.sum(-1, keepdim=True).clamp_min(1e-12)


def rd_loss(student_logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """L_RD = -sum_u sum_r w_r log s(z^S_{u,pi_r}), mean over users (weights sum to 1 per user).
    The full RD objective is L = L_CF + lambda_RD * L_RD."""
    return -(weights * F.logsigmoid(student_logits)).sum(-1).mean()

