"""An exponential moving average of a model's weights (as timm's ``ModelEmaV2`` keeps one).

After every optimizer step ``ema = d * ema + (1 - d) * weights`` for every floating-point
entry of the state dict (BatchNorm running statistics included; integer buffers are
copied), with ``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so the early,
fast-moving weights are not frozen into the average.  Resumable: :meth:`state_dict`
holds the averaged weights and ``n``.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn


class ModelEma:
    """The averaged copy of ``model`` (``.module``, always in eval mode)."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = float(decay)
        self.updates = 0

    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        src = model.state_dict()
        for k, v in self.module.state_dict().items():
            w = src[k].detach()
            if v.dtype.is_floating_point:
                v.mul_(d).add_(w.to(v.dtype), alpha=1.0 - d)
            else:
                v.copy_(w)

    def state_dict(self) -> dict:
        return {"state_dict": {k: v.detach().to("cpu", copy=True).contiguous()
                               for k, v in self.module.state_dict().items()},
                "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, sd: dict) -> None:
        self.module.load_state_dict(sd["state_dict"])
        self.updates = int(sd["updates"])
