"""Choosing an ensemble on a validation split: every subset of trained checkpoints, with and
without mirrored faces, scored from one pass per checkpoint and view.

>>> from litefer.evaluation.selection import compare_ensembles
>>> rows = compare_ensembles(["runs/a/best.pt", "runs/b/best.pt"], arrays)   # arrays: PublicTest
>>> best = rows[0]        # sorted: accuracy, then fewer members, then no flip

Each checkpoint is loaded once and run once on the faces and once on their mirrors; its flip-TTA
probabilities are the mean of the two (what ``evaluate(tta=True)`` computes, without paying for
the plain pass twice).  An ensemble's probabilities
are the mean of its members' (the same numbers :class:`litefer.models.ensemble.Ensemble`
computes, so ``litefer combine`` of the chosen subset gives the same accuracy, up to float
rounding on exact ties).  Use it on a validation split only: the point is to leave the
test split for the one chosen model.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from litefer.evaluation.metrics import compute_metrics


def score_subsets(probs: dict[bool, list[np.ndarray]], y_true: np.ndarray, labels: Sequence[str],
                  mapping: Any, names: Sequence[str]) -> list[dict[str, Any]]:
    """Rows (members, flip, accuracy, macro_f1, mean_class_acc) for every non-empty subset of
    the members and both views; ``probs[flip][i]`` is member i's (N, C) probabilities."""
    rows = []
    n = len(names)
    for k in range(1, n + 1):
        for subset in itertools.combinations(range(n), k):
            for flip in (False, True):
                p = np.mean([probs[flip][i] for i in subset], axis=0)
                m = compute_metrics(y_true, mapping.predict(p), labels)
                rows.append({"members": [names[i] for i in subset], "flip": flip,
                             "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                             "mean_class_acc": m["mean_class_acc"], "n": m["n"]})
    rows.sort(key=lambda r: (-r["accuracy"], len(r["members"]), r["flip"]))
    return rows


def compare_ensembles(checkpoints: Sequence[str | Path], arrays, names: Sequence[str] | None = None,
                      batch_size: int = 64) -> list[dict[str, Any]]:
    """:func:`score_subsets` for trained checkpoints on ``arrays`` (a validation split)."""
    from litefer.evaluation.predict import evaluate, load_for_eval, predict_proba

    if not checkpoints:
        raise ValueError("compare_ensembles: give at least one checkpoint")
    names = list(names or [str(c) for c in checkpoints])
    if len(names) != len(checkpoints):
        raise ValueError(f"compare_ensembles: {len(names)} names for {len(checkpoints)} checkpoints")
    probs: dict[bool, list[np.ndarray]] = {False: [], True: []}
    first = None
    for ckpt in checkpoints:
        model, meta = load_for_eval(ckpt)
        res = evaluate(model, arrays, batch_size=batch_size, preprocess=meta.preprocess, labels=meta.labels)
        if first is None:
            first = res
        elif res.model_labels != first.model_labels:
            raise ValueError(f"{ckpt}: labels {res.model_labels} differ from {checkpoints[0]}'s "
                             f"{first.model_labels}")
        mirrored = predict_proba(model, arrays.images, meta.preprocess, batch_size=batch_size, mirror=True)
        probs[False].append(res.probs)
        probs[True].append((0.5 * (res.probs + mirrored)).astype(np.float32))
    return score_subsets(probs, first.y_true, first.labels, first.mapping, names)
