"""Losses for FER training: cross-entropy, center loss, Cosine-Harmony loss, and their sum.

>>> crit = FERLoss(num_classes=7, feat_dim=128, center_weight=0.01, center_alpha=0.5)
>>> total, parts = crit(logits, targets, features)

``FERLoss`` owns the centres of the metric losses.  Its :meth:`FERLoss.model_params`
(Cosine-Harmony centres) go into the model's optimizer; its
:meth:`FERLoss.centers_optimizer` (center-loss centres) is a separate ``SGD(lr=alpha)``.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn

from litefer.losses.ce import CrossEntropy, balanced_class_weights
from litefer.losses.center import CenterLoss
from litefer.losses.cosine_harmony import VARIANTS as CH_VARIANTS, CosineHarmonyLoss, adjusted_cosine_distance

__all__ = ["CrossEntropy", "CenterLoss", "CosineHarmonyLoss", "FERLoss", "adjusted_cosine_distance",
           "balanced_class_weights", "CH_VARIANTS", "CH_INPUTS"]

#: the tensors the Cosine-Harmony term can read: the model's ``forward_features`` output
#: ("embedding") or its global-average-pooled backbone map ("backbone", as the released
#: LFNSB code does; models with ``forward_backbone``)
CH_INPUTS = ("embedding", "backbone")


class FERLoss(nn.Module):
    """``CE + center_weight * CenterLoss + ch_weight * CosineHarmonyLoss``.

    ``ch_variant`` ("paper" or "corrected") and ``ch_input`` ("embedding" or
    "backbone") select the Cosine-Harmony formula and the tensor it reads (see
    :mod:`litefer.losses.cosine_harmony`).  A metric loss with weight 0 is not built at all.  ``forward`` returns the total and a
    dict of detached parts (``ce``, ``center``, ``ch``: each already multiplied by its weight).
    """

    def __init__(self, num_classes: int, feat_dim: Optional[int] = None, *, label_smoothing: float = 0.0,
                 class_weights: Optional[Sequence[float] | torch.Tensor] = None,
                 center_weight: float = 0.0, center_alpha: float = 0.5,
                 ch_weight: float = 0.0, ch_alpha: float = 0.1, ch_eps: float = 1e-6,
                 ch_variance_grad: bool = True, ch_variant: str = "paper", ch_input: str = "embedding",
                 ch_feat_dim: Optional[int] = None):
        super().__init__()
        self.ce = CrossEntropy(label_smoothing, class_weights)
        if ch_input not in CH_INPUTS:
            raise ValueError(f"Cosine-Harmony input must be one of {CH_INPUTS}, got {ch_input!r}")
        if ch_weight and ch_input == "backbone" and not ch_feat_dim:
            raise ValueError("Cosine-Harmony loss on the backbone map needs ch_feat_dim (its channel count)")
        if (center_weight or (ch_weight and ch_input == "embedding")) and not feat_dim:
            raise ValueError("center / Cosine-Harmony loss need feat_dim (the model's num_features)")
        self.center = CenterLoss(num_classes, feat_dim, center_weight, center_alpha) if center_weight else None
        ch_dim = ch_feat_dim if ch_input == "backbone" else feat_dim
        self.ch = (CosineHarmonyLoss(num_classes, ch_dim, ch_alpha, ch_eps, ch_variance_grad, ch_variant)
                   if ch_weight else None)
        self.ch_input = ch_input
        self.ch_weight = float(ch_weight)

    @property
    def needs_features(self) -> bool:
        return self.center is not None or self.ch is not None

    @property
    def needs_backbone(self) -> bool:
        """True when the Cosine-Harmony term reads the pooled backbone map (``backbone=``)."""
        return self.ch is not None and self.ch_input == "backbone"

    def model_params(self) -> list[nn.Parameter]:
        """Parameters trained by the model's optimizer (Cosine-Harmony centres)."""
        return list(self.ch.parameters()) if self.ch is not None else []

    def centers_optimizer(self) -> Optional[torch.optim.Optimizer]:
        """The center-loss centres' own SGD, or None without center loss."""
        return self.center.centers_optimizer() if self.center is not None else None

    def forward(self, logits: torch.Tensor, targets: torch.Tensor,
                features: Optional[torch.Tensor] = None,
                backbone: Optional[torch.Tensor] = None,
                batch_targets: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``batch_targets``: when ``logits`` are a slice of a batch trained in slices, the whole
        batch's targets (the centre-loss update uses the batch's class counts; Cosine-Harmony's
        batch statistics stay per slice)."""
        total = self.ce(logits, targets)
        parts = {"ce": total.detach()}
        if self.needs_features and features is None:
            raise ValueError("this loss needs the model's features (forward_features output)")
        if self.center is not None:
            c = self.center(features, targets, batch_targets)
            parts["center"] = c.detach()
            total = total + c
        if self.needs_backbone and backbone is None:
            raise ValueError("this loss needs the pooled backbone map (model.forward_backbone output)")
        if self.ch is not None:
            h = self.ch_weight * self.ch(backbone if self.needs_backbone else features, targets)
            parts["ch"] = h.detach()
            total = total + h
        return total, parts
