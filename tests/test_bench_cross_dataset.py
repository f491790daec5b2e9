"""The scoring of benchmarks/bench_cross_dataset.py: restricted to the data's classes, and
the like-for-like view without the class some models lack."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
bench = pytest.importorskip("bench_cross_dataset")

DATA = ["angry", "contempt", "disgust", "fear", "happy", "sad", "surprise"]      # CK+48's classes


def test_neutral_is_ignored_and_a_missing_class_counts_only_in_the_full_view():
    fer7 = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    y = np.array([DATA.index(n) for n in ("happy", "sad", "contempt", "angry")])
    probs = np.zeros((4, 7))
    probs[0, [3, 6]] = [0.3, 0.7]          # neutral wins, happy is the best CK+ class -> right
    probs[1, [4, 0]] = [0.6, 0.4]          # sad -> right
    probs[2, [0, 6]] = [0.2, 0.8]          # contempt face: the model has no contempt -> wrong
    probs[3, [1, 0]] = [0.9, 0.1]          # disgust for an angry face -> wrong
    v = bench.both_views(probs, fer7, y, DATA)
    assert v["all"]["n"] == 4 and v["all"]["accuracy"] == pytest.approx(2 / 4)
    assert v["all"]["cannot_predict"] == ["contempt"]
    assert v["no_contempt"]["n"] == 3 and v["no_contempt"]["accuracy"] == pytest.approx(2 / 3)
    assert v["no_contempt"]["cannot_predict"] == []
    # an 8-class FER+ model that can say contempt gets it right in both views' terms
    ferplus = ["neutral", "happy", "surprise", "sad", "angry", "disgust", "fear", "contempt"]
    p8 = np.zeros((4, 8))
    p8[0, 1] = p8[1, 3] = p8[2, 7] = p8[3, 4] = 1.0
    v8 = bench.both_views(p8, ferplus, y, DATA)
    assert v8["all"]["accuracy"] == 1.0 and v8["no_contempt"]["accuracy"] == 1.0
