"""Cosine-Harmony loss of LFNSB (Chen & Huang, "A Lightweight Model Enhancing Facial
Expression Recognition with Spatial Bias and Cosine-Harmony Loss", Computation 12(10):201, 2024).

What the paper states
---------------------
Learnable class centres; distances are *adjusted* (mean-centred) cosine distances
between a feature and a centre; an intra-class term (distance of a feature to its own
class centre, to be made small) and an inter-class term (its distance to the other
``C - 1`` centres, averaged, to be made large), mixed by ``alpha = 0.1``, and the result
normalised by the variance of the batch features.  It is added to cross-entropy.

litefer's exact formula (our reading)
-------------------------------------
For a batch of features ``f_i`` (N x D), labels ``y_i`` and centres ``c_k`` (C x D)::

    mu        = (1/N) sum_i f_i                          per-dimension batch mean
    d(i, k)   = 1 - cos(f_i - mu, c_k - mu)              adjusted cosine distance, in [0, 2]
    D_intra   = (1/N) sum_i d(i, y_i)
    D_inter   = (1/N) sum_i 1/(C-1) sum_{k != y_i} d(i, k)
    sigma2    = (1/D) sum_d Var_i(f_id)                  batch feature variance (biased)
    L_CH      = (D_intra - alpha * D_inter + 2 * alpha) / (sigma2 + eps)

- "Adjusted cosine" is read as in item-based collaborative filtering: subtract, from
  every coordinate, that coordinate's mean over the compared population (here the
  batch features) before taking the cosine; the centres are centred on the same mean.
- The inter-class distance must grow, so it enters with a minus sign; the constant
  ``2 * alpha`` (``2 - d = 1 + cos``) keeps the numerator non-negative and changes no
  gradient: ``L_CH = (D_intra + alpha * mean_{k != y} (1 + cos)) / (sigma2 + eps)``.
- ``sigma2`` is treated as a normaliser: by default no gradient flows through it
  (``variance_grad=False``), because the cosine terms are scale-free and a gradient
  through ``1/sigma2`` would only reward inflating the feature scale.  The literal,
  differentiated version is ``variance_grad=True``.
- Batches of fewer than two samples have no mean-centred geometry; they give 0.
- The centres are an ``nn.Parameter`` returned by ``.parameters()``: the trainer puts them
  in the model's optimizer (without weight decay) and they are trained.

Difference from the authors' released code
------------------------------------------
The released implementation differs from the paper's description: its "inter-class"
term is the own-class pull again, scaled by ``1/(C-1)`` (so nothing pushes classes
apart), and its centres are never handed to an optimizer (they stay at their random
initialisation).  litefer follows the paper's text, not that code.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class CosineHarmonyLoss(nn.Module):
    def __init__(self, num_classes: int, feat_dim: int, alpha: float = 0.1, eps: float = 1e-6,
                 variance_grad: bool = False):
        super().__init__()
        if num_classes < 2:
            raise ValueError("CosineHarmonyLoss needs at least 2 classes")
        self.num_classes, self.feat_dim = int(num_classes), int(feat_dim)
        self.alpha, self.eps, self.variance_grad = float(alpha), float(eps), bool(variance_grad)
        self.centers = nn.Parameter(torch.randn(num_classes, feat_dim))

    def distances(self, features: torch.Tensor) -> torch.Tensor:
        """Adjusted cosine distances ``d(i, k)`` (N x C), centred on the batch mean."""
        x = features.float()
        mu = x.mean(0, keepdim=True)
        fx = F.normalize(x - mu, dim=1, eps=1e-12)
        fc = F.normalize(self.centers - mu, dim=1, eps=1e-12)
        return 1.0 - fx @ fc.t()

    def terms(self, features: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """``D_intra``, ``D_inter`` and ``sigma2`` of the batch (see the module docstring)."""
        y = targets.argmax(1) if targets.ndim == 2 else targets.long()
        d = self.distances(features)
        own = F.one_hot(y, self.num_classes).to(d.dtype)
        intra = (d * own).sum(1)
        inter = (d * (1.0 - own)).sum(1) / (self.num_classes - 1)
        var = features.float().var(0, unbiased=False).mean()
        return {"intra": intra.mean(), "inter": inter.mean(), "variance": var}

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if features.ndim != 2 or features.shape[1] != self.feat_dim:
            raise ValueError(f"CosineHarmonyLoss expects features (N, {self.feat_dim}), got {tuple(features.shape)}")
        if features.shape[0] < 2:
            return features.float().sum() * 0.0 + self.centers.sum() * 0.0
        t = self.terms(features, targets)
        var = t["variance"] if self.variance_grad else t["variance"].detach()
        return (t["intra"] - self.alpha * t["inter"] + 2.0 * self.alpha) / (var + self.eps)

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, feat_dim={self.feat_dim}, alpha={self.alpha}, "
                f"variance_grad={self.variance_grad}")
