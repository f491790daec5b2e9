"""Metrics against hand-computed values, label mapping by name, fold construction."""
from __future__ import annotations

import math

import numpy as np
import pytest

from litefer.evaluation.cv import CVError, check_folds, make_folds, stratified_kfold, subject_kfold
from litefer.evaluation.metrics import (
    LabelMismatchError, accuracy, compute_metrics, confusion_matrix, format_mean_std, macro_f1, map_labels,
    mean_class_accuracy, normalize_confusion, summarize,
)
from litefer.labels import FER2013, FERPLUS8

L3 = ("neutral", "happy", "sad")


def test_three_class_metrics_hand_computed():
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 1, 0, 1, 2, 2]
    m = compute_metrics(y_true, y_pred, L3)
    # confusion: rows true, columns predicted
    assert m["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    pc = m["per_class"]
    # precision 2/2, 1/2, 1/2; recall 2/3, 1/2, 1/1
    assert [pc[n]["precision"] for n in L3] == pytest.approx([1.0, 0.5, 0.5])
    assert [pc[n]["recall"] for n in L3] == pytest.approx([2 / 3, 0.5, 1.0])
    # F1 = 2PR/(P+R): 0.8, 0.5, 2/3
    assert [pc[n]["f1"] for n in L3] == pytest.approx([0.8, 0.5, 2 / 3])
    assert [pc[n]["support"] for n in L3] == [3, 2, 1]
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)            # 0.65556
    assert m["mean_class_acc"] == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)      # 0.72222
    assert m["weighted_f1"] == pytest.approx((0.8 * 3 + 0.5 * 2 + 2 / 3) / 6)
    norm = np.array(m["confusion_normalized"])
    assert norm[0] == pytest.approx([2 / 3, 1 / 3, 0])
    assert norm[1] == pytest.approx([0, 0.5, 0.5])
    assert norm.sum(1) == pytest.approx([1, 1, 1])
    # the helpers agree
    assert accuracy(y_true, y_pred) == pytest.approx(4 / 6)
    assert macro_f1(y_true, y_pred, 3) == pytest.approx(0.655555, abs=1e-6)
    assert mean_class_accuracy(y_true, y_pred, 3) == pytest.approx(0.722222, abs=1e-6)


def test_class_absent_from_y_true_is_left_out_of_the_means():
    labels = ("neutral", "happy", "sad", "fear")
    y_true = [0, 1, 1, 2]
    y_pred = [0, 1, 3, 2]            # "fear" predicted once but never true
    m = compute_metrics(y_true, y_pred, labels)
    pc = m["per_class"]
    assert m["accuracy"] == pytest.approx(0.75)
    assert pc["fear"]["recall"] is None and pc["fear"]["f1"] is None
    assert pc["fear"]["precision"] == 0.0 and pc["fear"]["support"] == 0 and pc["fear"]["predicted"] == 1
    assert m["num_classes_present"] == 3
    assert m["mean_class_acc"] == pytest.approx((1 + 0.5 + 1) / 3)
    # happy: P = 1/1, R = 1/2 -> F1 = 2/3
    assert m["macro_f1"] == pytest.approx((1 + 2 / 3 + 1) / 3)
    assert m["confusion_normalized"][3] == [None, None, None, None]


def test_never_predicted_class_has_zero_precision_and_f1():
    m = compute_metrics([0, 1, 1], [0, 0, 0], ("neutral", "happy"))
    assert m["per_class"]["happy"]["precision"] == 0.0
    assert m["per_class"]["happy"]["recall"] == 0.0
    assert m["per_class"]["happy"]["f1"] == 0.0
    # neutral: P = 1/3, R = 1 -> F1 = 0.5
    assert m["per_class"]["neutral"]["f1"] == pytest.approx(0.5)
    assert m["macro_f1"] == pytest.approx(0.25)


def test_confusion_matrix_checks_ranges():
    assert confusion_matrix([1, 0], [1, 1], 2).tolist() == [[0, 1], [0, 1]]
    with pytest.raises(ValueError):
        confusion_matrix([0, 2], [0, 0], 2)
    with pytest.raises(ValueError):
        confusion_matrix([0, 1], [0], 2)
    norm = normalize_confusion(np.array([[1, 1], [0, 0]]))
    assert norm[0].tolist() == [0.5, 0.5] and np.isnan(norm[1]).all()


def test_ferplus8_model_on_fer2013_maps_by_name():
    mp = map_labels(FERPLUS8, FER2013)
    # neutral, happy, surprise, sad, angry, disgust, fear, contempt -> FER2013 indices
    assert mp.index.tolist() == [6, 3, 5, 4, 0, 1, 2, -1]
    assert mp.model_only == ("contempt",) and mp.data_only == ()
    assert "contempt" in mp.message and "count as errors" in mp.message
    probs = np.zeros((3, 8))
    probs[0, 1] = 1.0                                   # happy
    probs[1, 7], probs[1, 0] = 0.6, 0.4                 # contempt first, neutral second
    probs[2, 4] = 1.0                                   # angry
    assert mp.predict(probs).tolist() == [3, -1, 0]
    restrict = map_labels(FERPLUS8, FER2013, unmapped="restrict")
    assert restrict.predict(probs).tolist() == [3, 6, 0]
    assert "ignored" in restrict.message


def test_unmapped_prediction_counts_as_error():
    # FER2013 indices: neutral = 6, happy = 3
    y_true = [6, 6, 3]
    y_pred = [6, -1, 3]
    m = compute_metrics(y_true, y_pred, FER2013)
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["unmapped_predictions"] == 1
    assert m["unmapped_per_class"][6] == 1 and sum(m["unmapped_per_class"]) == 1
    assert m["per_class"]["neutral"]["recall"] == pytest.approx(0.5)
    assert m["per_class"]["neutral"]["precision"] == pytest.approx(1.0)    # the miss is nobody's prediction
    assert m["per_class"]["neutral"]["support"] == 2
    assert m["confusion_normalized"][6][6] == pytest.approx(0.5)           # row sum 0.5 + 0.5 unmapped
    assert sum(map(sum, m["confusion"])) == 2


def test_label_sets_in_another_order_and_missing_classes():
    mp = map_labels(FER2013, FERPLUS8)              # a 7-class model on 8-class data
    assert mp.data_only == ("contempt",) and mp.model_only == ()
    assert "cannot predict contempt" in mp.message
    assert map_labels(("happy", "sad"), ("sad", "happy")).index.tolist() == [1, 0]
    assert "order" in map_labels(("happy", "sad"), ("sad", "happy")).message
    assert map_labels(L3, L3).message == "" and map_labels(L3, L3).identity
    with pytest.raises(LabelMismatchError, match="share no expression"):
        map_labels(("happy",), ("sad",))
    with pytest.raises(LabelMismatchError):
        map_labels(("happy", "bored"), ("happy",))
    with pytest.raises(ValueError):
        map_labels(L3, L3, unmapped="ignore")


def test_mean_std_population():
    s = summarize([0.7, 0.8, 0.9])
    assert s["mean"] == pytest.approx(0.8)
    assert s["std"] == pytest.approx(math.sqrt(0.02 / 3))       # ddof=0: 0.08165
    assert format_mean_std([0.7, 0.8, 0.9]) == "80.00 ± 8.16"
    assert format_mean_std([]) == "—"


def test_stratified_kfold_partitions_and_balances():
    y = np.array([0] * 10 + [1] * 6 + [2] * 4)
    folds = stratified_kfold(y, 2, seed=1)
    check_folds(folds, len(y))
    for tr, te in folds:
        assert np.bincount(y[te], minlength=3).tolist() == [5, 3, 2]
    assert [te.tolist() for _, te in stratified_kfold(y, 2, seed=1)] == [te.tolist() for _, te in folds]
    assert [te.tolist() for _, te in stratified_kfold(y, 2, seed=2)] != [te.tolist() for _, te in folds]
    with pytest.raises(CVError):
        stratified_kfold(y, 1)


def test_subject_kfold_is_subject_disjoint():
    groups = np.repeat(np.arange(9), 3)
    folds = subject_kfold(groups, 3, seed=0)
    assert sorted(np.concatenate([te for _, te in folds]).tolist()) == list(range(27))
    for tr, te in folds:
        assert not set(groups[tr]) & set(groups[te])
    with pytest.raises(CVError, match="subjects"):
        subject_kfold(groups, 10)
    with pytest.raises(CVError, match="both train and test"):
        check_folds([(np.array([0, 2]), np.array([1, 3])), (np.array([1, 3]), np.array([0, 2]))], 4,
                    groups=[0, 0, 1, 1])


def test_make_folds_picks_subject_or_stratified():
    from litefer.data.base import FaceArrays
    n = 12
    arr = FaceArrays(np.zeros((n, 4, 4), np.uint8), np.arange(n) % 2, ("happy", "sad"),
                     [str(i) for i in range(n)], groups=np.arange(n) // 3)
    _, by_subject = make_folds(arr, 2)
    assert by_subject
    _, by_subject = make_folds(arr, 2, by_subject=False)
    assert not by_subject
    arr.groups = None
    assert make_folds(arr, 3)[1] is False
    with pytest.raises(CVError, match="no subject ids"):
        make_folds(arr, 2, by_subject=True)
