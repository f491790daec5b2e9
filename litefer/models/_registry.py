"""The model registry: builder functions by name (timm-style)."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable, Optional

import torch.nn as nn


@dataclass(frozen=True)
class ModelInfo:
    name: str
    builder: Callable[..., nn.Module]
    paper: str                      # short citation, e.g. "I-MobileNetV2 (Zhang et al.)"
    default_input: tuple[int, int]  # (channels, size)
    paper_params: Optional[float] = None   # millions, as the paper reports it
    paper_defines_arch: bool = True        # False where the paper leaves the size open
    #: compute as the paper reports it, with the paper's own unit (e.g. "397.35 M FLOPs");
    #: papers differ in what they call FLOPs, so this is quoted, never converted
    paper_flops: Optional[str] = None


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(name: str, *, paper: str, default_input: tuple[int, int],
                   paper_params: float | None = None, paper_defines_arch: bool = True,
                   paper_flops: str | None = None):
    """Decorator registering ``fn(num_classes, in_chans, **kw) -> nn.Module`` under ``name``."""
    def deco(fn):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelInfo(name, fn, paper, default_input, paper_params, paper_defines_arch,
                                    paper_flops)
        return fn
    return deco


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_info(name: str) -> ModelInfo:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown model {name!r}.{hint} Available: {', '.join(list_models())}") from None


def create_model(name: str, num_classes: int = 7, in_chans: int | None = None,
                 pretrained: bool = False, **kwargs) -> nn.Module:
    """Build a registered model.

    ``in_chans`` defaults to the model's native channels; ``pretrained=True`` loads
    the bundled litefer weights where they exist for this architecture.
    """
    info = model_info(name)
    if in_chans is None:
        in_chans = info.default_input[0]
    model = info.builder(num_classes=num_classes, in_chans=in_chans, **kwargs)
    # a model whose input size depends on its arguments (an ensemble of 112x112 members)
    # says so with ``native_size``
    model.default_input = (in_chans, getattr(model, "native_size", None) or info.default_input[1])
    model.arch_name = name
    if pretrained:
        from litefer.models.checkpoint import bundled_path, read_checkpoint, BUNDLED
        for bname in BUNDLED:
            meta, state, _ = read_checkpoint(bundled_path(bname))
            if meta.arch == name:
                if len(meta.labels) != num_classes or meta.preprocess.get("channels") != in_chans:
                    raise ValueError(f"bundled {name} weights are for {len(meta.labels)} classes and "
                                     f"{meta.preprocess.get('channels')} channels")
                model.load_state_dict(state)
                break
        else:
            raise ValueError(f"no bundled pretrained weights for {name!r}")
    return model
