"""Classifier backends: what turns a preprocessed face batch into probabilities.

A backend satisfies :class:`ClassifierBackend`: ``predict(batch)`` takes a float32
NCHW batch, already normalised as the model's ``preprocess`` says, and returns
(N, C) float32 class probabilities.  It also carries ``labels`` (the head's label
set) and ``preprocess`` (``{"channels", "size", "mean", "std", "crop"}``) so the
recognizer knows how to crop and normalise faces for it.

- :class:`TorchBackend` — a PyTorch model (from a checkpoint or built in code);
- ``OnnxBackend`` (``litefer.deploy.onnx_backend``) — an exported ONNX model run by
  ONNX Runtime, imported only when asked for.

:func:`make_backend` builds either from a source: ``"default"`` (the bundled
model), a checkpoint path (``.safetensors``/``.pt``) or an ``.onnx`` file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Protocol, Sequence, runtime_checkable

import numpy as np

BACKENDS = ("torch", "onnx")
#: what ``--backend`` accepts: a backend, or ``auto`` (:func:`resolve_backend`)
BACKEND_CHOICES = ("auto", *BACKENDS)


@runtime_checkable
class ClassifierBackend(Protocol):
    labels: Sequence[str]
    preprocess: dict

    def predict(self, batch: np.ndarray) -> np.ndarray:  # pragma: no cover - protocol
        """(N, C) float32 probabilities of a float32 (N, channels, size, size) batch."""
        ...


class BackendError(RuntimeError):
    """A backend cannot be built (unknown kind, missing runtime, bad model file)."""


def check_batch(batch: np.ndarray, preprocess: dict) -> np.ndarray:
    """``batch`` as contiguous float32, or ValueError when its shape does not fit ``preprocess``."""
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    c, s = int(preprocess["channels"]), int(preprocess["size"])
    if batch.ndim != 4 or tuple(batch.shape[1:]) != (c, s, s):
        raise ValueError(f"expected a float32 batch of shape (N, {c}, {s}, {s}), got {tuple(batch.shape)}")
    return batch


class TorchBackend:
    """A PyTorch classifier; ``predict`` runs it under ``inference_mode`` and softmaxes.

    ``labels``/``preprocess`` default to the model's ``meta`` when it has one (as
    :func:`litefer.models.checkpoint.load_model` returns), else must be given.
    ``memory_format``: ``"auto"`` (on the CPU, channels-last where it is measured to be
    faster for this model and gives the same probabilities: :mod:`litefer.evaluation.layout`;
    elsewhere contiguous), ``"channels_last"`` or ``"contiguous"``.  Measure with the
    thread count the backend will run under (``torch.set_num_threads`` first).
    """

    kind = "torch"
    MEMORY_FORMATS = ("auto", "channels_last", "contiguous")

    def __init__(self, model: Any, labels: Optional[Sequence[str]] = None,
                 preprocess: Optional[dict] = None, device: str = "cpu", meta: Any = None,
                 batch_size: int = 64, memory_format: str = "auto"):
        import torch
        if memory_format not in self.MEMORY_FORMATS:
            raise BackendError(f"memory_format must be one of {', '.join(self.MEMORY_FORMATS)}, "
                               f"not {memory_format!r}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.meta = meta
        if labels is None and meta is not None:
            labels = meta.labels
        if preprocess is None and meta is not None:
            preprocess = meta.preprocess
        if labels is None or preprocess is None:
            raise BackendError("TorchBackend needs labels and preprocess (or a checkpoint's meta)")
        self.labels = list(labels)
        self.preprocess = dict(preprocess)
        self.batch_size = int(batch_size)
        self.channels_last, self.layout_reason = memory_format == "channels_last", memory_format
        if memory_format == "auto":
            if self.device.type == "cpu":
                from litefer.evaluation.layout import prefers_channels_last
                shape = (int(self.preprocess["channels"]), int(self.preprocess["size"]), int(self.preprocess["size"]))
                self.channels_last, self.layout_reason = prefers_channels_last(self.model, shape)
            else:
                self.layout_reason = "contiguous (not measured off the CPU)"
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    def __repr__(self) -> str:
        return (f"TorchBackend({type(self.model).__name__}, device={self.device}, "
                f"{'channels_last' if self.channels_last else 'contiguous'})")

    def predict(self, batch: np.ndarray) -> np.ndarray:
        import torch
        batch = check_batch(batch, self.preprocess)
        if len(batch) == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        outs = []
        with torch.inference_mode():
            for i in range(0, len(batch), self.batch_size):
                x = torch.from_numpy(batch[i:i + self.batch_size]).to(self.device)
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                logits = self.model(x)
                outs.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
        probs = np.concatenate(outs)
        if probs.shape[1] != len(self.labels):
            raise BackendError(f"the model gives {probs.shape[1]} outputs for {len(self.labels)} labels")
        return probs

    __call__ = predict


def resolve_backend(kind: str, source: str | Path = "default", device: str = "cpu") -> str:
    """``"torch"`` or ``"onnx"`` for a requested ``kind`` (``"auto"``, ``"torch"``, ``"onnx"``).

    ``auto`` picks ONNX Runtime when it is installed, the device is the CPU and an ONNX
    model is at hand without exporting (an ``.onnx`` file, or a bundled model whose
    export ships with it), or when torch is not installed; else torch.  The bundled
    model's ONNX and torch outputs agree to 1e-4 (``tests/test_torch_free.py``) and ONNX
    Runtime starts and runs faster, without importing torch.
    """
    kind = str(kind).lower()
    if kind != "auto":
        return kind
    import importlib.util
    src = str(source)
    if src.lower().endswith(".onnx"):
        return "onnx"
    has_ort = importlib.util.find_spec("onnxruntime") is not None
    if not has_ort:
        return "torch"
    if importlib.util.find_spec("torch") is None:
        return "onnx"
    if device not in (None, "cpu"):
        return "torch"
    if not Path(src).suffix and os.sep not in src and "/" not in src:
        from litefer.deploy.sidecar import bundled_onnx
        if bundled_onnx(src) is not None:
            return "onnx"
    return "torch"


def make_backend(kind: str = "torch", source: str | Path = "default", device: str = "cpu",
                 **kwargs: Any) -> ClassifierBackend:
    """A backend of ``kind`` (``"torch"`` or ``"onnx"``) for ``source``.

    torch: ``source`` is a bundled model name or a checkpoint (an ``.onnx`` file is
    refused with a hint).  onnx: an ``.onnx`` file, or a checkpoint/bundled name that
    ``OnnxBackend`` exports once and caches; needs the ``onnx`` extra.
    """
    kind = resolve_backend(kind, source, device)
    if kind == "torch":
        if str(source).lower().endswith(".onnx"):
            raise BackendError(f"{source}: an ONNX model needs backend='onnx'")
        from litefer.models.checkpoint import load_model
        model, meta = load_model(source, device=device)
        return TorchBackend(model, device=device, meta=meta, **kwargs)
    if kind == "onnx":
        try:
            from litefer.deploy.onnx_backend import OnnxBackend
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("litefer"):
                raise BackendError("the ONNX backend (litefer.deploy.onnx_backend) is not available") from None
            raise BackendError(f"the ONNX backend needs {exc.name}: pip install onnxruntime") from None
        if device not in ("cpu", None) and "providers" not in kwargs:
            kwargs["providers"] = ["CUDAExecutionProvider", "CPUExecutionProvider"] \
                if str(device).startswith("cuda") else None
        return OnnxBackend(source, **kwargs)
    raise BackendError(f"unknown backend {kind!r}; known: {', '.join(BACKENDS)}")
