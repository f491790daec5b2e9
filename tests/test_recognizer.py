"""litefer.Recognizer and its backends, with random-init checkpoints of registered models."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from litefer.labels import FER2013
from litefer.vision import DetectorUnavailable, Face, ImageLoadError, load_image

from conftest import EXAMPLE, EXAMPLE_FACE, EXAMPLE_LABEL, REPO


def save_ckpt(path: Path, channels: int, size: int, crop: str, seed: int = 0) -> Path:
    import torch
    from litefer.models import create_model
    from litefer.models.checkpoint import ModelMeta, save_safetensors
    torch.manual_seed(seed)
    model = create_model("mini_xception", num_classes=len(FER2013), in_chans=channels)
    pre = {"channels": channels, "size": size, "mean": [0.5] * channels, "std": [0.25] * channels, "crop": crop}
    return save_safetensors(path, ModelMeta("mini_xception", list(FER2013), pre), model.state_dict())


@pytest.fixture(scope="module")
def fer_ckpt(tmp_path_factory) -> Path:
    return save_ckpt(tmp_path_factory.mktemp("ckpt") / "fer.safetensors", 1, 48, "fer")


@pytest.fixture(scope="module")
def a112_ckpt(tmp_path_factory) -> Path:
    return save_ckpt(tmp_path_factory.mktemp("ckpt") / "a112.safetensors", 3, 112, "aligned112", seed=1)


@pytest.fixture(scope="module")
def rec(fer_ckpt):
    from litefer.deploy.recognizer import Recognizer
    try:
        return Recognizer.from_pretrained(fer_ckpt)
    except DetectorUnavailable as exc:
        pytest.skip(f"no face detector installed ({exc})")


@pytest.fixture(scope="module")
def example() -> np.ndarray:
    return load_image(EXAMPLE)


def check_result(f, labels=FER2013):
    assert list(f.probs) == list(labels)
    assert abs(sum(f.probs.values()) - 1.0) < 1e-4 and all(0 <= p <= 1 for p in f.probs.values())
    assert f.label == max(f.probs, key=f.probs.get) and f.score == f.probs[f.label]
    d = f.to_dict()
    assert set(d) == {"box", "landmarks", "probs", "label", "score"}
    json.dumps(d)  # plain Python numbers only
    return d


def test_exported_as_litefer_recognizer():
    import litefer
    from litefer.deploy.recognizer import Recognizer
    assert litefer.Recognizer is Recognizer


def test_one_image_gives_its_faces(rec, example):
    faces = rec(EXAMPLE)
    assert isinstance(faces, list) and len(faces) == 1
    d = check_result(faces[0])
    cx, cy = (d["box"][0] + d["box"][2]) / 2, (d["box"][1] + d["box"][3]) / 2
    assert EXAMPLE_FACE[0] < cx < EXAMPLE_FACE[2] and EXAMPLE_FACE[1] < cy < EXAMPLE_FACE[3]
    assert len(d["landmarks"]) == 5 and faces[0].detection_score > 0.9
    assert rec.meta.arch == "mini_xception" and rec.labels == list(FER2013) and rec.crop == "fer"
    assert "yunet" in repr(rec)       # the auto detector


def test_every_input_type_gives_the_same_answer(rec, example):
    from litefer.deploy.recognizer import Recognizer
    whole = Recognizer(rec.backend, None)        # the loading is what differs: skip detection here
    ref = whole(example)[0].probs
    inputs = [str(EXAMPLE), EXAMPLE, EXAMPLE.read_bytes(), Image.open(EXAMPLE)]
    for out in whole(inputs):
        assert len(out) == 1
        assert np.allclose(list(out[0].probs.values()), list(ref.values()), atol=1e-5)
    bgr = np.ascontiguousarray(example[:, :, ::-1])
    assert np.allclose(list(whole(bgr, color="bgr")[0].probs.values()), list(ref.values()), atol=1e-5)
    # grey, RGBA and 16-bit versions are accepted
    grey = example.mean(axis=2).astype(np.uint8)
    rgba = np.dstack([example, np.full(example.shape[:2], 255, np.uint8)])
    deep = example.astype(np.uint16) * 257
    assert np.allclose(list(whole(rgba)[0].probs.values()), list(ref.values()), atol=1e-5)
    assert np.allclose(list(whole(deep)[0].probs.values()), list(ref.values()), atol=1e-5)
    assert len(whole(grey)) == 1
    # an (N, H, W, C) array is a batch of frames
    assert [len(r) for r in whole(np.stack([example, example]))] == [1, 1]
    # and with detection, a grey photo still shows its one face
    assert len(rec(grey)) == 1


def test_faces_of_many_images_are_classified_in_one_batch(rec, example, monkeypatch):
    calls = []
    real = rec.backend.predict

    def spy(batch):
        calls.append(batch.shape)
        return real(batch)

    monkeypatch.setattr(rec.backend, "predict", spy)
    blank = np.full((200, 300, 3), 127, np.uint8)
    out = rec([example, blank, example, example])
    assert [len(r) for r in out] == [1, 0, 1, 1]
    assert calls == [(3, 1, 48, 48)]
    assert rec(blank) == []
    assert calls == [(3, 1, 48, 48)]           # nothing to classify, no call


def test_bad_inputs_raise_value_errors_naming_them(rec, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(EXAMPLE.read_bytes()[:3000])
    with pytest.raises(ImageLoadError, match="broken.jpg"):
        rec(bad)
    with pytest.raises(ValueError, match="missing.png"):
        rec([EXAMPLE, tmp_path / "missing.png"])
    with pytest.raises(ValueError):
        rec(np.zeros((5, 5, 2), np.uint8))


def test_no_detection_mode_uses_the_whole_image(fer_ckpt, example):
    from litefer.deploy.recognizer import Recognizer
    rec = Recognizer.from_pretrained(fer_ckpt, detector=None)
    assert rec.detector is None and rec.detector_name == "none"
    faces = rec(example)
    assert len(faces) == 1
    d = check_result(faces[0])
    assert d["box"] == [0, 0, 512, 512] and d["landmarks"] is None and faces[0].detection_score is None
    # a 48x48 grey crop goes through unchanged in size
    crop = example[60:178, 170:280].mean(axis=2).astype(np.uint8)
    assert len(rec(crop)) == 1
    assert Recognizer.from_pretrained(fer_ckpt, detector="none").detector is None


def test_aligned112_three_channel_model(a112_ckpt, example):
    from litefer.deploy.recognizer import Recognizer
    try:
        rec = Recognizer.from_pretrained(a112_ckpt, detector="auto")
    except DetectorUnavailable as exc:
        pytest.skip(str(exc))
    seen = []
    real = rec.backend.predict
    rec.backend.predict = lambda b: seen.append(b) or real(b)
    faces = rec(example)
    assert len(faces) == 1 and rec.crop == "aligned112"
    check_result(faces[0])
    batch = seen[0]
    assert batch.shape == (1, 3, 112, 112)
    # the model receives the aligned crop of the detected face, colour kept, normalised with
    # the checkpoint's mean 0.5 / std 0.25
    from litefer.vision.align import crop_face
    (det,) = rec.detector.detect(example)
    crop = crop_face(example, "aligned112", 112, landmarks=det.landmarks, box=det.box)
    expected = (crop.astype(np.float32).transpose(2, 0, 1) / 255.0 - 0.5) / 0.25
    np.testing.assert_allclose(batch[0], expected, atol=1e-5)
    assert not np.allclose(batch[0, 0], batch[0, 2])


def test_normalisation_matches_the_training_transform(example):
    from litefer.data.transforms import from_preprocess
    from litefer.deploy.recognizer import normalise_crops
    for pre in ({"channels": 1, "size": 48, "mean": 0.5, "std": 0.5},
                {"channels": 3, "size": 64, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}):
        for img in (example, example[:100, :80], example.mean(axis=2).astype(np.uint8)):
            ours = normalise_crops([img], pre)[0]
            theirs = from_preprocess(pre)(img).numpy()
            assert ours.shape == theirs.shape and np.allclose(ours, theirs, atol=1e-6)


def test_custom_detector_object_and_box_only_faces(fer_ckpt, example):
    from litefer.deploy.recognizer import Recognizer

    class BoxOnly:
        name = "boxonly"

        def detect(self, rgb):
            return [Face([180, 60, 268, 175], 0.99, None), Face([0, 0, 60, 60], 0.5, None)]

    rec = Recognizer.from_pretrained(fer_ckpt, detector=BoxOnly())
    faces = rec(example)
    assert [f.landmarks for f in faces] == [None, None] and len(faces) == 2
    assert faces[0].box == [180, 60, 268, 175]
    with pytest.raises(TypeError):
        Recognizer.from_pretrained(fer_ckpt, detector=42)
    with pytest.raises(KeyError):
        Recognizer.from_pretrained(fer_ckpt, detector="no-such-detector")


# --------------------------------------------------------------------------- backends


def test_torch_backend_and_make_backend_errors(fer_ckpt):
    from litefer.deploy.backends import BackendError, ClassifierBackend, TorchBackend, make_backend
    be = make_backend("torch", fer_ckpt)
    assert isinstance(be, TorchBackend) and isinstance(be, ClassifierBackend)
    probs = be.predict(np.zeros((3, 1, 48, 48), np.float32))
    assert probs.shape == (3, 7) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert be.predict(np.zeros((0, 1, 48, 48), np.float32)).shape == (0, 7)
    with pytest.raises(ValueError, match="shape"):
        be.predict(np.zeros((1, 3, 48, 48), np.float32))
    with pytest.raises(BackendError, match="unknown backend"):
        make_backend("tensorflow", fer_ckpt)
    with pytest.raises(BackendError, match="onnx"):
        make_backend("torch", "model.onnx")
    from litefer.models.checkpoint import CheckpointError
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        make_backend("torch", "/nonexistent/model.safetensors")


def test_onnx_backend_is_imported_lazily():
    """Importing the Recognizer loads neither ONNX Runtime nor the ONNX backend module."""
    import subprocess
    code = ("import sys, litefer, litefer.deploy.recognizer, litefer.deploy.backends\n"
            "bad = [m for m in ('onnxruntime', 'onnx', 'litefer.deploy.onnx_backend') if m in sys.modules]\n"
            "assert not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_onnx_and_torch_recognizers_agree_on_the_example_photo(bundled_onnx):
    """The real bundled model exported to ONNX: the same face, the same known answer, the
    same probabilities as the torch backend (within float tolerance)."""
    from litefer.deploy.backends import make_backend
    from litefer.deploy.onnx_backend import OnnxBackend
    from litefer.deploy.recognizer import Recognizer
    assert isinstance(make_backend("onnx", bundled_onnx), OnnxBackend)
    try:
        by_torch = Recognizer.from_pretrained("default", backend="torch")
    except DetectorUnavailable as exc:
        pytest.skip(f"no face detector installed ({exc})")
    by_onnx = Recognizer.from_pretrained(bundled_onnx, backend="auto")   # .onnx implies the onnx backend
    assert by_torch.backend_name == "torch" and by_onnx.backend_name == "onnx"
    assert by_onnx.meta.arch == by_torch.meta.arch and by_onnx.labels == by_torch.labels
    assert by_onnx.meta.preprocess == by_torch.meta.preprocess
    (t,), (o,) = by_torch(EXAMPLE), by_onnx(EXAMPLE)
    assert t.label == o.label == EXAMPLE_LABEL
    assert np.allclose(t.box, o.box)                                   # the same detector, the same face
    np.testing.assert_allclose(list(o.probs.values()), list(t.probs.values()), atol=1e-4)
    # without detection too, and as a batch
    whole_t, whole_o = Recognizer(by_torch.backend, None), Recognizer(by_onnx.backend, None)
    img = load_image(EXAMPLE)
    crops = [img[60:178, 170:280], img[::2, ::2], img]
    for a, b in zip(whole_t(crops), whole_o(crops)):
        np.testing.assert_allclose(list(b[0].probs.values()), list(a[0].probs.values()), atol=1e-4)


def test_real_recognizer_behind_the_http_service(rec):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient
    from litefer.apps.service import create_app
    with TestClient(create_app(recognizer=rec, model_name="tiny")) as c:
        r = c.post("/v1/predict", content=EXAMPLE.read_bytes())
        assert r.status_code == 200, r.text
        faces = r.json()["faces"]
        assert len(faces) == 1 and set(faces[0]) == {"box", "landmarks", "probs", "label", "score"}
        m = c.get("/v1/models").json()["models"][0]
        assert m["arch"] == "mini_xception" and m["detector"] == "yunet" and m["labels"] == list(FER2013)
