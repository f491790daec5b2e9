"""Center loss (Wen, Zhang, Li, Qiao: "A Discriminative Feature Learning Approach for
Deep Face Recognition", ECCV 2016), as A-MobileNet uses it next to softmax.

The paper's loss (its Eq. 2) pulls each deep feature ``x_i`` towards the centre of its
class, ``L_C = 1/2 sum_i ||x_i - c_{y_i}||^2``, and it updates the centres not by the
gradient of ``L_C`` but by its own rule (Eq. 4)::

    delta_c_j = sum_i [y_i = j] (c_j - x_i) / (1 + sum_i [y_i = j])
    c_j      <- c_j - alpha * delta_c_j

The joint objective is ``L = L_softmax + lambda * L_C``.

Here the centres are an ``nn.Parameter`` updated by their *own* optimizer, plain
``SGD(lr=alpha)`` (:meth:`CenterLoss.centers_optimizer`), and :meth:`CenterLoss.forward`
shapes the gradients so that this is exactly the paper's algorithm:

- the returned value is ``lambda * L_C`` with ``L_C`` averaged (not summed) over the
  batch, so ``lambda`` does not change meaning with the batch size;
- the gradient reaching the features is that of ``lambda * L_C``;
- the gradient reaching the centres is ``delta_c_j`` above, whatever ``lambda`` is, so
  one SGD step with learning rate ``alpha`` is the paper's centre update.

Soft targets (``(N, C)`` probabilities) use their arg-max class.

A batch trained as slices (``train.micro_batch``) passes the whole batch's targets as
``batch_targets``: the class counts of Eq. 4 are then the batch's, and the centre path is
scaled so that the slices' weighted sum (the trainer weights each slice's loss by its
share of the batch) is the whole batch's ``delta_c_j``.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class CenterLoss(nn.Module):
    def __init__(self, num_classes: int, feat_dim: int, weight: float = 1.0, alpha: float = 0.5):
        super().__init__()
        if num_classes < 1 or feat_dim < 1:
            raise ValueError("CenterLoss needs num_classes >= 1 and feat_dim >= 1")
        self.num_classes, self.feat_dim = int(num_classes), int(feat_dim)
        self.weight, self.alpha = float(weight), float(alpha)
        # zeros: deterministic and consumes no RNG; the alpha-rate update moves each centre
        # to its class mean within the first few batches of that class
        self.centers = nn.Parameter(torch.zeros(num_classes, feat_dim))

    def centers_optimizer(self) -> torch.optim.Optimizer:
        """The centres' own optimizer: ``SGD(lr=alpha)``, no momentum, no weight decay."""
        return torch.optim.SGD([self.centers], lr=self.alpha, momentum=0.0, weight_decay=0.0)

    def forward(self, features: torch.Tensor, targets: torch.Tensor,
                batch_targets: torch.Tensor | None = None) -> torch.Tensor:
        if features.ndim != 2 or features.shape[1] != self.feat_dim:
            raise ValueError(f"CenterLoss expects features (N, {self.feat_dim}), got {tuple(features.shape)}")
        y = targets.argmax(1) if targets.ndim == 2 else targets.long()
        share = 1.0
        if batch_targets is not None:                  # a slice of a larger batch
            share = y.shape[0] / batch_targets.shape[0]
            batch_targets = batch_targets.argmax(1) if batch_targets.ndim == 2 else batch_targets.long()
        x = features.float()
        c_y = self.centers.index_select(0, y)
        # path to the features: d(lambda * L_C)/dx_i = lambda * (x_i - c_yi) / N
        feat_term = 0.5 * (x - c_y.detach()).pow(2).sum(1).mean()
        # path to the centres: gradient = delta_c_j of Wen et al. (Eq. 4)
        counts = torch.bincount(y if batch_targets is None else batch_targets,
                                minlength=self.num_classes).to(x.dtype)
        per = 0.5 * (x.detach() - c_y).pow(2).sum(1) / (1.0 + counts.index_select(0, y))
        centre_term = per.sum() / share
        return self.weight * feat_term + (centre_term - centre_term.detach())

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, feat_dim={self.feat_dim}, weight={self.weight}, alpha={self.alpha}"
