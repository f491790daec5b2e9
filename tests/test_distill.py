"""Knowledge distillation: a teacher's predictions.csv as training targets (data.teacher)."""
from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pytest
import torch

from litefer.data.base import DatasetError
from litefer.data.soft_targets import distill_targets, read_soft_targets, soften
from litefer.training import ConfigError, config_from_dict, prepare_data, synthetic_faces, train

from fixtures.models import TINY


@pytest.fixture(autouse=True, scope="module")
def _tiny_registered(tiny_arch):
    assert tiny_arch == TINY


LABELS = synthetic_faces(4, 4, size=8).labels      # neutral, happy, surprise, sad


def _cfg(**data):
    return config_from_dict({
        "data": {"dataset": "synthetic", "num_classes": 4, "val_split": "val", "test_split": "test",
                 "options": {"n_train": 192, "n_val": 64, "n_test": 64, "size": 24}, **data},
        "model": {"arch": TINY, "in_chans": 1, "input_size": 24},
        "optim": {"name": "adam", "lr": 3e-3},
        "sched": {"name": "cosine"},
        "train": {"epochs": 4, "batch_size": 32, "progress": False, "seed": 0, "autotune": False},
        "aug": {"hflip": 0.5},
    }, name="distill")


def _write(path, ids, probs, labels=LABELS, extra_cols=True):
    """A file in the layout ``litefer evaluate --out`` writes (predictions.csv)."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        head = ["id", "true", "predicted", "counted_as", "correct", "confidence"] if extra_cols else ["id"]
        w.writerow(head + [f"p_{c}" for c in labels])
        for id_, p in zip(ids, probs):
            pre = [id_, "x", "x", "x", 0, f"{max(p):.5f}"] if extra_cols else [id_]
            w.writerow(pre + [f"{v:.5f}" for v in p])
    return path


def _rand_probs(n, k=4, seed=0):
    p = np.random.default_rng(seed).dirichlet(np.ones(k), n)
    return np.round(p, 5)


# ------------------------------------------------------------------------------ the file
def test_reads_by_id_in_the_arrays_order_and_by_column_name(tmp_path):
    arr = synthetic_faces(20, 4, size=16)
    probs = _rand_probs(20)
    order = np.random.default_rng(1).permutation(20)            # rows shuffled, columns reordered
    cols = (LABELS[1], LABELS[3], LABELS[0], LABELS[2])
    perm = [LABELS.index(c) for c in cols]
    f = _write(tmp_path / "t.csv", [arr.ids[i] for i in order], probs[order][:, perm], labels=cols)
    ids, got = read_soft_targets(f, LABELS)
    assert ids == [arr.ids[i] for i in order]
    np.testing.assert_allclose(got, probs[order] / probs[order].sum(1, keepdims=True), atol=1e-6)
    out, info = distill_targets(arr, f)
    assert out.targets.shape == (20, 4) and out.targets.dtype == np.float32
    np.testing.assert_allclose(out.targets, probs / probs.sum(1, keepdims=True), atol=1e-6)
    assert out.ids == arr.ids and out.images is arr.images
    assert info["used"] == info["rows"] == 20 and info["unused"] == 0
    assert info["agreement"] == pytest.approx(float((probs.argmax(1) == arr.targets).mean()))


def test_mixing_with_the_own_label_and_temperature(tmp_path):
    arr = synthetic_faces(12, 4, size=16)
    probs = _rand_probs(12, seed=2)
    f = _write(tmp_path / "t.csv", arr.ids, probs, extra_cols=False)
    t = probs / probs.sum(1, keepdims=True)
    onehot = np.eye(4)[arr.targets]
    out, _ = distill_targets(arr, f, weight=0.3)
    np.testing.assert_allclose(out.targets, 0.3 * t + 0.7 * onehot, atol=1e-6)
    np.testing.assert_allclose(out.targets.sum(1), 1.0, atol=1e-6)
    out0, _ = distill_targets(arr, f, weight=0.0)             # weight 0: the own labels, as soft targets
    np.testing.assert_array_equal(out0.targets, onehot.astype(np.float32))
    # temperature is softmax(log p / T): T > 1 raises the entropy and keeps the order
    hot, _ = distill_targets(arr, f, temperature=3.0)
    ref = torch.softmax(torch.log(torch.from_numpy(t)) / 3.0, 1).numpy()
    np.testing.assert_allclose(hot.targets, ref, atol=1e-5)

    def entropy(p):
        return -(p * np.log(p)).sum(1)
    assert (entropy(hot.targets) > entropy(t) - 1e-9).all()
    assert (hot.targets.argmax(1) == t.argmax(1)).all()
    np.testing.assert_allclose(soften(t, 1.0), t, atol=1e-7)
    assert soften(t, 0.1).max(1).min() > t.max(1).min()          # T < 1 sharpens
    # a soft own target (e.g. FER+ votes) is mixed as it is
    votes = arr.__class__(arr.images, np.eye(4, dtype=np.float32)[arr.targets] * 0.5 + 0.125, arr.labels, arr.ids)
    mixed, _ = distill_targets(votes, f, weight=0.5)
    np.testing.assert_allclose(mixed.targets, 0.5 * t + 0.5 * votes.targets, atol=1e-6)


@pytest.mark.parametrize("mutate, needle", [
    (lambda rows: [["id"] + [f"p_{c}" for c in LABELS[:3]]] + [r[:4] for r in rows[1:]], "no column for class(es) p_sad"),
    (lambda rows: [rows[0] + ["p_contempt"]] + [r + ["0"] for r in rows[1:]], "p_contempt for class(es) the training labels lack"),
    (lambda rows: [["name"] + rows[0][1:]] + rows[1:], "no 'id' column"),
    (lambda rows: rows[:3] + [rows[1]] + rows[3:], "line 4, field 'id': id 'syn0_000000' again (first on line 2)"),
    (lambda rows: rows[:2] + [rows[2][:1] + ["abc"] + rows[2][2:]] + rows[3:], "line 3, field 'p_neutral': 'abc' is not a number"),
    (lambda rows: rows[:2] + [rows[2][:1] + ["-0.1"] + rows[2][2:]] + rows[3:], "line 3, field 'p_neutral': '-0.1' is not a probability"),
    (lambda rows: rows[:4] + [rows[4][:1] + ["0.9", "0.9", "0", "0"]] + rows[5:], "line 5: probabilities sum to 1.8000"),
    (lambda rows: rows[:2] + [rows[2][:3]] + rows[3:], "line 3: 3 fields, the header has 5"),
    (lambda rows: rows[:1], "no rows"),
    (lambda rows: [], "empty file"),
])
def test_malformed_files_name_the_line_and_column(tmp_path, mutate, needle):
    arr = synthetic_faces(6, 4, size=16)
    good = _write(tmp_path / "good.csv", arr.ids, _rand_probs(6), extra_cols=False)
    rows = list(csv.reader(open(good, newline="")))
    bad = tmp_path / "bad.csv"
    with open(bad, "w", newline="") as fh:
        csv.writer(fh).writerows(mutate(rows))
    with pytest.raises(DatasetError) as ei:
        read_soft_targets(bad, LABELS)
    assert needle in str(ei.value) and "bad.csv" in str(ei.value)


def test_encoding_a_byte_order_mark_and_the_hash_of_what_was_read(tmp_path):
    arr = synthetic_faces(6, 4, size=16)
    good = _write(tmp_path / "good.csv", arr.ids, _rand_probs(6), extra_cols=False)
    bom = tmp_path / "bom.csv"                                   # saved by a spreadsheet: UTF-8 with a BOM
    bom.write_bytes(b"\xef\xbb\xbf" + good.read_bytes())
    assert read_soft_targets(bom, LABELS)[0] == arr.ids
    _, info = distill_targets(arr, bom)
    assert info["sha256"] == hashlib.sha256(bom.read_bytes()).hexdigest()
    latin = tmp_path / "latin.csv"                               # not UTF-8: a clear error, not a traceback
    latin.write_bytes(good.read_bytes().replace(b"syn0_000002", b"syn\xe9_000002"))
    with pytest.raises(DatasetError, match=r"latin\.csv.*not UTF-8 text \(byte \d+\)"):
        read_soft_targets(latin, LABELS)


def test_every_training_image_needs_a_row(tmp_path):
    arr = synthetic_faces(10, 4, size=16)
    f = _write(tmp_path / "t.csv", arr.ids[:7], _rand_probs(7))
    with pytest.raises(DatasetError, match=r"3 of 10 .* have no row \(e\.g\. 'syn0_000007'"):
        distill_targets(arr, f)
    # rows for other images (more than the training split) are allowed and counted
    more = synthetic_faces(4, 4, size=16, seed=9)
    f2 = _write(tmp_path / "t2.csv", arr.ids + more.ids, _rand_probs(14))
    _, info = distill_targets(arr, f2)
    assert info["rows"] == 14 and info["used"] == 10 and info["unused"] == 4


# ------------------------------------------------------------------------------ the config
def test_config_checks(tmp_path):
    with pytest.raises(ConfigError, match="data.teacher_weight.*has no effect without data.teacher"):
        _cfg(teacher_weight=0.5)
    with pytest.raises(ConfigError, match="data.teacher_temperature"):
        _cfg(teacher="x.csv", teacher_temperature=0.0)
    with pytest.raises(ConfigError, match=r"data.teacher_weight.*outside \[0.0, 1.0\]"):
        _cfg(teacher="x.csv", teacher_weight=1.5)
    with pytest.raises(ConfigError, match=r"data.teacher.*teacher file .*nope.csv does not exist.*litefer evaluate"):
        prepare_data(_cfg(teacher=str(tmp_path / "nope.csv")))
    # a malformed file surfaces as a config error that still names the file and line
    (tmp_path / "bad.csv").write_text("id,p_neutral,p_happy,p_surprise,p_sad\nsyn1_000000,1,0,0,x\n")
    with pytest.raises(ConfigError, match=r"data.teacher.*bad.csv, line 2, field 'p_sad'"):
        prepare_data(_cfg(teacher=str(tmp_path / "bad.csv")))


def test_only_the_training_split_takes_the_teacher(tmp_path):
    plain = prepare_data(_cfg())
    probs = _rand_probs(len(plain.train), seed=4)
    f = _write(tmp_path / "t.csv", plain.train.ids, probs)
    d = prepare_data(_cfg(teacher=str(f), teacher_weight=0.75))
    np.testing.assert_allclose(d.train.targets, 0.75 * probs / probs.sum(1, keepdims=True)
                               + 0.25 * np.eye(4)[plain.train.targets], atol=1e-6)
    np.testing.assert_array_equal(d.val.targets, plain.val.targets)
    np.testing.assert_array_equal(d.test.targets, plain.test.targets)
    # each image keeps its own class: class counts, balancing and stratification follow it,
    # not the top class of the mixed targets (which a confident teacher decides)
    liar = _write(tmp_path / "liar.csv", plain.train.ids, np.eye(4)[(plain.train.targets + 1) % 4])
    d_liar = prepare_data(_cfg(teacher=str(liar), teacher_weight=0.9))
    assert (d_liar.train.targets.argmax(1) == (plain.train.targets + 1) % 4).all()
    np.testing.assert_array_equal(d_liar.train.hard_targets, plain.train.targets)
    assert d_liar.train.class_counts() == plain.train.class_counts()
    some = np.arange(0, len(plain.train), 3)
    np.testing.assert_array_equal(d_liar.train.subset(some).hard_targets, plain.train.targets[some])
    info = d.info["teacher"]
    import hashlib
    assert info["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest() and info["weight"] == 0.75


# ------------------------------------------------------------------------------ training
def test_the_student_learns_what_the_teacher_says(tmp_path):
    """A teacher that names class k+1 for every image of class k: trained on its targets
    alone, the student fits that mapping (it names class k+1 for validation faces of class k)
    and so scores below chance on the true validation labels, and its training accuracy,
    measured against the images' own labels, is as low; the run records the teacher. Without the teacher the same run learns the true labels."""
    plain = prepare_data(_cfg())
    shifted = (plain.train.targets + 1) % 4
    probs = np.full((len(shifted), 4), 0.01)
    probs[np.arange(len(shifted)), shifted] = 0.97
    f = _write(tmp_path / "liar.csv", plain.train.ids, probs)
    res = train(_cfg(teacher=str(f)), out_dir=tmp_path / "student", quiet=True)
    truth = train(_cfg(), out_dir=tmp_path / "truth", quiet=True)
    assert max(r["val_acc"] for r in truth.history) > 0.6
    assert res.history[-1]["val_acc"] < 0.2                          # chance is 0.25
    assert res.history[-1]["train_acc"] < 0.2                         # against the own labels, not the teacher's
    model = res.model.eval()
    from litefer.evaluation.predict import predict_proba
    pred = predict_proba(model, plain.val.images, res.model.preprocess
                         if hasattr(res.model, "preprocess") else
                         {"channels": 1, "size": 24, "mean": [0.5], "std": [0.5]}).argmax(1)
    assert (pred == (plain.val.targets + 1) % 4).mean() > 0.6
    summary = json.loads((res.out_dir / "result.json").read_text())
    assert summary["data"]["teacher"]["file"] == str(f)
    assert summary["data"]["teacher"]["agreement"] == 0.0


def test_cross_validation_folds_train_on_the_teacher(tmp_path):
    """``litefer cv`` builds each fold's training split itself: it too takes the teacher
    (and only on the training folds: the held-out fold is tested on its own labels)."""
    from litefer.evaluation.cv import cross_validate
    pool = synthetic_faces(96, 4, size=24, seed=1)
    probs = _rand_probs(96, seed=5)
    f = _write(tmp_path / "t.csv", pool.ids, probs)
    seen = []

    def spy(cfg, out_dir, data=None, **kw):
        seen.append(data)
        return train(cfg, out_dir, data=data, **kw)

    cfg = _cfg(val_split=None, test_split=None, teacher=str(f), teacher_weight=0.5)
    rep = cross_validate(cfg, 2, tmp_path / "cv", arrays=pool, seed=0, max_epochs=1, quiet=True, train_fn=spy)
    assert len(rep.folds) == 2 and len(seen) == 2
    t = probs / probs.sum(1, keepdims=True)
    index = {id_: i for i, id_ in enumerate(pool.ids)}
    for d in seen:
        rows = [index[i] for i in d.train.ids]
        np.testing.assert_allclose(d.train.targets, 0.5 * t[rows] + 0.5 * np.eye(4)[pool.targets[rows]], atol=1e-6)
        assert d.test.targets.ndim == 1 and d.val.targets.ndim == 1      # own hard labels
        assert d.info["teacher"]["weight"] == 0.5


# ------------------------------------------------------------------------------ real data
def test_the_bundled_fer2013_model_as_teacher_on_real_training_images(tmp_path):
    """The documented workflow on FER2013: ``litefer evaluate fer2013 --split train --out``
    writes predictions.csv; its ids are the training reader's ids, and the targets taken
    from it are the teacher's probabilities (here on 96 training faces)."""
    from conftest import require_dataset
    from litefer.data import load_dataset
    from litefer.evaluation import evaluate
    root = require_dataset("fer2013")
    full = load_dataset("fer2013", root=root, split="train")
    arr = full.subset(np.linspace(0, len(full) - 1, 96).astype(np.int64))
    res = evaluate("fer2013", arr, out_dir=tmp_path / "teacher")
    csv_path = tmp_path / "teacher" / "predictions.csv"
    out, info = distill_targets(arr, csv_path, weight=1.0)
    np.testing.assert_allclose(out.targets, res.probs / res.probs.sum(1, keepdims=True), atol=1e-4)
    assert info["agreement"] == pytest.approx(res.metrics["accuracy"])
    assert 0.5 < info["agreement"]          # it was trained on these faces: far above chance (1/7)
    mixed, _ = distill_targets(arr, csv_path, weight=0.8)
    assert (mixed.targets.argmax(1) == arr.targets).mean() >= info["agreement"]
