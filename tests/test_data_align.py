"""`litefer data align` / litefer.data.align: the dataset's faces cropped the way
`litefer predict` crops photos, cached once, with the faces not found reported."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from litefer.data.align import AlignReport, align_arrays, detect_landmarks
from litefer.data.base import FaceArrays
from litefer.vision.align import ARCFACE_112, crop_face
from litefer.vision.detect import Face
from tests.conftest import EXAMPLE, require_dataset


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LITEFER_CACHE", str(tmp_path / "cache"))


class PointDetector:
    """Finds one face whose five points are ``pts`` (in the frame it is given) on any
    image whose mean is above 10, none on darker ones; records the frames it saw."""

    def __init__(self, pts_of_shape):
        self.pts_of_shape, self.seen = pts_of_shape, []

    def detect(self, rgb):
        self.seen.append(rgb.shape)
        if rgb.mean() <= 10:
            return []
        pts = self.pts_of_shape(rgb.shape)
        x1, y1 = pts.min(0) - 5
        x2, y2 = pts.max(0) + 5
        return [Face(box=[x1, y1, x2, y2], score=0.99, landmarks=pts)]


def _arrays(images, name="toy"):
    n = len(images)
    return FaceArrays(images=np.stack(images), targets=np.arange(n) % 2, labels=("happy", "sad"),
                      ids=[f"img{i}.png" for i in range(n)], name=name, split="train")


def test_small_crops_are_padded_and_upsampled_and_landmarks_come_back_in_source_pixels():
    # a 48x48 source; the stub "detects" the points that correspond to SRC in the
    # padded (12 px each side) and upsampled (x3: 72 -> 216 >= 192) frame it receives
    src_pts = np.array([[15.0, 19.0], [33.0, 18.0], [24.0, 29.0], [17.0, 38.0], [32.0, 37.0]])
    det = PointDetector(lambda shape: (src_pts + 12) * 3)
    img = np.full((48, 48), 128, np.uint8)
    pts = detect_landmarks(img, det)
    assert det.seen == [(216, 216, 3)]
    assert np.allclose(pts, src_pts)
    # a large image is searched as it is
    big = PointDetector(lambda shape: src_pts * 5)
    assert np.allclose(detect_landmarks(np.full((240, 240, 3), 128, np.uint8), big), src_pts * 5)
    assert big.seen == [(240, 240, 3)]


def test_align_uses_the_predict_crop_and_reports_faces_not_found(monkeypatch):
    src_pts = np.array([[60.0, 70.0], [110.0, 68.0], [85.0, 95.0], [65.0, 120.0], [105.0, 118.0]])
    det = PointDetector(lambda shape: src_pts.copy())
    monkeypatch.setattr("litefer.vision.detect.create_detector", lambda name="auto", **kw: det)
    rng = np.random.default_rng(0)
    face = rng.integers(20, 255, (170, 170), dtype=np.uint8)
    dark = np.zeros((170, 170), np.uint8)
    arrays = _arrays([face, dark, face])
    out, rep = align_arrays(arrays, crop="aligned112")
    assert out.images.shape == (3, 112, 112)
    # exactly the crop the recognizer makes from the same landmarks
    assert np.array_equal(out.images[0], crop_face(face, "aligned112", 112, landmarks=src_pts))
    # the face without a detection is cropped from the whole image (box rule), not lost
    assert np.array_equal(out.images[1], crop_face(dark, "aligned112", 112, box=(0, 0, 170, 170)))
    assert isinstance(rep, AlignReport) and (rep.n, rep.found, rep.not_found) == (3, 2, ["img1.png"])
    assert not rep.cached and out.ids == arrays.ids
    # drop: the same cached crops, the image without a face removed and counted as skipped
    n_calls = len(det.seen)
    dropped, rep2 = align_arrays(arrays, crop="aligned112", missing="drop")
    assert rep2.cached and len(det.seen) == n_calls                 # nothing detected again
    assert dropped.ids == ["img0.png", "img2.png"] and np.array_equal(dropped.targets, [0, 0])
    assert dropped.skipped.counts == {"no face detected (align)": 1}
    assert arrays.skipped.counts == {}                             # the input is not modified
    # another crop is another cache entry
    fer, rep3 = align_arrays(arrays, crop="fer")
    assert fer.images.shape == (3, 48, 48) and not rep3.cached
    with pytest.raises(ValueError, match="missing"):
        align_arrays(arrays, missing="skip")
    with pytest.raises(ValueError, match="crop"):
        align_arrays(arrays, crop="square")


def test_report_files(tmp_path):
    rep = AlignReport("rafdb", "train", "aligned112", 112, "auto", "box", n=4, found=3, not_found=["a/1.jpg"])
    paths = rep.write(tmp_path / "rep")
    d = json.loads(paths["json"].read_text())
    assert d["found"] == 3 and d["not_found"] == ["a/1.jpg"] and d["found_fraction"] == 0.75
    lines = paths["not_found"].read_text().splitlines()
    assert lines[0].startswith("# rafdb/train: face found in 3 of 4") and lines[1:] == ["a/1.jpg"]


def _redetect_error(crop: np.ndarray, det) -> float:
    """Mean distance (px) of the landmarks found again on an aligned crop to the template."""
    pts = detect_landmarks(crop, det)             # padded + upsampled: a 112 crop is "small"
    assert pts is not None, "no face found again on the aligned crop"
    return float(np.linalg.norm(pts - ARCFACE_112, axis=1).mean())


def test_real_photo_aligns_like_predict():
    """The bundled example photo: the aligned crop is the recognizer's crop, and the
    detector finds the landmarks on it again at the ArcFace template."""
    from litefer.vision.detect import create_detector
    rgb = cv2.cvtColor(cv2.imread(str(EXAMPLE)), cv2.COLOR_BGR2RGB)
    out, rep = align_arrays(_arrays([rgb, np.zeros_like(rgb)], name="photo"), crop="aligned112")
    assert (rep.found, rep.not_found) == (1, ["img1.png"])
    det = create_detector("auto")
    faces = det.detect(rgb)
    f = max(faces, key=lambda f: f.width * f.height)
    assert np.array_equal(out.images[0], crop_face(rgb, "aligned112", 112, landmarks=f.landmarks))
    # (the whole photo taken as the face box instead: ~34 px off)
    assert _redetect_error(out.images[0], det) < 8.0


def test_real_ckplus_and_ferplus_crops_are_aligned():
    """FER+ / CK+ are already 48x48 faces: align finds most of them after padding and
    upsampling, and re-frames them onto the 112x112 template."""
    require_dataset("ckplus")
    from litefer.data import load_dataset
    from litefer.vision.detect import create_detector
    det = create_detector("auto")
    ck = load_dataset("ckplus").subset([0, 200, 400, 600, 800])
    out, rep = align_arrays(ck, crop="aligned112", dataset="ckplus")
    assert rep.found == 5 and out.images.shape == (5, 112, 112)
    # the aligned crop puts the face where the template says (re-detected on the crop)
    errs = [_redetect_error(im, det) for im in out.images]
    raw = [_redetect_error(cv2.resize(im, (112, 112)), det) for im in ck.images]
    assert np.median(errs) < 4.5 and np.median(errs) < np.median(raw), (errs, raw)
    require_dataset("ferplus")
    fp = load_dataset("ferplus", split="privatetest").subset(range(20))
    _, rep = align_arrays(fp, crop="aligned112", dataset="ferplus")
    assert rep.found >= 14 and len(rep.not_found) == 20 - rep.found


def test_cli_align_writes_the_report_and_reuses_the_cache(tmp_path):
    """`litefer data align folder`: a real photo (face found) and a blank image (none)."""
    from typer.testing import CliRunner

    from litefer.cli import app
    ds = tmp_path / "ds"
    (ds / "happy").mkdir(parents=True)
    (ds / "sad").mkdir()
    cv2.imwrite(str(ds / "happy" / "photo.jpg"), cv2.imread(str(EXAMPLE)))
    cv2.imwrite(str(ds / "sad" / "blank.png"), np.full((512, 512, 3), 200, np.uint8))
    out = tmp_path / "rep"
    args = ["data", "align", "folder", "--root", str(ds), "--opt", "color=RGB", "--out", str(out), "--json"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    rec = json.loads(res.output.strip().splitlines()[-1])
    assert (rec["n"], rec["found"], rec["not_found"], rec["cached"]) == (2, 1, 1, False)
    assert (out / "not-found-all.txt").read_text().splitlines()[1:] == ["sad/blank.png"]
    again = CliRunner().invoke(app, args)
    assert json.loads(again.output.strip().splitlines()[-1])["cached"] is True
    bad = CliRunner().invoke(app, ["data", "align", "folder", "--root", str(ds), "--crop", "square"])
    assert bad.exit_code != 0 and "--crop" in bad.output


def test_training_config_align_key_gives_the_aligned_crops(tmp_path, monkeypatch):
    """data.align: true makes the trainer's splits the aligned crops (model.crop, input size);
    a test split is never dropped from."""
    from pathlib import Path

    from litefer.training.config import load_config
    from litefer.training.data import load_split
    ds = tmp_path / "ds"
    (ds / "happy").mkdir(parents=True)
    (ds / "sad").mkdir()
    cv2.imwrite(str(ds / "happy" / "photo.jpg"), cv2.imread(str(EXAMPLE)))
    cv2.imwrite(str(ds / "sad" / "blank.png"), np.full((512, 512, 3), 200, np.uint8))
    base = Path(__file__).resolve().parents[1] / "configs" / "lfnsb_ferplus_ablation.yaml"
    sets = ["data.dataset=folder", f"data.root={ds}", "data.label_mode=null", "data.num_classes=null",
            "data.options={color: RGB}", "data.align=true", "data.align_missing=drop",
            "model.crop=aligned112", "model.input_size=112", "model.in_chans=3", "model.kwargs={img_size: 112}"]
    cfg = load_config(base, sets)
    train = load_split(cfg, None, "train")
    assert train.images.shape == (1, 112, 112, 3) and train.ids == ["happy/photo.jpg"]
    test = load_split(cfg, None, "test")
    assert test.ids == ["happy/photo.jpg", "sad/blank.png"]
    plain = load_split(load_config(base, sets[:5]), None, "train")
    assert plain.images.shape == (2, 512, 512, 3)
