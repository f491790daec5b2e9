"""Seeded splits: subject-independent k-fold and stratified validation hold-outs.

Both are pure functions of their inputs and ``seed`` (no global RNG), so a fold or a
hold-out is reproducible from a config.

>>> folds = subject_kfold(arrays.groups, k=10, seed=0)     # [(train_idx, test_idx)] * 10
>>> tr, va = stratified_holdout(arrays.targets, 0.1, seed=0)
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _hard(targets) -> np.ndarray:
    y = np.asarray(targets)
    return y.argmax(1) if y.ndim == 2 else y


def subject_kfold(groups: Sequence, k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` (train_idx, test_idx) pairs in which every subject (``groups`` value) lies in
    exactly one test fold, so no subject is in the training and test part of a fold.

    Subjects are shuffled with ``seed`` and dealt largest-first to the fold with the fewest
    images so far, so folds hold similar numbers of images.  Indices are sorted int64.
    """
    g = np.asarray(groups)
    if g.ndim != 1:
        raise ValueError(f"groups must be one subject id per image, got shape {g.shape}")
    if k < 2:
        raise ValueError(f"subject k-fold needs k >= 2, got {k}")
    subjects, inverse, counts = np.unique(g, return_inverse=True, return_counts=True)
    if len(subjects) < k:
        raise ValueError(f"{len(subjects)} subjects cannot make {k} subject-disjoint folds")
    rng = np.random.default_rng([int(seed), 0x5B1EC7])
    order = rng.permutation(len(subjects))
    order = order[np.argsort(-counts[order], kind="stable")]  # largest first, ties in shuffled order
    fold_of = np.empty(len(subjects), np.int64)
    load = np.zeros(k, np.int64)
    tie = rng.permutation(k)  # which fold wins ties of equal load, seeded
    for s in order:
        f = min(range(k), key=lambda j: (load[j], tie[j]))
        fold_of[s] = f
        load[f] += counts[s]
    img_fold = fold_of[inverse]
    return [(np.flatnonzero(img_fold != f).astype(np.int64), np.flatnonzero(img_fold == f).astype(np.int64))
            for f in range(k)]


def stratified_holdout(targets, frac: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx): ``frac`` of every class held out (rounded; at least one image of
    each class with two or more, never all of a class), chosen with ``seed``.

    ``targets`` are class indices (N,) or soft targets (N, C) (their argmax is used).
    """
    if not 0.0 < float(frac) < 1.0:
        raise ValueError(f"hold-out fraction must be in (0, 1), got {frac}")
    y = _hard(targets)
    rng = np.random.default_rng([int(seed), 0x401D])
    val = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        n = len(members)
        kk = min(max(int(round(frac * n)), 1), n - 1) if n >= 2 else 0
        if kk:
            val.append(rng.choice(members, size=kk, replace=False))
    va = np.sort(np.concatenate(val)).astype(np.int64) if val else np.zeros(0, np.int64)
    tr = np.setdiff1d(np.arange(len(y)), va).astype(np.int64)
    return tr, va


def stratified_holdout_count(targets, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(rest_idx, held_idx): exactly ``count`` images held out, spread over the classes in
    proportion to their sizes (largest remainder; ties broken by class index), chosen
    with ``seed``.  Image-level: frames of one subject may land on both sides (this is
    the protocol of papers that report a single CK+ split, e.g. I-MobileNetV2's 882 / 99).
    """
    y = _hard(targets)
    n = len(y)
    if not 0 < int(count) < n:
        raise ValueError(f"hold-out count must be in 1..{n - 1}, got {count}")
    classes, sizes = np.unique(y, return_counts=True)
    quota = sizes * (int(count) / n)
    k = np.floor(quota).astype(np.int64)
    rem = int(count) - int(k.sum())
    order = np.lexsort((classes, -(quota - k)))      # largest remainder first
    k[order[:rem]] += 1
    rng = np.random.default_rng([int(seed), 0x7E57])
    held = [rng.choice(np.flatnonzero(y == c), size=int(kk), replace=False) for c, kk in zip(classes, k) if kk]
    va = np.sort(np.concatenate(held)).astype(np.int64)
    tr = np.setdiff1d(np.arange(n), va).astype(np.int64)
    return tr, va


def group_of_files(ids: Sequence[str], pattern: str = r"(S\d+)") -> np.ndarray:
    """Subject id per image from a regular expression's first group (default CK+ ``S005``)."""
    import re
    rx = re.compile(pattern)
    out = []
    for i in ids:
        m = rx.search(i)
        if m is None:
            raise ValueError(f"no subject id matching {pattern!r} in {i!r}")
        out.append(m.group(1))
    return np.asarray(out)
