"""Cosine-Harmony loss of LFNSB (Chen & Huang, "A Lightweight Model Enhancing Facial
Expression Recognition with Spatial Bias and Cosine-Harmony Loss", preprint 2024;
``../shared/papers/002_…txt``, section "Cosine-Harmony Loss").

What the paper's text gives
---------------------------
(The plain-text extraction lost the minus signs, fraction bars and the symbol alpha;
the reading below restores them and is the one the authors' released ``losses.py``
computes too.)

- "adjusted cosine distance is introduced, subtracting the mean from each vector":
  ``d(x, c) = 1 - (x - mean(x)) . (c - mean(c)) / (|x - mean(x)| |c - mean(c)|)``, where
  ``mean(x)`` is the mean of the *vector's own* components (a scalar), and likewise for
  the class centre ``c``.
- intra-class distance ``(1/N) sum_i d(x_i, c_{y_i})``, "where N is the number of
  samples";
- inter-class distance ``1/(N (C - 1)) sum_i sum_{j != y_i} d(x_i, c_j)``, "where C is
  the number of classes";
- ``class_variance = (1/N) sum_i (x_i - mu)^2``, "Where mu is the mean vector of all
  feature vectors" (read as the squared Euclidean norm, summed over the dimensions);
- ``loss = alpha * intra_class_distance / class_variance + (1 - alpha) * inter_class_distance``,
  with ``alpha = 0.1`` chosen in its Table 4 because "the inter-class distance is more
  critical for facial expression recognition tasks".

The text then says the loss works "By minimizing intra-class distance and maximizing
inter-class distance", but the formula *adds* ``(1 - alpha) * inter``: minimising it pulls
every feature towards the other classes' centres.  Two variants are therefore offered:

- ``variant="paper"`` (default): the formula exactly as printed;
- ``variant="corrected"``: the stated intent, ``(1 - alpha) * (2 - inter)`` in place of
  ``(1 - alpha) * inter`` (``2 - d`` is ``1 + cos``: same gradient as ``-(1 - alpha) *
  inter``, but the loss stays non-negative).

Details the text leaves open, and litefer's choices
---------------------------------------------------
- The class centres are learnable (``nn.Parameter``, ``randn`` initialised, as in the
  released code) and returned by ``.parameters()``: the trainer puts them into the
  model's optimizer (without weight decay), since the paper says the loss "aims to
  optimize class centers".  (The released ``main.py`` builds its optimizer from
  ``model.parameters()`` only, so there the centres keep their random values.)
- The gradient flows through ``class_variance`` (``variance_grad=True``) because the
  formula has no stop-gradient; ``variance_grad=False`` treats it as a constant.
- ``eps`` is added to ``class_variance`` only to keep the division finite.
- A batch of fewer than two samples has no variance: the loss is 0 (with a graph).
- Soft targets ``(N, C)`` use their arg-max class.

Which tensor it is applied to
-----------------------------
The paper does not name the tensor; its Figure 1 caption says the LFN module uses the
loss "to improve the discriminative power of the feature vectors".  The released
``LFNSB2.py`` returns the LFN backbone's feature map next to the logits, and
``losses.py`` global-average-pools it before the loss (256-d for LFN).  litefer's
trainer applies it, by default, to the model's ``forward_features`` output (the 256-d
GDC embedding of ``lfn``/``lfnsb``, the tensor the classifier reads), and with
``loss.cosine_harmony.input: backbone`` to the global-average-pooled backbone map as the
released code does (models exposing ``forward_backbone``).

Differences of the released ``losses.py`` from the text (recorded, not followed):
its inter-class term sums the *own-class* masked distances again (so it equals
``intra / (C - 1)`` and nothing pushes classes apart), and its variance is the unbiased
per-dimension ``torch.var`` summed over dimensions (``N / (N - 1)`` times the text's).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

#: the loss formulas offered (see the module docstring)
VARIANTS = ("paper", "corrected")


def adjusted_cosine_distance(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``d(x_i, c_k) = 1 - cos(x_i - mean(x_i), c_k - mean(c_k))`` for all pairs, (N, K).

    Each vector is centred on the mean of its *own* components, as the paper states."""
    xa = F.normalize(x - x.mean(1, keepdim=True), dim=1, eps=1e-12)
    ca = F.normalize(c - c.mean(1, keepdim=True), dim=1, eps=1e-12)
    return 1.0 - xa @ ca.t()


class CosineHarmonyLoss(nn.Module):
    """``alpha * intra / class_variance + (1 - alpha) * inter`` (``variant="paper"``) or
    ``... + (1 - alpha) * (2 - inter)`` (``variant="corrected"``); see the module docstring."""

    def __init__(self, num_classes: int, feat_dim: int, alpha: float = 0.1, eps: float = 1e-6,
                 variance_grad: bool = True, variant: str = "paper"):
        super().__init__()
        if num_classes < 2:
            raise ValueError("CosineHarmonyLoss needs at least 2 classes")
        if feat_dim < 2:
            raise ValueError("CosineHarmonyLoss needs feat_dim >= 2 (a mean-centred 1-d vector is 0)")
        if variant not in VARIANTS:
            raise ValueError(f"CosineHarmonyLoss variant must be one of {VARIANTS}, got {variant!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"CosineHarmonyLoss alpha must be in [0, 1], got {alpha}")
        self.num_classes, self.feat_dim = int(num_classes), int(feat_dim)
        self.alpha, self.eps, self.variance_grad = float(alpha), float(eps), bool(variance_grad)
        self.variant = variant
        self.centers = nn.Parameter(torch.randn(num_classes, feat_dim))

    def distances(self, features: torch.Tensor) -> torch.Tensor:
        """Adjusted cosine distances ``d(i, k)`` (N x C) of the features to the centres."""
        return adjusted_cosine_distance(features.float(), self.centers.float())

    def terms(self, features: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """The paper's ``intra``, ``inter`` and ``variance`` of the batch."""
        y = targets.argmax(1) if targets.ndim == 2 else targets.long()
        x = features.float()
        d = self.distances(x)
        own = F.one_hot(y, self.num_classes).to(d.dtype)
        n = x.shape[0]
        intra = (d * own).sum() / n
        inter = (d * (1.0 - own)).sum() / (n * (self.num_classes - 1))
        variance = (x - x.mean(0, keepdim=True)).pow(2).sum(1).mean()
        return {"intra": intra, "inter": inter, "variance": variance}

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if features.ndim != 2 or features.shape[1] != self.feat_dim:
            raise ValueError(f"CosineHarmonyLoss expects features (N, {self.feat_dim}), got {tuple(features.shape)}")
        if features.shape[0] < 2:
            return features.float().sum() * 0.0 + self.centers.sum() * 0.0
        t = self.terms(features, targets)
        var = t["variance"] if self.variance_grad else t["variance"].detach()
        inter = t["inter"] if self.variant == "paper" else 2.0 - t["inter"]
        return self.alpha * t["intra"] / (var + self.eps) + (1.0 - self.alpha) * inter

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, feat_dim={self.feat_dim}, alpha={self.alpha}, "
                f"variant={self.variant!r}, variance_grad={self.variance_grad}")
