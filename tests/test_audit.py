"""The data audit on planted duplicates, near duplicates, blanks and leakage; and its CLI."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from litefer.data.audit import audit, dhash, read_exclusion_list
from litefer.data.base import FaceArrays


def _smooth(rng, n, size=48):
    """Distinct textured images (upsampled random 6x6 grids), so hashes are meaningful."""
    out = [cv2.resize(rng.integers(0, 256, (6, 6)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
           for _ in range(n)]
    return np.clip(np.stack(out), 0, 255).astype(np.uint8)


def _arrays(images, targets, prefix, split, labels=("a", "b", "c"), groups=None):
    return FaceArrays(images=images, targets=np.asarray(targets, np.int64), labels=labels,
                      ids=[f"{prefix}{i}" for i in range(len(images))], name="toy", split=split, groups=groups)


@pytest.fixture
def planted(rng):
    test_imgs = _smooth(rng, 4)
    train_imgs = _smooth(rng, 12)
    train_imgs[0] = test_imgs[0]                                       # exact leak of test0
    near = test_imgs[1].astype(np.int16) + 4 + rng.integers(-2, 3, test_imgs[1].shape)
    train_imgs[1] = np.clip(near, 0, 255).astype(np.uint8)             # near copy of test1
    train_imgs[3] = train_imgs[2]                                      # duplicate inside train
    train_imgs[4] = 128                                                # blank
    train_imgs[5] = (128 + (train_imgs[5].astype(np.int16) - 128) // 25).astype(np.uint8)  # low contrast
    train_imgs[6] = train_imgs[7]                                      # same pixels, another label
    train = _arrays(train_imgs, [0, 1, 2, 2, 0, 1, 0, 1, 2, 0, 1, 0], "tr", "train")
    test = _arrays(test_imgs, [0, 1, 2, 0], "te", "test")
    return {"train": train, "test": test}


def test_audit_finds_planted_problems(planted, tmp_path):
    rep = audit(planted, dataset="toy")
    s = rep.summary
    exact = {frozenset(m["id"] for m in g) for g in rep.exact_groups}
    assert exact == {frozenset({"tr0", "te0"}), frozenset({"tr2", "tr3"}), frozenset({"tr6", "tr7"})}
    assert s["exact_duplicate_groups"] == 3 and s["images_in_exact_groups"] == 6
    assert s["exact_groups_with_conflicting_labels"] == 1 and s["exact_groups_across_splits"] == 1
    assert s["exact_groups_shared_between_splits"] == {"train & test": 1}
    assert s["exact_copies_between_splits"] == {"test in train": 1, "train in test": 1}
    near = {frozenset(m["id"] for m in g) for g in rep.near_groups}
    assert near == {frozenset({"tr1", "te1"})}
    assert s["near_constant_images"] == 1 and rep.flagged["Near-constant images (excluded)"][0]["id"] == "tr4"
    assert [m["id"] for m in rep.flagged["Likely non-faces: low contrast (review)"]] == ["tr5"]
    # the protected (test) copy is kept, one copy of each within-train group is kept
    ex = rep.exclude_ids()
    assert ex == {"tr0", "tr1", "tr3", "tr4", "tr7"}
    assert not ex & set(planted["test"].ids)
    assert rep.splits["train"]["class_counts"] == {"a": 5, "b": 4, "c": 3}
    assert rep.splits["train"]["imbalance_ratio"] == round(5 / 3, 2)

    paths = rep.write(tmp_path / "out")
    assert read_exclusion_list(paths["exclude"]) == ex
    md = paths["markdown"].read_text()
    assert "Exact duplicates" in md and "tr0" in md and "Near duplicates" in md
    js = json.loads(paths["json"].read_text())
    assert js["summary"]["excluded_ids"] == 5 and {e["id"] for e in js["exclusions"]} == ex
    kept = planted["train"].exclude(read_exclusion_list(paths["exclude"]))
    assert len(kept) == 7 and not set(kept.ids) & ex


def test_audit_options(planted):
    rep = audit(planted, near=False)
    assert rep.near_groups == [] and "tr1" not in rep.exclude_ids()
    rep = audit(planted, exclude_near=False)
    assert len(rep.near_groups) == 1 and "tr1" not in rep.exclude_ids()
    rep = audit(planted, protect=["train", "test"])  # now the training copy is the protected one
    assert "te0" in rep.exclude_ids() and "tr0" not in rep.exclude_ids()
    with pytest.raises(TypeError, match="unknown audit parameter"):
        audit(planted, hamming=3)
    img = planted["test"].images[2]
    assert dhash(img) == dhash(img.copy()) and dhash(img) != dhash(planted["test"].images[3])


def test_audit_same_subject_frames_not_grouped(rng):
    base = _smooth(rng, 3)
    frames = np.stack([base[0], np.clip(base[0].astype(int) + 2, 0, 255).astype(np.uint8), base[1], base[2]])
    a = _arrays(frames, [0, 0, 1, 2], "f", "all", groups=np.array(["S1", "S1", "S2", "S3"]))
    rep = audit({"all": a})
    assert rep.near_groups == [] and rep.summary["near_pairs_within_one_subject_not_grouped"] == 1
    b = _arrays(frames, [0, 0, 1, 2], "f", "all", groups=np.array(["S1", "S9", "S2", "S3"]))
    assert len(audit({"all": b}).near_groups) == 1


def test_audit_cli(tmp_path, rng):
    from typer.testing import CliRunner
    from fixtures.layouts import save
    from litefer.cli import app
    imgs = _smooth(rng, 6)
    for i, cls in enumerate(["happy", "happy", "sad", "sad", "angry", "angry"]):
        save(tmp_path / "ds" / "train" / cls / f"{i}.png", imgs[i])
    save(tmp_path / "ds" / "test" / "happy" / "t0.png", imgs[0])  # leaked
    res = CliRunner().invoke(app, ["data", "audit", "folder", "--root", str(tmp_path / "ds"),
                                   "--out", str(tmp_path / "rep"), "--json"],
                             env={"LITEFER_CACHE": str(tmp_path / "cache")})
    assert res.exit_code == 0, res.output
    assert (tmp_path / "rep" / "audit.md").is_file()
    assert read_exclusion_list(tmp_path / "rep" / "exclude.txt") == {"train/happy/0.png"}
    line = [l for l in res.stdout.splitlines() if l.startswith("{")][-1]
    assert json.loads(line)["summary"]["exact_groups_shared_between_splits"] == {"train & test": 1}
    bad = CliRunner().invoke(app, ["data", "audit", "nosuchset", "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "unknown dataset" in bad.output


def test_data_info_and_cache_cli(tmp_path, rng):
    from typer.testing import CliRunner
    from fixtures.layouts import save
    from litefer.cli import app
    for i, cls in enumerate(["happy", "sad", "sad"]):
        save(tmp_path / "ds" / cls / f"{i}.png", _smooth(rng, 1)[0])
    env = {"LITEFER_CACHE": str(tmp_path / "cache")}
    res = CliRunner().invoke(app, ["data", "info", "folder", "--root", str(tmp_path / "ds"), "--json"], env=env)
    assert res.exit_code == 0, res.output
    info = json.loads([l for l in res.stdout.splitlines() if l.startswith("{")][-1])
    assert info["n"] == 3 and info["class_counts"] == {"happy": 1, "sad": 2} and info["shape"] == [48, 48]
    res = CliRunner().invoke(app, ["data", "cache", "--clear"], env=env)
    assert res.exit_code == 0 and "removed 1 cache entries" in res.output
