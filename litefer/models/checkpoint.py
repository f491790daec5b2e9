"""Checkpoints and the bundled weights: one format for training, evaluation and deployment.

A checkpoint is a ``torch.save`` dict (``.pt``) or a ``.safetensors`` file whose
metadata holds the same fields as JSON:

- ``arch``: registry name, ``arch_kwargs``: keyword arguments for ``create_model``
- ``labels``: the label set of the head (canonical names, index order)
- ``preprocess``: ``{"channels", "size", "mean", "std", "crop"}`` where ``crop`` is
  ``"fer"`` (48x48-style loose crop) or ``"aligned112"`` (5-point aligned template)
- ``state_dict`` (``.pt`` only; tensors in the safetensors body otherwise)
- optional: ``config``, ``metrics``, ``epoch``, ``code_version``, training state

Loading never runs code from the file: ``.safetensors`` files are read by
``safetensors`` (tensors + a JSON string), and ``.pt`` files only through
:func:`safe_torch_load` (``torch.load(weights_only=True)``: tensors, dicts, lists,
tuples, strings, numbers, booleans, None).  A ``.pt`` holding any other pickled object
(the way a crafted checkpoint carries a payload) is refused with a
:class:`CheckpointError` before anything in it runs.  Files are recognised by their
bytes (a safetensors file under a ``.pt`` name is still read as safetensors).
"""
from __future__ import annotations

import json
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

REQUIRED = ("arch", "labels", "preprocess")
#: folder of the bundled weights and the example photo (inside the installed package), and the
#: bundled model names -> weight files
from litefer.paths import ASSETS, BUNDLED  # noqa: E402,F401  (the one home of both)


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
    if not isinstance(d["arch"], str) or not d["arch"]:
        raise CheckpointError(f"{path}: field 'arch' must be a model name (a string), not {d['arch']!r}")
    labels = d["labels"]
    if not isinstance(labels, (list, tuple)) or not labels or not all(isinstance(x, str) for x in labels):
        raise CheckpointError(f"{path}: field 'labels' must be a non-empty list of label names")
    if not isinstance(d["preprocess"], dict):
        raise CheckpointError(f"{path}: field 'preprocess' must be a mapping, not {type(d['preprocess']).__name__}")
    kw = d.get("arch_kwargs") or {}
    if not isinstance(kw, dict) or not all(isinstance(k, str) for k in kw):
        raise CheckpointError(f"{path}: field 'arch_kwargs' must be a mapping of keyword arguments")
    extra = {k: v for k, v in d.items() if k not in (*REQUIRED, "arch_kwargs", "state_dict")}
    return ModelMeta(d["arch"], list(labels), dict(d["preprocess"]), dict(kw), extra)


_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def _is_safetensors(head: bytes) -> bool:
    """A safetensors file: 8-byte little-endian header length, then a JSON object."""
    if len(head) < 10:
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n < 100_000_000 and head[8:9] == b"{"


def safe_torch_load(path: str | Path, what: str = "checkpoint") -> Any:
    """The contents of a ``torch.save`` file, loaded with ``weights_only=True``.

    Only tensors and plain data (dict, list, tuple, str, int, float, bool, None) are
    accepted; a file that pickles anything else is refused with a
    :class:`CheckpointError` naming the object it tried to load, and nothing from it
    is executed.  Every other failure (missing, truncated, not a torch file) is a
    :class:`CheckpointError` naming the file too.  Every litefer ``.pt`` reader
    (evaluate, export, predict, serve, ``train --resume``) goes through here.
    """
    import torch
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such {what} file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        m = _UNSUPPORTED_GLOBAL.search(str(exc))
        obj = f" ({m.group(1)})" if m else ""
        raise CheckpointError(
            f"{path}: refused: this {what} holds a pickled Python object{obj} besides tensors and plain "
            "data; unpickling it could run code, so litefer never loads it. Use a .safetensors file, or "
            "a .pt saved by litefer (tensors, numbers, strings, lists and dicts only)") from None
    except Exception as exc:  # not a torch file, truncated, unreadable ...
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: unreadable {what} ({msg})") from None


def _read_safetensors(path: Path) -> tuple[ModelMeta, dict[str, Any], dict[str, Any]]:
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            raw_meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: unreadable safetensors file ({exc})") from None
    if "litefer" not in raw_meta:
        raise CheckpointError(f"{path}: safetensors file has no litefer metadata")
    try:
        raw = json.loads(raw_meta["litefer"])
    except ValueError as exc:
        raise CheckpointError(f"{path}: the safetensors metadata 'litefer' is not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: the safetensors metadata 'litefer' is not a JSON object")
    return _meta_from(raw, path), state, raw


def bundled_path(name: str = "default") -> Path:
    if name not in BUNDLED:
        raise CheckpointError(f"unknown bundled model {name!r}; bundled: {', '.join(BUNDLED)}")
    return ASSETS / BUNDLED[name]


def read_checkpoint(path: str | Path) -> tuple[ModelMeta, dict[str, torch.Tensor], dict[str, Any]]:
    """(meta, state_dict, raw dict) of a ``.pt`` or ``.safetensors`` checkpoint.

    Nothing in the file is executed: see :func:`safe_torch_load`.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if path.suffix == ".safetensors" or _is_safetensors(head):
        return _read_safetensors(path)
    raw = safe_torch_load(path)
    if not isinstance(raw, dict) or "state_dict" not in raw:
        raise CheckpointError(f"{path}: not a litefer checkpoint (no state_dict)")
    state = raw["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: field 'state_dict' must map parameter names to tensors")
    return _meta_from(raw, path), state, raw


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
    model = _build(p, meta, create_model)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{p}: weights do not fit {meta.arch}: {exc}") from None
    return model.to(device).eval(), meta


def _build(path: Path, meta: ModelMeta, create_model: Any):
    """``create_model`` for a checkpoint's meta, with errors that name the file and field."""
    kwargs = dict(meta.arch_kwargs)
    fixed = {"num_classes": len(meta.labels), "in_chans": meta.preprocess.get("channels")}
    for key, value in fixed.items():
        if key in kwargs:  # an older writer stored it twice: fine when it agrees
            if value is not None and kwargs[key] != value:
                source = "the number of labels" if key == "num_classes" else "preprocess.channels"
                raise CheckpointError(f"{path}: arch_kwargs.{key} = {kwargs[key]!r} contradicts {source} "
                                      f"({value!r})")
            given = kwargs.pop(key)
            if value is None:
                fixed[key] = given
    try:
        return create_model(meta.arch, **fixed, **kwargs)
    except KeyError as exc:
        raise CheckpointError(f"{path}: field 'arch': {exc.args[0] if exc.args else meta.arch}") from None
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot build {meta.arch} from arch_kwargs {kwargs}: {exc}") from None
