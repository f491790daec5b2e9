"""Cross-entropy for FER: label smoothing, class weights, hard or soft targets."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def balanced_class_weights(counts: Sequence[int]) -> torch.Tensor:
    """Inverse-frequency weights ``N / (C * n_c)`` (1.0 on average over samples).

    A class with no training samples gets weight 0 (it cannot occur as a target).
    """
    c = torch.as_tensor(list(counts), dtype=torch.float64)
    n, k = c.sum(), len(c)
    w = torch.where(c > 0, n / (k * c.clamp(min=1)), torch.zeros_like(c))
    return w.float()


class CrossEntropy(nn.Module):
    """Softmax cross-entropy with optional label smoothing and class weights.

    ``target`` is either int64 class indices ``(N,)`` or float soft targets
    ``(N, C)`` whose rows sum to 1 (FER+ "probability" label mode).

    Hard targets are computed by :func:`torch.nn.functional.cross_entropy`.  Soft
    targets use the same definition, so a one-hot soft target gives exactly the
    hard-target value::

        t'   = (1 - eps) * t + eps / C                  (label smoothing)
        loss = sum_i sum_c w_c t'_ic (-log p_ic) / sum_i sum_c w_c t_ic

    (without weights the denominator is ``N``).
    """

    def __init__(self, label_smoothing: float = 0.0, weight: Optional[torch.Tensor | Sequence[float]] = None):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)
        if weight is not None:
            weight = torch.as_tensor(weight, dtype=torch.float32)
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        num_classes = logits.shape[1]
        w = self.weight
        if w is not None and w.numel() != num_classes:
            raise ValueError(f"{w.numel()} class weights for {num_classes} classes")
        if target.ndim == 1:
            return F.cross_entropy(logits, target.long(), weight=w, label_smoothing=self.label_smoothing)
        if target.shape != logits.shape:
            raise ValueError(f"soft targets of shape {tuple(target.shape)} for logits {tuple(logits.shape)}")
        t = target.float()
        ts = t * (1.0 - self.label_smoothing) + self.label_smoothing / num_classes if self.label_smoothing else t
        logp = F.log_softmax(logits, dim=1)
        if w is None:
            return -(ts * logp).sum(1).mean()
        return -(ts * logp * w).sum() / (t * w).sum().clamp(min=1e-12)

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}, weighted={self.weight is not None}"
