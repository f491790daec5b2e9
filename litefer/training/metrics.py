"""Metrics of a training run, from a confusion matrix: one dialect with
:func:`litefer.evaluation.metrics.compute_metrics` (used by ``evaluate``, ``cv`` and
``ablate``): ``accuracy``, ``mean_class_acc``, ``macro_f1``; a class absent from the targets
has no recall (``None``) and is left out of mean class accuracy and macro F1; an undefined
value is ``None``, never NaN.  ``acc`` is kept as an alias of ``accuracy`` (older code and
checkpoints use it)."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from litefer.training import distributed as D


def metrics_from_confusion(conf: np.ndarray) -> dict:
    """accuracy, mean per-class accuracy (recall) and macro F1 over classes present
    (the dialect of :func:`litefer.evaluation.metrics.compute_metrics`)."""
    conf = np.asarray(conf, dtype=np.float64)
    n = conf.sum()
    tp = np.diag(conf)
    support, predicted = conf.sum(1), conf.sum(0)
    present = support > 0
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=present)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=(precision + recall) > 0)
    accuracy = float(tp.sum() / n) if n else None
    return {
        "accuracy": accuracy,
        "acc": accuracy,
        "mean_class_acc": float(recall[present].mean()) if present.any() else None,
        "macro_f1": float(f1[present].mean()) if present.any() else None,
        "per_class_acc": [float(r) if p else None for r, p in zip(recall, present)],
        "n": int(n),
        "confusion": conf.astype(np.int64).tolist(),
    }


@torch.no_grad()
def evaluate(model: nn.Module, loader, num_classes: int, device: torch.device, autocast=None,
             dist_info: Optional[D.DistInfo] = None, channels_last: bool = False,
             check: Optional[Callable[[], None]] = None) -> dict:
    """Loss and confusion-matrix metrics of ``model`` on ``loader`` (summed over ranks).

    ``check()`` runs after every batch (the trainer's stop-request check: it may raise)."""
    was_training = model.training
    model.eval()
    conf = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with (autocast() if autocast else nullcontext()):
            logits = model(x)
        logits = logits.float()
        if y.ndim == 2:
            loss_sum += -(y * F.log_softmax(logits, 1)).sum().double()
            hard = y.argmax(1)
        else:
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
            hard = y
        conf += torch.bincount(hard * num_classes + logits.argmax(1), minlength=num_classes * num_classes)
        if check is not None:
            check()
    info = dist_info or D.DistInfo()
    D.all_reduce_sum(conf, info)
    D.all_reduce_sum(loss_sum, info)
    m = metrics_from_confusion(conf.view(num_classes, num_classes).cpu().numpy())
    m["loss"] = float(loss_sum.item() / max(m["n"], 1))
    model.train(was_training)
    return m
