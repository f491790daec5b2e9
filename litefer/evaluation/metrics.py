"""Classification metrics for expression recognition, and label-set mapping by name.

>>> m = compute_metrics(y_true, y_pred, labels=("neutral", "happy", "sad"))
>>> m["accuracy"], m["macro_f1"], m["mean_class_acc"], m["per_class"]["happy"]["recall"]

Conventions (the same as :func:`litefer.training.metrics_from_confusion`, so the numbers
a training run logs and the numbers ``litefer evaluate`` reports agree):

- ``confusion[i, j]`` counts images of true class ``i`` predicted as class ``j``.
- A class *absent from y_true* (support 0) has an undefined recall (``None``) and is left
  out of ``mean_class_acc`` and ``macro_f1``; its precision is still reported (0 when the
  model predicted it, since every such prediction is wrong).
- Precision of a class that is never predicted is 0 (no division warning).
- ``macro_f1`` is the unweighted mean of per-class F1 over the classes present in y_true.
- ``mean_class_acc`` (a.k.a. balanced accuracy, "average accuracy" in the FER literature)
  is the mean per-class recall over the classes present in y_true.

**Label-set mismatch** (a model head and a dataset with different label sets, e.g. an
8-class FER+ model evaluated on 7-class FER2013): classes are matched *by canonical name*
through :func:`litefer.labels.remap`, never by position, so orders may differ freely.
Then, with ``unmapped="error"`` (the default), the model's argmax is taken over all of its
classes and a prediction of a class the dataset lacks (FER+ *contempt* on FER2013) is
mapped to ``-1``: it counts as a wrong answer for the image's true class (lowering
accuracy and that class's recall), belongs to no dataset class's precision, and is tallied
in ``unmapped_predictions`` (and an extra column of the confusion figure).  With
``unmapped="restrict"`` the probabilities of the classes the dataset lacks are dropped
and the argmax is taken over the shared classes only (the model is asked "which of the
dataset's expressions?").  Dataset classes the model cannot predict (e.g. CK+ contempt
for a 7-class model) keep their images: their recall is 0 by construction, and the
mapping message says so.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from litefer.labels import canonical, remap

UNMAPPED_POLICIES = ("error", "restrict")


class LabelMismatchError(ValueError):
    """A model's label set and a dataset's label set share no class (or are unknown names)."""


# ------------------------------------------------------------------------------ label mapping
@dataclass
class LabelMapping:
    """How a model's class indices map onto a dataset's (by canonical name)."""
    model_labels: tuple[str, ...]
    data_labels: tuple[str, ...]
    #: model class index -> dataset class index (-1 where the dataset lacks the class)
    index: np.ndarray
    #: model classes the dataset lacks, dataset classes the model lacks
    model_only: tuple[str, ...] = ()
    data_only: tuple[str, ...] = ()
    unmapped: str = "error"
    message: str = ""

    @property
    def identity(self) -> bool:
        return self.model_labels == self.data_labels

    def map_predictions(self, model_pred: np.ndarray) -> np.ndarray:
        """Dataset class index of each model prediction (-1: a class the dataset lacks)."""
        return self.index[np.asarray(model_pred, dtype=np.int64)]

    def predict(self, probs: np.ndarray) -> np.ndarray:
        """Predicted dataset class indices from model probabilities ``(N, C_model)``,
        following the ``unmapped`` policy (see the module docstring)."""
        probs = np.asarray(probs)
        if self.unmapped == "restrict" and self.model_only:
            shared = np.flatnonzero(self.index >= 0)
            return self.index[shared[probs[:, shared].argmax(1)]]
        return self.map_predictions(probs.argmax(1))


def map_labels(model_labels: Sequence[str], data_labels: Sequence[str], unmapped: str = "error") -> LabelMapping:
    """The by-name mapping from a model's label set to a dataset's, with a clear message.

    Raises :class:`LabelMismatchError` when the two share no class or a name is unknown.
    """
    if unmapped not in UNMAPPED_POLICIES:
        raise ValueError(f"unmapped must be one of {', '.join(UNMAPPED_POLICIES)}, not {unmapped!r}")
    try:
        ml = tuple(canonical(n) for n in model_labels)
        dl = tuple(canonical(n) for n in data_labels)
    except ValueError as exc:
        raise LabelMismatchError(str(exc)) from None
    index = np.asarray(remap(range(len(ml)), ml, dl), dtype=np.int64)
    model_only = tuple(n for n in ml if n not in dl)
    data_only = tuple(n for n in dl if n not in ml)
    if not (index >= 0).any():
        raise LabelMismatchError(f"the model's labels {list(ml)} and the dataset's labels {list(dl)} "
                                 f"share no expression")
    parts = []
    if ml == dl:
        msg = ""
    else:
        if set(ml) == set(dl):
            parts.append("the model and the dataset order their labels differently; classes are matched by name")
        else:
            parts.append(f"the model has {len(ml)} classes {list(ml)}, the dataset {len(dl)} {list(dl)}; "
                         f"classes are matched by name")
        if model_only:
            if unmapped == "error":
                parts.append(f"predictions of {', '.join(model_only)} (not in the dataset) count as errors "
                             f"and are tallied as 'unmapped'")
            else:
                parts.append(f"the probabilities of {', '.join(model_only)} (not in the dataset) are ignored: "
                             f"the prediction is the most probable of the {int((index >= 0).sum())} shared classes")
        if data_only:
            parts.append(f"the model cannot predict {', '.join(data_only)}: the recall of "
                         f"{'that class' if len(data_only) == 1 else 'those classes'} is 0 by construction")
        msg = "; ".join(parts)
    return LabelMapping(ml, dl, index, model_only, data_only, unmapped, msg)


# ------------------------------------------------------------------------------ metrics
def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """``(C, C)`` int64 counts, rows = true class, columns = predicted class.

    Predictions of ``-1`` (a class the dataset lacks) are not counted here; see
    :func:`compute_metrics`'s ``unmapped_predictions``.
    """
    t = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(y_pred, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"{t.size} targets but {p.size} predictions")
    if t.size and (t.min() < 0 or t.max() >= num_classes):
        raise ValueError(f"targets must be class indices in [0, {num_classes})")
    if p.size and (p.min() < -1 or p.max() >= num_classes):
        raise ValueError(f"predictions must be class indices in [0, {num_classes}) or -1")
    ok = p >= 0
    return np.bincount(t[ok] * num_classes + p[ok], minlength=num_classes * num_classes).reshape(
        num_classes, num_classes).astype(np.int64)


def normalize_confusion(conf: np.ndarray, unmapped: Optional[np.ndarray] = None) -> np.ndarray:
    """Row-normalised confusion matrix (each row divided by the class's support, so the
    diagonal is the per-class recall); rows of absent classes are NaN.  ``unmapped``
    (per true class) counts toward the support."""
    conf = np.asarray(conf, dtype=np.float64)
    support = conf.sum(1) + (0 if unmapped is None else np.asarray(unmapped, dtype=np.float64))
    out = np.full_like(conf, np.nan)
    rows = support > 0
    out[rows] = conf[rows] / support[rows, None]
    return out


def _f(x: float) -> float:
    return float(x)


def compute_metrics(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, mean per-class accuracy, per-class precision/recall/F1/support and
    the confusion matrix (counts and row-normalised) of dataset-space predictions.

    ``y_pred`` may hold ``-1`` (a model class the dataset lacks): wrong for its image.
    Everything is JSON-serialisable (NaN -> None).
    """
    labels = tuple(labels)
    c = len(labels)
    t = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(y_pred, dtype=np.int64).ravel()
    conf = confusion_matrix(t, p, c)
    unmapped = np.bincount(t[p < 0], minlength=c).astype(np.int64) if t.size else np.zeros(c, np.int64)
    n = int(t.size)
    tp = np.diag(conf).astype(np.float64)
    support = conf.sum(1) + unmapped
    predicted = conf.sum(0)
    present = support > 0
    recall = np.divide(tp, support, out=np.zeros(c), where=present)
    precision = np.divide(tp, predicted, out=np.zeros(c), where=predicted > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(c), where=denom > 0)
    per_class = {}
    for i, name in enumerate(labels):
        per_class[name] = {
            "precision": _f(precision[i]),
            "recall": _f(recall[i]) if present[i] else None,
            "f1": _f(f1[i]) if present[i] else None,
            "support": int(support[i]),
            "predicted": int(predicted[i]),
        }
    norm = normalize_confusion(conf, unmapped)
    return {
        "n": n,
        "accuracy": _f(tp.sum() / n) if n else None,
        "macro_f1": _f(f1[present].mean()) if present.any() else None,
        "mean_class_acc": _f(recall[present].mean()) if present.any() else None,
        "weighted_f1": _f((f1 * support).sum() / support.sum()) if support.sum() else None,
        "num_classes_present": int(present.sum()),
        "labels": list(labels),
        "per_class": per_class,
        "confusion": conf.tolist(),
        "confusion_normalized": [[None if np.isnan(v) else _f(v) for v in row] for row in norm],
        "unmapped_predictions": int(unmapped.sum()),
        "unmapped_per_class": unmapped.tolist(),
    }


def accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    t, p = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if t.size == 0:
        raise ValueError("accuracy of no images is undefined")
    return float((t == p).mean())


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> float:
    """Macro-F1 over the classes present in ``y_true`` (see the module docstring)."""
    return compute_metrics(y_true, y_pred, [str(i) for i in range(num_classes)])["macro_f1"]


def mean_class_accuracy(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> float:
    """Mean per-class recall over the classes present in ``y_true``."""
    return compute_metrics(y_true, y_pred, [str(i) for i in range(num_classes)])["mean_class_acc"]


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Mean and population standard deviation (ddof=0) over folds/runs (NaN-free input)."""
    a = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if a.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(a.mean()), "std": float(a.std(ddof=0)), "n": int(a.size)}


def format_mean_std(values: Sequence[float], percent: bool = True, digits: int = 2) -> str:
    """``"71.23 ± 1.05"`` (percent) from per-fold values."""
    s = summarize(values)
    if s["n"] == 0:
        return "—"
    k = 100.0 if percent else 1.0
    return f"{s['mean'] * k:.{digits}f} ± {s['std'] * k:.{digits}f}"
