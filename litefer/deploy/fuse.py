"""Inference-time folding: BatchNorm into the preceding conv, RepVGGDW into one conv.

:func:`fuse` returns an eval-mode *copy* of a model in which

- every BatchNorm that directly follows a convolution (or a linear layer) is folded
  into it (``w' = w * gamma / sqrt(var + eps)``, ``b' = (b - mean) * gamma /
  sqrt(var + eps) + beta``) and removed;
- every :class:`~litefer.models.layers.RepVGGDW` becomes one 3x3 depthwise conv.

"Directly follows" is found without tracing: adjacent ``(conv, bn)`` children of an
``nn.Sequential``; pairs a module declares in its ``fuse_pairs`` class attribute (its
forward applies that BN straight to that conv's output; a ``SeparableConv2d`` is folded
through its pointwise conv); and the same pairs of torchvision's ResNet blocks.  Folding
only uses running statistics, so the result equals the unfused model *in eval mode*.

Not folded (none of the zoo's models has them): a BatchNorm *before* a conv or linear
layer (folding it needs care at zero-padded borders), and BatchNorms after other ops.
"""
from __future__ import annotations

import copy
import sys
import types

import torch
import torch.nn as nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from litefer.models.layers import RepVGGDW, SeparableConv2d, fuse_conv_bn

_BN = (nn.BatchNorm1d, nn.BatchNorm2d)
_CONV = (nn.Conv1d, nn.Conv2d, nn.Linear)

#: third-party modules whose forward applies ``bnN`` right after ``convN``
KNOWN_PAIRS: dict[type, tuple[tuple[str, str], ...]] = {
    BasicBlock: (("conv1", "bn1"), ("conv2", "bn2")),
    Bottleneck: (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")),
}


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    if not isinstance(bn, _BN) or bn.running_mean is None:
        return False
    if isinstance(conv, SeparableConv2d):
        conv = conv.pw
    if isinstance(conv, nn.Linear):
        return isinstance(bn, nn.BatchNorm1d) and conv.out_features == bn.num_features
    if isinstance(conv, (nn.Conv1d, nn.Conv2d)):
        return conv.out_channels == bn.num_features and \
            isinstance(bn, nn.BatchNorm1d if isinstance(conv, nn.Conv1d) else nn.BatchNorm2d)
    return False


def _fold(conv: nn.Module, bn: nn.Module) -> nn.Module:
    if isinstance(conv, SeparableConv2d):
        conv.pw = fuse_conv_bn(conv.pw, bn)
        return conv
    return fuse_conv_bn(conv, bn)


def _fuse_children(module: nn.Module) -> None:
    # re-parameterisable blocks first (their own fuse() folds their inner BNs)
    for name, child in list(module.named_children()):
        if isinstance(child, RepVGGDW):
            setattr(module, name, child.fuse())
    for child in module.children():
        _fuse_children(child)
    # declared (conv, bn) pairs
    pairs = getattr(type(module), "fuse_pairs", None) or KNOWN_PAIRS.get(type(module), ())
    for conv_name, bn_name in pairs:
        conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
        if conv is not None and bn is not None and _foldable(conv, bn):
            setattr(module, conv_name, _fold(conv, bn))
            setattr(module, bn_name, nn.Identity())
    # adjacent (conv, bn) in a Sequential: fold and drop the BN
    if isinstance(module, nn.Sequential):
        names = list(module._modules)
        drop = []
        for a, b in zip(names, names[1:]):
            conv, bn = module._modules[a], module._modules[b]
            if a in drop:
                continue
            if isinstance(conv, (*_CONV, SeparableConv2d)) and _foldable(conv, bn):
                module._modules[a] = _fold(conv, bn)
                drop.append(b)
        for b in drop:
            del module._modules[b]


def fuse(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with BatchNorms folded and RepVGGDW merged.

    Outputs equal ``model.eval()``'s up to float rounding; the copy has fewer modules.
    The original model is not modified."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"fuse expects an nn.Module, got {type(model).__name__}")
    fused = copy.deepcopy(model).eval()
    with torch.no_grad():
        _fuse_children(fused)
    for p in fused.parameters():
        p.requires_grad_(False)
    return fused


def count_modules(model: nn.Module) -> int:
    """Number of modules in ``model`` (itself included)."""
    return sum(1 for _ in model.modules())


class _CallableModule(types.ModuleType):
    """``litefer.deploy.fuse`` names both this module and its function: once the module
    is imported, Python binds the package attribute to the module, so
    ``from litefer.deploy import fuse`` may give the module.  Making the module callable
    keeps ``litefer.deploy.fuse(model)`` correct either way."""

    def __call__(self, model: nn.Module) -> nn.Module:
        return fuse(model)


sys.modules[__name__].__class__ = _CallableModule
