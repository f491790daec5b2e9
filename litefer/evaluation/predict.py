"""Batched inference over :class:`~litefer.data.base.FaceArrays` and the ``evaluate`` API.

>>> from litefer.evaluation import evaluate
>>> res = evaluate("runs/x/best.pt", arrays, tta=True, out_dir="runs/x/eval-privatetest")
>>> res.metrics["accuracy"], res.metrics["per_class"]["happy"]["recall"], res.probs.shape

Images are preprocessed exactly as the checkpoint's ``preprocess`` dict says (colour
handling, resize, ``(pixel/255 - mean)/std``; :func:`litefer.data.transforms.from_preprocess`).
With ``tta=True`` every image is also classified mirrored left-right and the two softmax
probability vectors are averaged (the flip is applied to the preprocessed tensor).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from litefer.data.base import FaceArrays
from litefer.evaluation.metrics import LabelMapping, compute_metrics, map_labels

PREPROCESS_KEYS = ("channels", "size", "mean", "std")


@dataclass
class EvalResult:
    """What :func:`evaluate` measured; ``probs`` are in the *model's* label space."""
    metrics: dict
    #: (N, C_model) float32 softmax probabilities (flip-averaged with TTA)
    probs: np.ndarray
    #: dataset class indices of the targets (argmax of soft targets)
    y_true: np.ndarray
    #: dataset class indices of the predictions (-1: a model class the dataset lacks)
    y_pred: np.ndarray
    #: model class index of each argmax (before mapping)
    model_pred: np.ndarray
    labels: tuple[str, ...]
    model_labels: tuple[str, ...]
    ids: list[str]
    mapping: LabelMapping
    tta: bool = False
    source: str = ""
    dataset: str = ""
    split: str = ""
    preprocess: dict = field(default_factory=dict)
    #: anything else worth recording (excluded images, timings, ...)
    info: dict = field(default_factory=dict)
    #: files written by :func:`litefer.evaluation.report.write_report` (name -> path)
    files: dict = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        m = self.metrics
        return {"n": m["n"], "accuracy": m["accuracy"], "mean_class_acc": m["mean_class_acc"],
                "macro_f1": m["macro_f1"], "unmapped_predictions": m["unmapped_predictions"]}


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device).lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("CUDA requested but not available")
    return dev


def _check_preprocess(pre: dict) -> dict:
    missing = [k for k in PREPROCESS_KEYS if k not in pre]
    if missing:
        raise ValueError(f"preprocess dict lacks {', '.join(missing)} (needs {', '.join(PREPROCESS_KEYS)})")
    return dict(pre)


#: images per forward pass by default: on the project's CPU eager PyTorch ran mini-Xception
#: 1.5-2x faster a face at 64 than at 256 (cache-sized activations)
EVAL_BATCH = 64


def _is_channels_last(model: nn.Module) -> bool:
    """Whether ``model``'s convolutions are stored channels-last (judged on the first weight
    whose layout is not ambiguous: more than one input channel and a spatial kernel)."""
    w = next((p for p in model.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] * p.shape[3] > 1),
             None)
    return w is not None and not w.is_contiguous() and w.is_contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def predict_proba(model: nn.Module, images: np.ndarray | Sequence[np.ndarray], preprocess: dict,
                  batch_size: int = EVAL_BATCH, tta: bool = False,
                  device: str | torch.device | None = "cpu", memory_format: str = "auto",
                  mirror: bool = False) -> np.ndarray:
    """Softmax probabilities ``(N, C)`` (float32) of ``model`` over uint8 face images.

    ``tta``: average the probabilities of each image and its horizontal mirror.
    ``mirror``: classify the mirrored images only (``0.5 * (plain + mirrored)`` is exactly
    what ``tta`` returns, so a caller that wants both views pays for each once).
    ``memory_format``: ``"auto"`` runs a CPU model over ``EVAL_BATCH`` images or more
    channels-last where that is measured to be faster and equal in output
    (:mod:`litefer.evaluation.layout`; a model already in channels-last stays so),
    ``"channels_last"`` or ``"contiguous"``.
    The model is put in eval mode (and left there); its memory layout is restored.
    """
    from litefer.data.transforms import from_preprocess

    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if tta and mirror:
        raise ValueError("predict_proba: tta and mirror are exclusive (tta already includes the mirror)")
    if memory_format not in ("auto", "channels_last", "contiguous"):
        raise ValueError(f"memory_format must be auto, channels_last or contiguous, not {memory_format!r}")
    pre = _check_preprocess(preprocess)
    tf = from_preprocess(pre)
    dev = resolve_device(device)
    model = model.to(dev).eval()
    was_cl = _is_channels_last(model)
    use_cl = memory_format == "channels_last" or (memory_format == "auto" and was_cl)
    if memory_format == "auto" and not was_cl and dev.type == "cpu" and len(images) >= EVAL_BATCH:
        from litefer.evaluation.layout import prefers_channels_last
        use_cl, _ = prefers_channels_last(model, (int(pre["channels"]), int(pre["size"]), int(pre["size"])))
    if use_cl != was_cl:
        model.to(memory_format=torch.channels_last if use_cl else torch.contiguous_format)
    fmt = torch.channels_last if use_cl else torch.contiguous_format
    n = len(images)
    out: list[np.ndarray] = []
    try:
        for start in range(0, n, batch_size):
            x = torch.stack([tf(images[i]) for i in range(start, min(start + batch_size, n))]).to(dev)
            if mirror:
                x = torch.flip(x, dims=[3])
            x = x.contiguous(memory_format=fmt)
            p = torch.softmax(model(x).float(), dim=1)
            if tta:
                xf = torch.flip(x, dims=[3]).contiguous(memory_format=fmt)
                p = 0.5 * (p + torch.softmax(model(xf).float(), dim=1))
            out.append(p.cpu().numpy().astype(np.float32))
    finally:
        if use_cl != was_cl:
            model.to(memory_format=torch.channels_last if was_cl else torch.contiguous_format)
    if not out:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(out)


def load_for_eval(checkpoint: str | Path, device: str | torch.device | None = "cpu"):
    """(model in eval mode, :class:`~litefer.models.checkpoint.ModelMeta`) of a checkpoint
    path or bundled model name."""
    from litefer.models.checkpoint import load_model
    return load_model(checkpoint, device=resolve_device(device))


def evaluate(checkpoint_or_model: str | Path | nn.Module, arrays: FaceArrays, batch_size: int = EVAL_BATCH,
             tta: bool = False, device: str | torch.device | None = "cpu", *,
             preprocess: Optional[dict] = None, labels: Optional[Sequence[str]] = None,
             unmapped: str = "error", out_dir: str | Path | None = None,
             title: Optional[str] = None) -> EvalResult:
    """Classify ``arrays`` and measure (see :mod:`litefer.evaluation.metrics` for the conventions).

    - ``checkpoint_or_model``: a checkpoint path / bundled name (its ``labels`` and
      ``preprocess`` are used), or an ``nn.Module`` with ``preprocess`` (required) and
      ``labels`` (default: the dataset's) given here.
    - ``unmapped``: ``"error"`` or ``"restrict"``, for model classes the dataset lacks.
    - ``out_dir``: also write ``report.md``, ``metrics.json``, ``confusion.png`` and
      ``predictions.csv`` there.
    """
    if len(arrays) == 0:
        raise ValueError(f"{arrays.name or 'dataset'} {arrays.split}: no images to evaluate")
    if isinstance(checkpoint_or_model, nn.Module):
        model = checkpoint_or_model
        if preprocess is None:
            preprocess = getattr(model, "preprocess", None)
        if preprocess is None:
            raise ValueError("evaluating a bare model needs preprocess={'channels', 'size', 'mean', 'std'} "
                             "(a checkpoint carries its own)")
        model_labels = tuple(labels) if labels is not None else tuple(arrays.labels)
        source = type(model).__name__
        meta_extra: dict = {}
    else:
        model, meta = load_for_eval(checkpoint_or_model, device)
        preprocess = dict(preprocess or meta.preprocess)
        model_labels = tuple(labels) if labels is not None else tuple(meta.labels)
        source = str(checkpoint_or_model)
        meta_extra = {"arch": meta.arch, "epoch": meta.extra.get("epoch")}
    mapping = map_labels(model_labels, arrays.labels, unmapped=unmapped)

    t0 = time.perf_counter()
    probs = predict_proba(model, arrays.images, preprocess, batch_size=batch_size, tta=tta, device=device)
    seconds = time.perf_counter() - t0
    if probs.shape[1] != len(model_labels):
        raise ValueError(f"the model outputs {probs.shape[1]} classes but has {len(model_labels)} labels "
                         f"{list(model_labels)}")
    y_true = np.asarray(arrays.hard_targets, dtype=np.int64)
    y_pred = mapping.predict(probs)
    metrics = compute_metrics(y_true, y_pred, mapping.data_labels)
    metrics.update(tta=bool(tta), unmapped_policy=unmapped, label_mapping=mapping.message or None,
                   model_labels=list(mapping.model_labels))
    res = EvalResult(
        metrics=metrics, probs=probs, y_true=y_true, y_pred=y_pred, model_pred=probs.argmax(1),
        labels=mapping.data_labels, model_labels=mapping.model_labels, ids=list(arrays.ids), mapping=mapping,
        tta=bool(tta), source=source, dataset=arrays.name, split=arrays.split, preprocess=dict(preprocess),
        info={"seconds": seconds, "images_per_s": len(arrays) / max(seconds, 1e-9),
              "skipped": str(arrays.skipped) if arrays.skipped.total else None, **meta_extra},
    )
    if out_dir is not None:
        from litefer.evaluation.report import write_report
        write_report(res, out_dir, title=title)
    return res
