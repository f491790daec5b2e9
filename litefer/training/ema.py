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
        """One averaging step: a single fused ``lerp`` over every floating-point tensor.

        The tensor lists are rebuilt from ``model.state_dict(keep_vars=True)`` at every call
        (most of the remaining cost), so a buffer that ``Module.to`` or the module itself
        replaces instead of updating in place is still followed.  Measured on one thread
        with two training jobs on the 2-core machine, per update: ``i_mobilenetv2`` (330
        tensors) 3.5 ms against 6.7 ms tensor by tensor, ``lfnsb`` (791) 11 against 15 ms,
        ``mini_xception`` 0.4 against 1.0 ms.
        """
        self.updates += 1
        d = self.current_decay()
        src = model.state_dict(keep_vars=True)
        dst_f, src_f, dst_i, src_i = [], [], [], []
        for k, v in self.module.state_dict(keep_vars=True).items():
            w = src[k].detach()
            if v.dtype.is_floating_point:
                dst_f.append(v)
                src_f.append(w if w.dtype == v.dtype else w.to(v.dtype))
            else:
                dst_i.append(v)
                src_i.append(w)
        if dst_f:
            torch._foreach_lerp_(dst_f, src_f, 1.0 - d)   # v + (1 - d) (w - v) = d v + (1 - d) w
        if dst_i:
            torch._foreach_copy_(dst_i, src_i)

    def state_dict(self) -> dict:
        return {"state_dict": {k: v.detach().to("cpu", copy=True).contiguous()
                               for k, v in self.module.state_dict().items()},
                "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, sd: dict) -> None:
        self.module.load_state_dict(sd["state_dict"])
        self.updates = int(sd["updates"])
