"""Every dataset reader on tiny fixtures written in its official layout (tests/fixtures/layouts.py),
including malformed inputs: each error must name the file, the line and the field."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from fixtures import layouts as F
from litefer import labels as L
from litefer.data import cache as C
from litefer.data import list_datasets, load_dataset
from litefer.data.base import DatasetError


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv(C.CACHE_ENV, str(tmp_path_factory.mktemp("cache")))


def _err(excinfo, path_end: str, line=None, field=None):
    e = excinfo.value
    assert str(e.path).replace(os.sep, "/").endswith(path_end), e.path
    assert path_end.split("/")[-1] in str(e)
    if line is not None:
        assert e.line == line and f"line {line}" in str(e)
    if field is not None:
        assert e.field == field and repr(field) in str(e)


# ------------------------------------------------------------------------------ registry
def test_registry_names_and_errors(tmp_path):
    assert {"fer2013", "ferplus", "rafdb", "affectnet", "ckplus", "folder"} <= set(list_datasets())
    with pytest.raises(KeyError, match="unknown dataset"):
        load_dataset("mnist", root=tmp_path)
    F.fer2013_csv(tmp_path / "fer2013.csv", F.fer2013_rows(np.random.default_rng(0)))
    with pytest.raises(TypeError, match="label_mode"):
        load_dataset("fer2013", root=tmp_path, split="train", label_mode="probability")
    with pytest.raises(DatasetError, match="not found"):
        load_dataset("fer2013", root=tmp_path / "missing")
    with pytest.raises(DatasetError, match="unknown split"):
        load_dataset("fer2013", root=tmp_path, split="dev")


# ------------------------------------------------------------------------------ FER2013 csv
def test_fer2013_csv_splits_and_pixels(tmp_path, rng):
    rows = F.fer2013_rows(rng, 7, 3, 2)
    F.fer2013_csv(tmp_path / "fer2013.csv", rows)
    tr = load_dataset("fer2013", root=tmp_path, split="train")
    assert len(tr) == 7 and tr.labels == L.FER2013 and tr.images.dtype == np.uint8 and tr.images.shape[1:] == (48, 48)
    assert tr.targets.tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert np.array_equal(tr.images[3], rows[3][1]) and tr.ids[0] == "row0"
    pub = load_dataset("fer2013", root=tmp_path / "fer2013.csv", split="valid")  # root may be the csv
    priv = load_dataset("fer2013", root=tmp_path, split="privatetest")
    both = load_dataset("fer2013", root=tmp_path, split="test")
    assert (len(pub), len(priv), len(both)) == (3, 2, 5)
    assert pub.ids == ["row7", "row8", "row9"] and both.ids == pub.ids + priv.ids
    assert np.array_equal(priv.images[1], rows[11][1])


@pytest.mark.parametrize("bad, field, msg", [
    (lambda r: (r[0], r[1].ravel()[:100], r[2]), "pixels", "100 values"),
    (lambda r: (9, r[1], r[2]), "emotion", "outside 0..6"),
    (lambda r: (r[0], r[1], "Validation"), "Usage", "unknown Usage"),
])
def test_fer2013_csv_malformed_rows(tmp_path, rng, bad, field, msg):
    rows = F.fer2013_rows(rng, 3, 1, 1)
    rows[2] = bad(rows[2])  # data row 3 -> file line 4
    F.fer2013_csv(tmp_path / "fer2013.csv", rows)
    with pytest.raises(DatasetError, match=msg) as ei:
        load_dataset("fer2013", root=tmp_path, split="train")
    _err(ei, "fer2013.csv", line=4, field=field)


def test_fer2013_csv_non_integer_pixel_and_header(tmp_path, rng):
    p = F.fer2013_csv(tmp_path / "fer2013.csv", F.fer2013_rows(rng, 2, 1, 1))
    lines = p.read_text().splitlines()
    first, pixels, usage = lines[2].split(",")
    lines[2] = ",".join([first, pixels.replace(" ", " 1a ", 1), usage])
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match="not an integer") as ei:
        load_dataset("fer2013", root=tmp_path, split="train", cache=False)
    _err(ei, "fer2013.csv", line=3, field="pixels")
    p.write_text("label,pixels,Usage\n0,1 2,Training\n")
    with pytest.raises(DatasetError) as ei:
        load_dataset("fer2013", root=tmp_path, split="train", cache=False)
    _err(ei, "fer2013.csv", line=1, field="emotion")


# ------------------------------------------------------------------------------ FER2013 folders
def test_fer2013_folder_maps_by_name_not_sorted_order(tmp_path, rng):
    per = {"happy": (2, 1, 0), "neutral": (1, 0, 1), "angry": (1, 1, 1), "surprise": (0, 0, 2)}
    written = F.fer2013_folder(tmp_path, rng, per)
    tr = load_dataset("fer2013", root=tmp_path, split="train")
    assert len(tr) == 4
    names = {i: tr.labels[t] for i, t in zip(tr.ids, tr.targets)}
    assert all(names[i] == written[i][1] for i in tr.ids)
    # alphabetical position of 'neutral' among the folders would be 2; its FER2013 index is 6
    assert set(tr.targets.tolist()) == {L.FER2013.index("happy"), L.FER2013.index("neutral"), L.FER2013.index("angry")}
    for i, img in zip(tr.ids, tr.images):
        assert np.array_equal(img, written[i][0])
    pub = load_dataset("fer2013", root=tmp_path, split="publictest")
    priv = load_dataset("fer2013", root=tmp_path, split="privatetest")
    test = load_dataset("fer2013", root=tmp_path, split="test")
    assert all(os.path.basename(i).startswith("PublicTest_") for i in pub.ids) and len(pub) == 2
    assert all(os.path.basename(i).startswith("PrivateTest_") for i in priv.ids) and len(priv) == 4
    assert sorted(test.ids) == sorted(pub.ids + priv.ids)
    assert pub.class_counts() == {**{c: 0 for c in L.FER2013}, "happy": 1, "angry": 1}


def test_fer2013_folder_errors(tmp_path, rng):
    F.fer2013_folder(tmp_path, rng, {"happy": (1, 1, 1)})
    bad = F.save(tmp_path / "train" / "bored" / "Training_1.png", F.face(rng))
    with pytest.raises(DatasetError, match="unknown class folder") as ei:
        load_dataset("fer2013", root=tmp_path, split="train")
    _err(ei, "train/bored", field="class folder")
    bad.unlink()
    bad.parent.rmdir()
    F.save(tmp_path / "train" / "happy" / "PublicTest_5.png", F.face(rng))
    with pytest.raises(DatasetError, match="PublicTest image in train") as ei:
        load_dataset("fer2013", root=tmp_path, split="train")
    _err(ei, "train/happy/PublicTest_5.png", field="file name")
    (tmp_path / "train" / "happy" / "PublicTest_5.png").unlink()
    (tmp_path / "test" / "happy" / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match="not an image file") as ei:
        load_dataset("fer2013", root=tmp_path, split="test")
    _err(ei, "test/happy/notes.txt")
    (tmp_path / "test" / "happy" / "notes.txt").unlink()
    (tmp_path / "test" / "happy" / "PrivateTest_77.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="cannot decode") as ei:
        load_dataset("fer2013", root=tmp_path, split="test")
    _err(ei, "test/happy/PrivateTest_77.png", field="image")


# ------------------------------------------------------------------------------ cache
def test_cache_second_load_does_not_decode(tmp_path, rng):
    F.fer2013_folder(tmp_path / "fer", rng, {c: (30, 2, 2) for c in F.FER_CLASSES})
    d0 = C.STATS["decoded"]
    a = load_dataset("fer2013", root=tmp_path / "fer", split="train")
    assert C.STATS["decoded"] - d0 == 210 and len(C.cache_entries()) == 1
    hits = C.STATS["hits"]
    real_decode = C._decode_one

    def no_decoding(*args, **kw):
        raise AssertionError("a cache hit must not decode images")
    C._decode_one = no_decoding
    try:
        b = load_dataset("fer2013", root=tmp_path / "fer", split="train")
    finally:
        C._decode_one = real_decode
    assert C.STATS["decoded"] - d0 == 210 and C.STATS["hits"] == hits + 1
    assert np.array_equal(a.images, b.images) and a.ids == b.ids and np.array_equal(a.targets, b.targets)
    # a changed source file (new size/mtime) invalidates the entry
    f = tmp_path / "fer" / a.ids[5]
    new = F.face(rng)
    F.save(f, new)
    os.utime(f, ns=(time.time_ns(), time.time_ns() + 10**9))
    c = load_dataset("fer2013", root=tmp_path / "fer", split="train")
    assert C.STATS["decoded"] - d0 == 420 and np.array_equal(c.images[5], new)
    # cache=False neither reads nor writes
    n_entries = len(C.cache_entries())
    load_dataset("fer2013", root=tmp_path / "fer", split="train", cache=False)
    assert C.STATS["decoded"] - d0 == 630 and len(C.cache_entries()) == n_entries


def test_cache_dir_env(tmp_path, monkeypatch):
    monkeypatch.setenv(C.CACHE_ENV, str(tmp_path / "elsewhere"))
    assert C.cache_dir() == tmp_path / "elsewhere"
    out = C.load_or_build("unit", {"a": 1}, lambda: {"x": np.arange(3)})
    assert out["x"].tolist() == [0, 1, 2] and len(C.cache_entries()) == 1
    again = C.load_or_build("unit", {"a": 1}, lambda: pytest.fail("rebuilt a cached entry"))
    assert again["x"].tolist() == [0, 1, 2]
    assert C.clear_cache()[0] == 1 and C.cache_entries() == []


# ------------------------------------------------------------------------------ FER+
# votes: neutral happiness surprise sadness anger disgust fear contempt unknown NF
TRAIN_VOTES = [
    ("fer0000000.png", [4, 0, 0, 1, 3, 2, 0, 0, 0, 0]),  # single votes dropped: 4 of 9 -> no majority
    ("fer0000001.png", [6, 0, 1, 1, 0, 0, 0, 0, 2, 0]),  # 6 of 8 -> neutral
    ("fer0000003.png", [0, 10, 0, 0, 0, 0, 0, 0, 0, 0]),  # happy (name skips 2: names are not rows)
    ("fer0000004.png", [0, 0, 0, 0, 0, 0, 0, 0, 7, 3]),  # unknown
    ("fer0000005.png", [0, 0, 0, 0, 0, 0, 0, 0, 0, 10]),  # NF
    ("fer0000006.png", [2, 0, 0, 0, 0, 0, 0, 8, 0, 0]),  # contempt
    ("fer0000007.png", [5, 5, 0, 0, 0, 0, 0, 0, 0, 0]),  # tie 5/5: not > half
    ("fer0000008.png", [3, 1, 1, 1, 1, 1, 1, 1, 0, 0]),  # singles dropped -> 3 of 3 -> neutral
]
VALID_VOTES = [("fer0000010.png", [0, 0, 9, 0, 0, 0, 1, 0, 0, 0]), ("fer0000011.png", [0, 0, 0, 0, 0, 0, 10, 0, 0, 0])]
TEST_VOTES = [("fer0000012.png", [0, 0, 0, 8, 2, 0, 0, 0, 0, 0])]


def _ferplus(tmp_path, rng):
    return F.ferplus_layout(tmp_path, rng, {"FER2013Train": TRAIN_VOTES, "FER2013Valid": VALID_VOTES,
                                            "FER2013Test": TEST_VOTES})


def test_ferplus_majority_rule(tmp_path, rng):
    px = _ferplus(tmp_path, rng)
    tr = load_dataset("ferplus", root=tmp_path, split="train", label_mode="majority", num_classes=8)
    assert tr.labels == L.FERPLUS8
    assert tr.ids == ["FER2013Train/fer0000001.png", "FER2013Train/fer0000003.png", "FER2013Train/fer0000006.png",
                      "FER2013Train/fer0000008.png"]
    assert [tr.labels[t] for t in tr.targets] == ["neutral", "happy", "contempt", "neutral"]
    assert np.array_equal(tr.images[1], px["FER2013Train/fer0000003.png"])
    sk = tr.skipped.counts
    assert sk["majority unknown"] == 1 and sk["majority NF (not a face)"] == 1 and sum(sk.values()) == 4
    assert any(k.startswith("no majority") and v == 2 for k, v in sk.items())
    assert len(tr) + tr.skipped.total == len(TRAIN_VOTES)
    seven = load_dataset("ferplus", root=tmp_path, split="train", num_classes=7)
    assert seven.labels == L.FERPLUS7 and len(seven) == 3 and seven.skipped.counts["majority contempt (7 classes)"] == 1
    val = load_dataset("ferplus", root=tmp_path, split="valid")
    assert val.split == "publictest" and [val.labels[t] for t in val.targets] == ["surprise", "fear"]
    test = load_dataset("ferplus", root=tmp_path, split="test")  # FER2013Test = PrivateTest
    assert test.split == "privatetest" and test.labels[test.targets[0]] == "sad"
    assert load_dataset("ferplus", root=tmp_path / "data", split="privatetest").ids == test.ids


def test_ferplus_probability_mode(tmp_path, rng):
    _ferplus(tmp_path, rng)
    tr = load_dataset("ferplus", root=tmp_path, split="train", label_mode="probability", num_classes=8)
    assert tr.targets.dtype == np.float32 and tr.targets.shape[1] == 8
    np.testing.assert_allclose(tr.targets.sum(1), 1.0, rtol=1e-6)
    row = tr.ids.index("FER2013Train/fer0000000.png")
    np.testing.assert_allclose(tr.targets[row], np.array([4, 0, 0, 1, 3, 2, 0, 0]) / 10, rtol=1e-6)
    assert "FER2013Train/fer0000004.png" not in tr.ids and tr.skipped.counts["top vote unknown"] == 1
    seven = load_dataset("ferplus", root=tmp_path, split="train", label_mode="probability", num_classes=7)
    r6 = seven.ids.index("FER2013Train/fer0000006.png")
    np.testing.assert_allclose(seven.targets[r6], [1, 0, 0, 0, 0, 0, 0], rtol=1e-6)


def test_train_label_mode_soft_train_split_majority_val_and_test(tmp_path, rng):
    """``data.train_label_mode``: vote distributions for training, official majority labels
    (and the majority rule's exclusions) for selection and the reported test."""
    from litefer.training.config import ConfigError, config_from_dict
    from litefer.training.data import prepare_data
    clear = [(f"fer00001{k:02d}.png", [10 if j == k else 0 for j in range(10)]) for k in range(8)]
    F.ferplus_layout(tmp_path, rng, {"FER2013Train": clear + [("fer0000199.png", [5, 5] + [0] * 8)],
                                     "FER2013Valid": VALID_VOTES + [("fer0000013.png", [4, 4, 2] + [0] * 7)],
                                     "FER2013Test": TEST_VOTES})
    d = {"dataset": "ferplus", "root": str(tmp_path), "train_split": "train", "val_split": "publictest",
         "test_split": "privatetest", "label_mode": "majority", "num_classes": 8}
    cfg = config_from_dict({"data": dict(d, train_label_mode="probability")})
    s = prepare_data(cfg)
    assert s.train.targets.dtype == np.float32 and s.train.targets.shape[1] == 8
    assert "FER2013Train/fer0000199.png" in s.train.ids      # no majority: kept as a distribution
    assert "FER2013Valid/fer0000013.png" not in s.val.ids    # ... but not in validation
    assert s.val.targets.dtype == np.int64 and s.test.targets.dtype == np.int64
    majority = prepare_data(config_from_dict({"data": d}))
    assert s.val.ids == majority.val.ids and np.array_equal(s.val.targets, majority.val.targets)
    assert s.test.ids == majority.test.ids and np.array_equal(s.test.targets, majority.test.targets)
    assert len(s.train) > len(majority.train)
    held_out = dict(d, train_label_mode="probability", val_split=None)
    with pytest.raises(ConfigError, match="train_label_mode"):
        prepare_data(config_from_dict({"data": held_out}))


def test_ferplus_fer2013new_votes_joined_by_name(tmp_path, rng):
    _ferplus(tmp_path, rng)
    rows = [("Training", "", [0] * 9 + [10])]  # a row without image name shifts the rows
    for name, v in reversed(TRAIN_VOTES):  # other order than label.csv: the join is by name
        rows.append(("Training", name, v))
    rows[1] = ("Training", "fer0000008.png", [0, 0, 9, 0, 0, 0, 0, 0, 1, 0])  # newer votes: surprise
    rows += [("PublicTest", n, v) for n, v in VALID_VOTES] + [("PrivateTest", n, v) for n, v in TEST_VOTES]
    rows.append(("PrivateTest", "fer0000012.png", [10, 0, 0, 0, 0, 0, 0, 0, 0, 0]))  # repeated name, other votes
    F.fer2013new_csv(tmp_path / "fer2013new.csv", rows)
    old = load_dataset("ferplus", root=tmp_path, split="train")
    new = load_dataset("ferplus", root=tmp_path, split="train", votes="fer2013new")
    i_old, i_new = old.ids.index("FER2013Train/fer0000008.png"), new.ids.index("FER2013Train/fer0000008.png")
    assert old.labels[old.targets[i_old]] == "neutral" and new.labels[new.targets[i_new]] == "surprise"
    t = load_dataset("ferplus", root=tmp_path, split="test", votes="fer2013new")
    assert t.labels[t.targets[0]] == "sad"  # first row of a repeated name, recorded in skipped
    assert any("repeats the name" in k for k in t.skipped.counts)


def test_ferplus_layout_errors(tmp_path, rng):
    _ferplus(tmp_path, rng)
    lab = tmp_path / "data" / "FER2013Train" / "label.csv"
    (tmp_path / "data" / "FER2013Train" / "fer0000003.png").unlink()
    with pytest.raises(DatasetError, match="not found") as ei:
        load_dataset("ferplus", root=tmp_path, split="train")
    _err(ei, "FER2013Train/label.csv", line=3, field="image name")
    F.save(tmp_path / "data" / "FER2013Train" / "fer0000003.png", F.face(rng))
    F.save(tmp_path / "data" / "FER2013Train" / "fer0000099.png", F.face(rng))
    with pytest.raises(DatasetError, match="not listed in label.csv") as ei:
        load_dataset("ferplus", root=tmp_path, split="train")
    _err(ei, "fer0000099.png")
    (tmp_path / "data" / "FER2013Train" / "fer0000099.png").unlink()
    lines = lab.read_text().splitlines()
    lines[4] = lines[4].rsplit(",", 7)[0] + ",x," + ",".join(lines[4].rsplit(",", 7)[1:][1:])  # sadness column
    lab.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match="not an integer") as ei:
        load_dataset("ferplus", root=tmp_path, split="train")
    _err(ei, "FER2013Train/label.csv", line=5, field="sadness")
    with pytest.raises(ValueError, match="label_mode"):
        load_dataset("ferplus", root=tmp_path, split="valid", label_mode="plurality")
    with pytest.raises(ValueError, match="num_classes"):
        load_dataset("ferplus", root=tmp_path, split="valid", num_classes=10)


def test_ferplus_csv_source_joined_by_row_order(tmp_path, rng):
    rows = F.fer2013_rows(rng, 3, 1, 1)
    F.fer2013_csv(tmp_path / "fer2013.csv", rows)
    votes = [("Training", "fer0000000.png", [0, 10] + [0] * 8), ("Training", "", [0] * 9 + [10]),
             ("Training", "fer0000001.png", [0, 0, 0, 0, 9, 0, 0, 0, 1, 0]),
             ("PublicTest", "fer0000002.png", [10] + [0] * 9), ("PrivateTest", "fer0000003.png", [0, 0, 8, 2] + [0] * 6)]
    F.fer2013new_csv(tmp_path / "fer2013new.csv", votes)
    tr = load_dataset("ferplus", root=tmp_path, split="train")
    assert tr.ids == ["fer0000000.png", "fer0000001.png"] and [tr.labels[t] for t in tr.targets] == ["happy", "angry"]
    assert np.array_equal(tr.images[1], rows[2][1]) and tr.skipped.counts == {"majority NF (not a face)": 1}
    with pytest.raises(ValueError, match="label_csv"):
        load_dataset("ferplus", root=tmp_path, split="train", votes="label_csv")
    votes[3] = ("PrivateTest", *votes[3][1:])
    F.fer2013new_csv(tmp_path / "fer2013new.csv", votes)
    with pytest.raises(DatasetError, match="joined by row order") as ei:
        load_dataset("ferplus", root=tmp_path, split="train")
    _err(ei, "fer2013new.csv", line=5, field="Usage")


# ------------------------------------------------------------------------------ RAF-DB
def test_rafdb(tmp_path, rng):
    rows = [("train_00001.jpg", 1), ("train_00002.jpg", 4), ("train_00003.jpg", 7), ("test_0001.jpg", 6)]
    px = F.rafdb(tmp_path, rng, rows)
    tr = load_dataset("rafdb", root=tmp_path, split="train")
    assert tr.labels == L.RAFDB and tr.ids == ["train_00001.jpg", "train_00002.jpg", "train_00003.jpg"]
    assert [tr.labels[t] for t in tr.targets] == ["surprise", "happy", "neutral"]
    assert tr.images.shape == (3, 12, 12, 3) and np.array_equal(tr.images[0], px["train_00001.jpg"])
    te = load_dataset("rafdb", root=tmp_path, split="test", size=20, color="L")
    assert te.images.shape == (1, 20, 20) and te.labels[te.targets[0]] == "angry"
    lab = tmp_path / "EmoLabel" / "list_patition_label.txt"
    lab.write_text(lab.read_text() + "train_00009.jpg 3\n")
    with pytest.raises(DatasetError, match="not found") as ei:
        load_dataset("rafdb", root=tmp_path, split="train")
    _err(ei, "list_patition_label.txt", line=5, field="image name")
    lab.write_text("train_00001.jpg 8\n")
    with pytest.raises(DatasetError, match="outside 1..7") as ei:
        load_dataset("rafdb", root=tmp_path, split="train")
    _err(ei, "list_patition_label.txt", line=1, field="label")


# ------------------------------------------------------------------------------ AffectNet
def test_affectnet_csv(tmp_path, rng):
    rows = [("1/a.png", (2, 3, 20, 16), 0), ("1/b.png", (0, 0, 40, 30), 7), ("2/c.png", (5, 5, 10, 10), 8),
            ("2/d.png", (1, 1, 30, 20), 10), ("3/e.png", (-4, -4, 100, 100), 6)]
    px = F.affectnet_csv(tmp_path, rng, "training.csv", rows)
    F.affectnet_csv(tmp_path, rng, "validation.csv", [("9/v.png", (0, 0, 8, 8), 1)], header=False)
    a8 = load_dataset("affectnet", root=tmp_path, split="train", num_classes=8, size=16)
    assert a8.labels == L.AFFECTNET8 and a8.ids == ["1/a.png", "1/b.png", "3/e.png"]
    assert [a8.labels[t] for t in a8.targets] == ["neutral", "contempt", "angry"]
    assert a8.images.shape == (3, 16, 16, 3)
    assert a8.skipped.counts == {"expression 8 (none)": 1, "expression 10 (non-face)": 1}
    a7 = load_dataset("affectnet", root=tmp_path, split="train", num_classes=7, size=16)
    assert a7.labels == L.AFFECTNET7 and len(a7) == 2 and a7.skipped.counts["expression 7 (contempt, 7 classes)"] == 1
    # the crop uses the face box: an uncropped, unresized load of a box equal to the image is the image
    full = load_dataset("affectnet", root=tmp_path, split="train", size=None, crop=False, num_classes=8)
    assert np.array_equal(full.images[1], px["1/b.png"])
    crop = load_dataset("affectnet", root=tmp_path, split="train", size=(20, 16), num_classes=8)
    assert np.array_equal(crop.images[0], px["1/a.png"][3:19, 2:22])
    val = load_dataset("affectnet", root=tmp_path, split="val", size=8)
    assert val.ids == ["9/v.png"] and val.labels[val.targets[0]] == "happy"  # headerless file read too


def test_affectnet_errors_and_folders(tmp_path, rng):
    F.affectnet_csv(tmp_path, rng, "training.csv", [("1/a.png", (0, 0, 10, 10), 0), ("1/b.png", (0, 0, 10, 10), 11)])
    with pytest.raises(DatasetError, match="outside 0..10") as ei:
        load_dataset("affectnet", root=tmp_path, split="train")
    _err(ei, "training.csv", line=3, field="expression")
    F.affectnet_csv(tmp_path, rng, "training.csv", [("1/a.png", (0, 0, 10, 10), 0), ("1/b.png", (0, 0, 10, 10), 1)])
    os.remove(tmp_path / "Manually_Annotated_Images" / "1" / "b.png")
    with pytest.raises(DatasetError, match="image not found") as ei:
        load_dataset("affectnet", root=tmp_path, split="train")
    _err(ei, "training.csv", line=3, field="subDirectory_filePath")
    fold = tmp_path / "folders"
    for cls, n in (("0", 2), ("7", 1), ("9", 3), ("happy", 1)):
        for i in range(n):
            F.save(fold / "train" / cls / f"{cls}_{i}.png", F.face(rng, (30, 30), rgb=True))
    tr = load_dataset("affectnet", root=fold, split="train", num_classes=7, size=24)
    assert tr.class_counts()["neutral"] == 2 and tr.class_counts()["happy"] == 1 and len(tr) == 3
    assert tr.skipped.counts == {"expression 7 (contempt, 7 classes)": 1, "expression 9 (uncertain)": 3}
    F.save(fold / "train" / "12" / "x.png", F.face(rng, (30, 30), rgb=True))
    with pytest.raises(DatasetError, match="unknown class folder") as ei:
        load_dataset("affectnet", root=fold, split="train")
    _err(ei, "train/12", field="class folder")


# ------------------------------------------------------------------------------ CK+
def test_ckplus_folders_groups_and_folds(tmp_path, rng):
    from litefer.data.splits import subject_kfold
    items = []
    for s, subj in enumerate(["S005", "S010", "S011", "S022", "S037"]):
        for cls in ("anger", "happy", "contempt")[: 1 + s % 3]:
            for f in range(3):
                items.append((cls, f"{subj}_00{1 + s}_{10 + f:08d}.png"))
    px = F.ckplus_folders(tmp_path, rng, items)
    a = load_dataset("ckplus", root=tmp_path)
    assert a.labels == ("angry", "contempt", "happy") and len(a) == len(items)
    assert set(a.groups) == {"S005", "S010", "S011", "S022", "S037"}
    assert np.array_equal(a.images[0], px[a.ids[0]])
    assert load_dataset("ckplus", root=tmp_path, split="train").ids == a.ids
    six = load_dataset("ckplus", root=tmp_path, num_classes=2)
    assert six.labels == ("angry", "happy") and six.skipped.counts == {"contempt dropped": 3}
    folds = subject_kfold(a.groups, 3, seed=1)
    assert sorted(np.concatenate([te for _, te in folds]).tolist()) == list(range(len(a)))
    for tr, te in folds:
        assert not set(a.groups[tr]) & set(a.groups[te])
    F.save(tmp_path / "happy" / "frame1.png", F.face(rng))
    with pytest.raises(DatasetError, match="not a CK\\+ name") as ei:
        load_dataset("ckplus", root=tmp_path)
    _err(ei, "happy/frame1.png", field="file name")
    with pytest.raises(DatasetError, match="no official split"):
        load_dataset("ckplus", root=tmp_path, split="test")


def test_ckplus_sequences(tmp_path, rng):
    seqs = {("S005", "001"): (6, 3.0), ("S005", "002"): (4, None), ("S010", "001"): (5, 5.0), ("S011", "003"): (2, 2.0)}
    px = F.ckplus_sequences(tmp_path, rng, seqs)
    a = load_dataset("ckplus", root=tmp_path, peak_frames=3)
    assert a.labels == ("contempt", "disgust", "happy")  # CK+ code order, classes present
    assert len(a) == 3 + 3 + 2 and a.skipped.counts == {"sequence without emotion label": 1}
    assert a.ids[:3] == [f"cohn-kanade-images/S005/001/S005_001_{f:08d}.png" for f in (4, 5, 6)]
    assert np.array_equal(a.images[0], px[a.ids[0]]) and a.images.shape[1:] == (20, 16)
    b = load_dataset("ckplus", root=tmp_path, peak_frames=1, neutral_first=True, size=8)
    assert b.labels[0] == "neutral" and b.images.shape[1:] == (8, 8)
    assert [b.labels[t] for t in b.targets] == ["neutral", "disgust", "neutral", "happy", "neutral", "contempt"]
    assert list(b.groups) == ["S005", "S005", "S010", "S010", "S011", "S011"]
    emo = tmp_path / "Emotion" / "S010" / "001" / "S010_001_00000005_emotion.txt"
    emo.write_text("   9.0000000e+00\n")
    with pytest.raises(DatasetError, match="outside 1..7") as ei:
        load_dataset("ckplus", root=tmp_path)
    _err(ei, "S010_001_00000005_emotion.txt", line=1, field="emotion")


# ------------------------------------------------------------------------------ any class folders
def test_folder_reader(tmp_path, rng):
    for cls, n in (("Happiness", 2), ("sadness", 1), ("Surprised", 1)):
        for i in range(n):
            F.save(tmp_path / "train" / cls / f"{i}.png", F.face(rng, (10, 14)))
    F.save(tmp_path / "val" / "sadness" / "0.png", F.face(rng, (10, 14)))
    a = load_dataset("folder", root=tmp_path, split="train")
    assert a.labels == ("happy", "surprise", "sad") and a.class_counts() == {"happy": 2, "surprise": 1, "sad": 1}
    assert a.ids[0] == "train/Happiness/0.png" and a.images.shape == (4, 10, 14)
    b = load_dataset("folder", root=tmp_path, split="val", labels="fer2013")
    assert b.labels == L.FER2013 and b.targets.tolist() == [L.FER2013.index("sad")]
    rgb = load_dataset("folder", root=tmp_path / "train", split=None, size=6, color="RGB")
    assert rgb.images.shape == (4, 6, 6, 3)
    F.save(tmp_path / "train" / "Boredom" / "0.png", F.face(rng, (10, 14)))
    with pytest.raises(DatasetError, match="unknown class folder") as ei:
        load_dataset("folder", root=tmp_path, split="train")
    _err(ei, "train/Boredom", field="class folder")
    F.save(tmp_path / "val" / "happy" / "big.png", F.face(rng, (20, 20)))
    with pytest.raises(DatasetError, match="pass size=") as ei:
        load_dataset("folder", root=tmp_path, split="val")
    _err(ei, "val/sadness/0.png", field="image size")


# ------------------------------------------------------------------------------ splits
def test_subject_kfold_and_holdout():
    from litefer.data.splits import stratified_holdout, subject_kfold
    rng = np.random.default_rng(0)
    groups = np.repeat([f"S{i:03d}" for i in range(23)], rng.integers(1, 9, 23))
    folds = subject_kfold(groups, 5, seed=3)
    assert len(folds) == 5
    seen = np.concatenate([te for _, te in folds])
    assert sorted(seen.tolist()) == list(range(len(groups)))
    for tr, te in folds:
        assert not set(groups[tr]) & set(groups[te]) and len(tr) + len(te) == len(groups)
    sizes = [len(te) for _, te in folds]
    assert max(sizes) - min(sizes) <= 8
    again = subject_kfold(groups, 5, seed=3)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))
    other = subject_kfold(groups, 5, seed=4)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(folds, other))
    with pytest.raises(ValueError, match="subjects"):
        subject_kfold(groups[:3], 5)

    y = np.repeat(np.arange(4), [50, 20, 3, 1])
    tr, va = stratified_holdout(y, 0.1, seed=0)
    assert np.bincount(y[va], minlength=4).tolist() == [5, 2, 1, 0]
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(len(y)))
    assert np.array_equal(stratified_holdout(y, 0.1, seed=0)[1], va)
    soft = np.eye(4, dtype=np.float32)[y]
    assert np.array_equal(stratified_holdout(soft, 0.1, seed=0)[1], va)
    with pytest.raises(ValueError):
        stratified_holdout(y, 1.5)
