"""Checkpoints and the bundled weights: one format for training, evaluation and deployment.

A checkpoint is a ``torch.save`` dict (``.pt``) or a ``.safetensors`` file whose
metadata holds the same fields as JSON:

- ``arch``: registry name, ``arch_kwargs``: keyword arguments for ``create_model``
- ``labels``: the label set of the head (canonical names, index order)
- ``preprocess``: ``{"channels", "size", "mean", "std", "crop"}`` where ``crop`` is
  ``"fer"`` (48x48-style loose crop) or ``"aligned112"`` (5-point aligned template)
- ``state_dict`` (``.pt`` only; tensors in the safetensors body otherwise)
- optional: ``config``, ``metrics``, ``epoch``, ``code_version``, training state
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

REQUIRED = ("arch", "labels", "preprocess")
BUNDLED = {"default": "default.safetensors"}
#: folder of the bundled weights and the example photo (inside the installed package)
ASSETS = Path(__file__).resolve().parents[1] / "assets"


@dataclass
class ModelMeta:
    arch: str
    labels: list[str]
    preprocess: dict[str, Any]
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, "arch_kwargs": self.arch_kwargs, "labels": list(self.labels),
                "preprocess": self.preprocess, **self.extra}


class CheckpointError(ValueError):
    pass


def _meta_from(d: dict[str, Any], path: Path) -> ModelMeta:
    missing = [k for k in REQUIRED if k not in d]
    if missing:
        raise CheckpointError(f"{path}: not a litefer checkpoint (missing {', '.join(missing)})")
    extra = {k: v for k, v in d.items() if k not in (*REQUIRED, "arch_kwargs", "state_dict")}
    return ModelMeta(d["arch"], list(d["labels"]), dict(d["preprocess"]), dict(d.get("arch_kwargs") or {}), extra)


def bundled_path(name: str = "default") -> Path:
    if name not in BUNDLED:
        raise CheckpointError(f"unknown bundled model {name!r}; bundled: {', '.join(BUNDLED)}")
    return ASSETS / BUNDLED[name]


def read_checkpoint(path: str | Path) -> tuple[ModelMeta, dict[str, torch.Tensor], dict[str, Any]]:
    """(meta, state_dict, raw dict) of a ``.pt`` or ``.safetensors`` checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        try:
            with safe_open(str(path), framework="pt") as f:
                raw_meta = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: unreadable safetensors file ({exc})") from None
        if "litefer" not in raw_meta:
            raise CheckpointError(f"{path}: safetensors file has no litefer metadata")
        raw = json.loads(raw_meta["litefer"])
        return _meta_from(raw, path), state, raw
    try:
        raw = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint ({exc})") from None
    if not isinstance(raw, dict) or "state_dict" not in raw:
        raise CheckpointError(f"{path}: not a litefer checkpoint (no state_dict)")
    return _meta_from(raw, path), raw["state_dict"], raw


def save_safetensors(path: str | Path, meta: ModelMeta, state_dict: dict[str, torch.Tensor]) -> Path:
    from safetensors.torch import save_file
    path = Path(path)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    save_file(tensors, str(path), metadata={"litefer": json.dumps(meta.to_dict())})
    return path


def load_model(path_or_name: str | Path = "default", device: str | torch.device = "cpu"):
    """(model in eval mode, meta) from a checkpoint path or a bundled model name."""
    from litefer.models import create_model
    p = Path(path_or_name)
    if str(path_or_name) in BUNDLED and not p.exists():
        p = bundled_path(str(path_or_name))
    meta, state, _ = read_checkpoint(p)
    model = create_model(meta.arch, num_classes=len(meta.labels),
                         in_chans=meta.preprocess.get("channels"), **meta.arch_kwargs)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{p}: weights do not fit {meta.arch}: {exc}") from None
    return model.to(device).eval(), meta
