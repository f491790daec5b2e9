"""Deployment: BN/re-parameterisation folding, profiling, export and runtimes.

>>> from litefer.deploy import fuse, count_params, count_flops

The names below are imported lazily: importing ``litefer.deploy`` (as
``litefer.deploy.onnx_backend`` does) must not import torch, so torch-free runtimes work.
"""
from __future__ import annotations

import importlib

_LAZY = {
    "fuse": "litefer.deploy.fuse", "count_modules": "litefer.deploy.fuse",
    "count_params": "litefer.deploy.profile", "count_flops": "litefer.deploy.profile",
    "count_macs": "litefer.deploy.profile", "profile_model": "litefer.deploy.profile",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'litefer.deploy' has no attribute {name!r}")
