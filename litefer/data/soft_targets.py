"""A teacher's class probabilities per image, as training targets (knowledge distillation).

The file is the ``predictions.csv`` that ``litefer evaluate TEACHER --split train --out DIR``
writes: an ``id`` column and one ``p_<label>`` column per class of the teacher (other
columns are ignored). Any CSV with those columns works.

- :func:`read_soft_targets` reads it strictly: a missing column, a duplicate id, a number
  that does not parse, a negative probability or a row that does not sum to 1 (within
  0.01; the file stores 5 decimals) is a :class:`~litefer.data.base.DatasetError` naming
  the file, the line and the column.
- :func:`distill_targets` turns them into the targets of a :class:`FaceArrays`:
  ``weight * soften(teacher, T) + (1 - weight) * own``, where ``own`` is the one-hot label
  (or the split's own soft target, e.g. FER+ votes) and ``soften`` raises each probability
  to ``1 / T`` and renormalises (a softmax of the teacher's log-probabilities at
  temperature ``T``). Every image must have a row; rows for other images are not used.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from litefer.data.base import DatasetError, FaceArrays

PREFIX = "p_"
#: tolerance on a row's sum (predictions.csv rounds each probability to 5 decimals)
SUM_TOL = 0.01


def read_soft_targets(path: str | os.PathLike, labels: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(ids, probabilities (N, len(labels)) float32 in the order of ``labels``) from ``path``.

    The file's ``p_<label>`` columns must be exactly ``labels`` (in any order): a teacher
    with a class the student lacks (or the reverse) is refused rather than renormalised.
    """
    ids, probs, _ = _read(path, labels)
    return ids, probs


def _read(path: str | os.PathLike, labels: Sequence[str]) -> tuple[list[str], np.ndarray, str]:
    """:func:`read_soft_targets` plus the SHA-256 of the bytes parsed: the file is read once,
    so the recorded hash is that of the targets used even if the file changes meanwhile."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError("no such file", p)
    labels = [str(x) for x in labels]
    data = p.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"not UTF-8 text (byte {exc.start})", p) from None
    with io.StringIO(text, newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise DatasetError("empty file (expected a header with id and p_<label> columns)", p, 1) from None
        header = [h.strip() for h in header]
        if "id" not in header:
            raise DatasetError(f"no 'id' column (columns: {', '.join(header)})", p, 1, "id")
        have = {h[len(PREFIX):]: j for j, h in enumerate(header) if h.startswith(PREFIX)}
        missing = [c for c in labels if c not in have]
        extra = [c for c in have if c not in labels]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"no column for class(es) {', '.join(PREFIX + c for c in missing)}")
            if extra:
                parts.append(f"column(s) {', '.join(PREFIX + c for c in extra)} for class(es) the training "
                             f"labels lack")
            raise DatasetError(f"{'; '.join(parts)}: the teacher's classes must be the training labels "
                               f"{labels}", p, 1)
        id_col = header.index("id")
        cols = [have[c] for c in labels]
        width = len(header)
        ids: list[str] = []
        rows: list[list[float]] = []
        seen: dict[str, int] = {}
        for line, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != width:
                raise DatasetError(f"{len(row)} fields, the header has {width}", p, line)
            id_ = row[id_col].strip()
            if not id_:
                raise DatasetError("empty id", p, line, "id")
            if id_ in seen:
                raise DatasetError(f"id {id_!r} again (first on line {seen[id_]})", p, line, "id")
            seen[id_] = line
            vals = []
            for c, j in zip(labels, cols):
                try:
                    v = float(row[j])
                except ValueError:
                    raise DatasetError(f"{row[j]!r} is not a number", p, line, PREFIX + c) from None
                if not np.isfinite(v) or v < 0:
                    raise DatasetError(f"{row[j]!r} is not a probability", p, line, PREFIX + c)
                vals.append(v)
            s = sum(vals)
            if abs(s - 1.0) > SUM_TOL:
                raise DatasetError(f"probabilities sum to {s:.4f}, not 1", p, line)
            ids.append(id_)
            rows.append(vals)
    if not ids:
        raise DatasetError("no rows", p)
    probs = np.asarray(rows, dtype=np.float64)
    probs /= probs.sum(1, keepdims=True)
    return ids, probs.astype(np.float32), hashlib.sha256(data).hexdigest()


def soften(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(probs) / T)`` row-wise (T > 1 flattens, T < 1 sharpens; T = 1 is the identity)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    p = np.asarray(probs, dtype=np.float64)
    if temperature == 1.0:
        return (p / p.sum(1, keepdims=True)).astype(np.float32)
    logp = np.log(np.clip(p, 1e-12, None)) / temperature
    logp -= logp.max(1, keepdims=True)
    e = np.exp(logp)
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


def distill_targets(arrays: FaceArrays, path: str | os.PathLike, weight: float = 1.0,
                    temperature: float = 1.0) -> tuple[FaceArrays, dict]:
    """``arrays`` with soft targets mixed from the teacher file at ``path`` (module docstring),
    each image's own class kept as ``classes`` (what balancing and accuracy follow), and a
    summary: file, its SHA-256 (of the bytes read), rows used / unused, and how often the
    teacher's top class is the image's own label (``agreement``)."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    ids, probs, sha256 = _read(path, arrays.labels)
    index = {id_: i for i, id_ in enumerate(ids)}
    rows = [index.get(id_, -1) for id_ in arrays.ids]
    absent = [arrays.ids[i] for i, r in enumerate(rows) if r < 0]
    if absent:
        shown = ", ".join(repr(x) for x in absent[:3])
        raise DatasetError(f"{len(absent)} of {len(arrays)} {arrays.name or 'training'} {arrays.split or ''} images "
                           f"have no row (e.g. {shown}); the file must hold the teacher's predictions for the "
                           f"training split (litefer evaluate TEACHER --split <train split> --out DIR)", path)
    teacher = soften(probs[np.asarray(rows, dtype=np.int64)], temperature)
    own = arrays.targets
    if own.ndim == 1:
        own_soft = np.zeros((len(arrays), arrays.num_classes), np.float32)
        own_soft[np.arange(len(arrays)), own] = 1.0
    else:
        own_soft = own.astype(np.float32)
    mixed = (weight * teacher + (1.0 - weight) * own_soft).astype(np.float32)
    agreement = float((teacher.argmax(1) == arrays.hard_targets).mean()) if len(arrays) else float("nan")
    info = {"file": str(path), "sha256": sha256, "rows": len(ids), "used": len(arrays),
            "unused": len(ids) - len(set(rows)), "weight": float(weight), "temperature": float(temperature),
            "agreement": agreement}
    return replace(arrays, targets=mixed, classes=arrays.hard_targets.copy()), info
