"""Model size and compute, counted (never typed in).

- :func:`count_params`: number of parameters (all, or trainable only).
- :func:`count_flops`: FLOPs of one forward pass at batch size 1, as counted by
  ``torch.utils.flop_counter.FlopCounterMode``.  That counter records matrix-style ops
  (convolution, linear/matmul, bmm, attention) at **2 FLOPs per multiply-accumulate**;
  element-wise work (BatchNorm, activations, pooling, attention gates, additions) is
  not counted.  :func:`count_macs` is that number halved, i.e. multiply-accumulates,
  the unit most mobile-network papers call "FLOPs" or "MAdds".  Always label which.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (shared tensors counted once)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"count_params expects an nn.Module, got {type(model).__name__}")
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def _input_shape(model: nn.Module, input_size) -> tuple[int, ...]:
    if input_size is None:
        input_size = getattr(model, "default_input", None)
        if input_size is None:
            raise ValueError("count_flops needs input_size for a model without default_input")
    if isinstance(input_size, int):
        raise ValueError("input_size must be (channels, size), (C, H, W) or (N, C, H, W), "
                         f"got the int {input_size}")
    shape = tuple(int(v) for v in input_size)
    if len(shape) == 2:      # (channels, size), like a model's default_input
        shape = (1, shape[0], shape[1], shape[1])
    elif len(shape) == 3:
        shape = (1, *shape)
    elif len(shape) != 4:
        raise ValueError(f"input_size must have 2, 3 or 4 entries, got {input_size!r}")
    if any(v < 1 for v in shape):
        raise ValueError(f"input_size entries must be positive, got {input_size!r}")
    return shape


def count_flops(model: nn.Module, input_size: Sequence[int] | None = None) -> int:
    """FLOPs (2 per multiply-accumulate, FlopCounterMode's convention) of one forward pass.

    ``input_size``: ``(channels, size)`` (square, batch 1), ``(C, H, W)`` or ``(N, C, H, W)``;
    default: the model's ``default_input``.  The model is run in eval mode (its mode is
    restored afterwards) on zeros, without gradients."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"count_flops expects an nn.Module, got {type(model).__name__}")
    shape = _input_shape(model, input_size)
    try:
        p = next(model.parameters())
        device, dtype = p.device, p.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(shape, device=device, dtype=dtype))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def count_macs(model: nn.Module, input_size: Sequence[int] | None = None) -> int:
    """Multiply-accumulates of one forward pass: :func:`count_flops` / 2."""
    return count_flops(model, input_size) // 2


def profile_model(model: nn.Module, input_size: Sequence[int] | None = None) -> dict:
    """``{"params", "flops", "macs", "input"}`` of ``model`` (counted)."""
    shape = _input_shape(model, input_size)
    flops = count_flops(model, shape)
    return {"params": count_params(model), "flops": flops, "macs": flops // 2, "input": list(shape)}
