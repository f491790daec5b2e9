"""The readers on the real datasets (shared/data, see its README): exact published counts.

Skipped with a reason when the data is absent.  The first run decodes the images
(~20 s for FER2013 on 2 cores); later runs read the cache ($LITEFER_CACHE).
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import require_dataset
from litefer import labels as L

pytestmark = pytest.mark.realdata

FER2013_COUNTS = {  # angry disgust fear happy sad surprise neutral (README table)
    "train": [3995, 436, 4097, 7215, 4830, 3171, 4965],
    "publictest": [467, 56, 496, 895, 653, 415, 607],
    "privatetest": [491, 55, 528, 879, 594, 416, 626],
}
# neutral happiness surprise sadness anger disgust fear contempt (README "majority" table)
FERPLUS_LABEL_CSV = {
    "train": [8733, 7284, 3136, 3022, 2098, 116, 536, 120],
    "publictest": [1180, 862, 411, 348, 289, 25, 60, 16],
    "privatetest": [1083, 892, 394, 382, 269, 16, 86, 15],
}
FERPLUS_NEW_CSV = {
    "Training": [8740, 7287, 3149, 3014, 2100, 119, 532, 119],
    "PublicTest": [1182, 865, 415, 351, 287, 24, 62, 13],
    "PrivateTest": [1090, 893, 396, 384, 273, 18, 83, 16],
}
CKPLUS_COUNTS = {"angry": 135, "contempt": 54, "disgust": 177, "fear": 75, "happy": 207, "sad": 84, "surprise": 249}


@pytest.fixture(scope="module")
def fer2013():
    root = require_dataset("fer2013")
    from litefer.data import load_dataset
    return {s: load_dataset("fer2013", root=root, split=s) for s in FER2013_COUNTS}


def test_fer2013_split_counts(fer2013):
    for split, counts in FER2013_COUNTS.items():
        a = fer2013[split]
        assert a.labels == L.FER2013
        assert list(a.class_counts().values()) == counts, split
        assert a.images.shape == (sum(counts), 48, 48) and a.images.dtype == np.uint8
        prefix = {"train": "Training_", "publictest": "PublicTest_", "privatetest": "PrivateTest_"}[split]
        assert all(i.rsplit("/", 1)[1].startswith(prefix) for i in a.ids)
        # folder name and label agree for every image (mapping by name, not by sorted position)
        assert all(i.split("/")[1] == a.labels[t] for i, t in zip(a.ids, a.targets))
    all_ids = [i for a in fer2013.values() for i in a.ids]
    assert len(set(all_ids)) == 35887


def test_fer2013_test_is_public_plus_private_and_cache_hit(fer2013):
    from litefer.data import cache, load_dataset
    decoded = cache.STATS["decoded"]
    test = load_dataset("fer2013", root=require_dataset("fer2013"), split="test")
    assert cache.STATS["decoded"] == decoded  # served from the cache
    assert sorted(test.ids) == sorted(fer2013["publictest"].ids + fer2013["privatetest"].ids)
    assert list(test.class_counts().values()) == [a + b for a, b in zip(FER2013_COUNTS["publictest"],
                                                                         FER2013_COUNTS["privatetest"])]


def test_ferplus_majority_label_csv_counts():
    root = require_dataset("ferplus")
    from litefer.data import load_dataset
    for split, counts in FERPLUS_LABEL_CSV.items():
        a = load_dataset("ferplus", root=root, split=split, label_mode="majority", num_classes=8)
        assert a.labels == L.FERPLUS8 and list(a.class_counts().values()) == counts, split
        assert a.images.shape[1:] == (48, 48)
        n_rows = {"train": 28558, "publictest": 3579, "privatetest": 3573}[split]
        assert len(a) + a.skipped.total == n_rows
    assert len(load_dataset("ferplus", root=root, split="valid")) == 3191
    seven = load_dataset("ferplus", root=root, split="train", num_classes=7)
    assert seven.labels == L.FERPLUS7 and len(seven) == 25045 - 120
    prob = load_dataset("ferplus", root=root, split="test", label_mode="probability")
    assert prob.targets.shape == (len(prob), 8)
    np.testing.assert_allclose(prob.targets.sum(1), 1.0, rtol=1e-5)


def test_ferplus_majority_fer2013new_counts():
    """The README's fer2013new.csv table counts csv rows by Usage (repeated names twice)."""
    root = require_dataset("ferplus")
    from litefer.data import load_dataset
    from litefer.data.ferplus import apply_label_mode, read_fer2013new
    new = read_fer2013new(root / "fer2013new.csv")
    assert len(new["usage"]) == 35887
    usage = np.asarray(new["usage"])
    for u, counts in FERPLUS_NEW_CSV.items():
        idx = np.flatnonzero(usage == u)
        keep, t, labels, _ = apply_label_mode(new["votes"][idx], [str(i) for i in idx])
        assert np.bincount(t, minlength=8).tolist() == counts, u
    # joined to the PNGs by name: the three repeated training names count once (25,060 - 3)
    tr = load_dataset("ferplus", root=root, split="train", votes="fer2013new")
    assert len(tr) == 25057
    te = load_dataset("ferplus", root=root, split="privatetest", votes="fer2013new")
    assert len(te) == 3153 and any("repeats the name" in k for k in te.skipped.counts)


def test_ckplus48_counts_subjects_and_folds():
    root = require_dataset("ckplus/CK+48")
    from litefer.data import load_dataset
    from litefer.data.splits import subject_kfold
    a = load_dataset("ckplus", root=root)
    assert len(a) == 981 and a.class_counts() == CKPLUS_COUNTS and a.images.shape == (981, 48, 48)
    assert len(np.unique(a.groups)) == 118
    assert len({i.split("/")[1].rsplit("_", 1)[0] for i in a.ids}) == 327  # sequences
    folds = subject_kfold(a.groups, 10, seed=0)
    assert sorted(np.concatenate([te for _, te in folds]).tolist()) == list(range(981))
    for tr, te in folds:
        assert not set(a.groups[tr]) & set(a.groups[te])
        assert 80 <= len(te) <= 115


def test_fer2013_audit_exact_duplicates(fer2013):
    """README: 1,516 groups of byte-identical JPEGs cover 3,369 files; 531 of those images occur in
    both train/ and test/.  The pixel hash finds exactly these."""
    from litefer.data.audit import audit
    rep = audit(fer2013, near=False)
    s = rep.summary
    assert s["exact_duplicate_groups"] == 1516 and s["images_in_exact_groups"] == 3369
    assert s["exact_groups_shared_between_splits"]["train & others"] == 531
    assert s["near_constant_images"] >= 12
    ex = rep.exclude_ids()
    rank = {"privatetest": 0, "publictest": 1, "train": 2}
    for g in rep.exact_groups:  # one copy kept per group, in the most protected split
        kept = [m for m in g if m["id"] not in ex]
        if all(m["id"] in {x["id"] for x in rep.flagged["Near-constant images (excluded)"]} for m in g):
            continue  # blank images are all excluded
        assert len(kept) == 1 and rank[kept[0]["split"]] == min(rank[m["split"]] for m in g)
    # excluding the list leaves no training image whose pixels occur in a test split
    from litefer.data.audit import pixel_hash
    train = fer2013["train"].exclude(ex)
    test_hashes = {pixel_hash(x) for s in ("publictest", "privatetest") for x in fer2013[s].images}
    assert not any(pixel_hash(x) in test_hashes for x in train.images)
