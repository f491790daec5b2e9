"""Initialise a model from a user's weight file (``model.init_from`` in training configs).

Several papers start from weights litefer cannot download or ship (A-MobileNet: ImageNet;
LFNSB: MS-Celeb-1M).  A user who has such weights, converted to litefer's parameter
names, loads them with::

    report = init_from(model, "mobilenet_v1_imagenet.safetensors", exclude=["classifier.*"])

- The file is a ``.safetensors`` file, or a PyTorch file (``.pt``/``.pth``/``.bin``)
  holding a state_dict, read with ``torch.load(weights_only=True)``: no pickled code
  runs.  A PyTorch file whose dict wraps the weights under ``state_dict``, ``model``,
  ``model_state`` or ``weights`` is unwrapped; a leading ``module.`` (DataParallel) is
  stripped.
- ``exclude``: glob patterns of the *model's* keys not to load (typically the classifier,
  whose shape depends on the number of classes); they stay at their initialisation and
  are not reported as missing.
- Every other key must match: a missing key (in the model, not in the file), an
  unexpected key (in the file, not in the model) or a shape mismatch raises
  :class:`InitError` listing them, unless ``partial=True``, which loads what matches and
  returns the lists (the trainer prints them).  Nothing is silently half-loaded.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

WRAPPER_KEYS = ("state_dict", "model", "model_state", "weights")


class InitError(ValueError):
    """The weight file cannot initialise the model as asked (message names the file)."""


@dataclass
class InitReport:
    path: str
    loaded: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)   # key, model, file

    @property
    def complete(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int = 8) -> str:
        def show(keys):
            keys = list(keys)
            more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
            return ", ".join(keys[:limit]) + more
        parts = [f"{len(self.loaded)} tensors loaded from {self.path}"]
        if self.excluded:
            parts.append(f"{len(self.excluded)} excluded: {show(self.excluded)}")
        if self.missing:
            parts.append(f"{len(self.missing)} missing from the file: {show(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} in the file but not in the model: {show(self.unexpected)}")
        if self.mismatched:
            parts.append(f"{len(self.mismatched)} with another shape: "
                         + show(f"{k} (model {tuple(a)}, file {tuple(b)})" for k, a, b in self.mismatched))
        return "; ".join(parts)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors or (weights-only) PyTorch file, by name."""
    p = Path(path)
    if not p.is_file():
        raise InitError(f"{p}: no such weight file")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(str(p))
        except Exception as exc:  # noqa: BLE001 - any parse error is a bad file
            raise InitError(f"{p}: not a readable safetensors file ({type(exc).__name__}: {exc})") from None
    from litefer.models.checkpoint import CheckpointError, safe_torch_load
    try:
        obj = safe_torch_load(p, "weights-only PyTorch weight file")
    except CheckpointError as exc:
        raise InitError(str(exc)) from None
    if isinstance(obj, dict):
        for k in WRAPPER_KEYS:
            if k in obj and isinstance(obj[k], dict):
                obj = obj[k]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InitError(f"{p}: expected a state_dict (name -> tensor), got {type(obj).__name__}")
    return {str(k)[7:] if str(k).startswith("module.") else str(k): v for k, v in obj.items()}


def init_from(model: nn.Module, path: str | Path, exclude: Sequence[str] = (), partial: bool = False) -> InitReport:
    """Load the weights of ``path`` into ``model`` (see the module docstring)."""
    state = read_state_dict(path)
    own = model.state_dict()
    rep = InitReport(str(path))
    excluded = lambda k: any(fnmatch.fnmatchcase(k, pat) for pat in exclude)  # noqa: E731
    to_load = {}
    for k, v in own.items():
        if excluded(k):
            rep.excluded.append(k)
        elif k not in state:
            rep.missing.append(k)
        elif tuple(state[k].shape) != tuple(v.shape):
            rep.mismatched.append((k, tuple(v.shape), tuple(state[k].shape)))
        else:
            to_load[k] = state[k]
    rep.unexpected = [k for k in state if k not in own and not excluded(k)]
    if not to_load:
        raise InitError(f"{path}: no tensor matches the model's parameter names ({rep.summary()}); "
                        "convert the file to litefer's names (list them with model.state_dict().keys())")
    if not rep.complete and not partial:
        raise InitError(f"{path}: does not fit the model exactly — {rep.summary()}. Exclude the keys that "
                        "should keep their initialisation (model.init_exclude, e.g. ['classifier.*']) or "
                        "accept a partial load (model.init_partial: true)")
    model.load_state_dict(to_load, strict=False)
    rep.loaded = sorted(to_load)
    return rep
