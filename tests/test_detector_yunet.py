"""YuNet: the shipped file, torch-free loading, faces and landmarks beside MTCNN's, both runtimes."""
from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "litefer" / "assets" / "example.jpg"
#: the astronaut's face in example.jpg (hand-marked, forehead to chin), as in test_vision.py
EXAMPLE_FACE = (175, 55, 270, 180)


@pytest.fixture(scope="module")
def example():
    from litefer.vision import load_image
    return load_image(EXAMPLE)


@pytest.fixture(scope="module")
def yunet():
    from litefer.vision import create_detector
    return create_detector("yunet")


def test_shipped_file_is_the_recorded_upstream_model():
    """The file is OpenCV Zoo's face_detection_yunet_2023mar.onnx byte for byte (the sha256 its
    Git LFS pointer records), and LICENSES.md carries its notice and provenance."""
    from litefer.paths import DETECTORS
    from litefer.vision.detect import YUNET_FILE, YUNET_SHA256
    p = DETECTORS / YUNET_FILE
    data = p.read_bytes()
    assert len(data) == 232_589
    assert hashlib.sha256(data).hexdigest() == YUNET_SHA256
    text = (DETECTORS / "LICENSES.md").read_text()
    assert YUNET_FILE in text and YUNET_SHA256 in text and "Shiqi Yu" in text and "MIT License" in text


def test_loads_and_detects_without_torch():
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None      # `import torch` anywhere now raises ImportError
        from litefer.vision import create_detector, load_image
        for rt in ("onnxruntime", "opencv"):
            faces = create_detector("yunet", runtime=rt).detect(load_image({str(EXAMPLE)!r}))
            assert len(faces) == 1 and faces[0].landmarks is not None, faces
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules if sys.modules[m] is not None)
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]


def test_example_face_with_landmarks_close_to_mtcnn(yunet, example):
    from litefer.vision import create_detector
    faces = yunet.detect(example)
    assert len(faces) == 1
    f = faces[0]
    cx, cy = (f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2
    assert EXAMPLE_FACE[0] < cx < EXAMPLE_FACE[2] and EXAMPLE_FACE[1] < cy < EXAMPLE_FACE[3]
    assert 0.6 <= f.score <= 1.0 and f.landmarks.shape == (5, 2)
    ref = create_detector("mtcnn").detect(example)[0].landmarks
    iod = float(np.linalg.norm(ref[1] - ref[0]))
    # O-Net points (the default): within 5 % of the eye distance of MTCNN's; YuNet's own: 15 %
    assert np.linalg.norm(f.landmarks - ref, axis=1).max() < 0.05 * iod, (f.landmarks, ref)
    own = create_detector("yunet", landmarks="yunet").detect(example)[0].landmarks
    assert np.linalg.norm(own - ref, axis=1).max() < 0.15 * iod, (own, ref)
    np.testing.assert_allclose(f.keypoints, own, atol=1e-3)     # YuNet's own points are kept
    # image order: the image-left eye first, eyes above the nose, nose above the mouth
    for lm in (f.landmarks, own):
        assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]
        assert max(lm[0, 1], lm[1, 1]) < lm[2, 1] < min(lm[3, 1], lm[4, 1])


def test_no_face_on_blank_gradient_or_noise(yunet):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:240, 0:320]
    for img in (np.zeros((240, 320, 3), np.uint8), np.full((100, 100, 3), 255, np.uint8),
                np.dstack([(xx * 255 // 319).astype(np.uint8), (yy * 255 // 239).astype(np.uint8),
                           np.full_like(xx, 128, dtype=np.uint8)]),
                rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)):
        assert yunet.detect(img) == []


def test_runtimes_agree_on_a_scene_with_small_and_large_faces(example):
    """litefer's decoding on ONNX Runtime gives what cv2.FaceDetectorYN gives, on a canvas
    large enough for the second (downscaled) pass, with faces from 30 to 400 px."""
    import cv2
    from litefer.vision import create_detector
    face = example[40:200, 160:290]
    canvas = np.full((900, 1300, 3), 90, np.uint8)     # shorter side > 2 x max_face (400)
    x = 20
    for w in (30, 60, 120, 400):
        h = int(w * face.shape[0] / face.shape[1])
        canvas[100:100 + h, x:x + w] = cv2.resize(face, (w, h), interpolation=cv2.INTER_AREA)
        x += w + 40
    a = create_detector("yunet", runtime="onnxruntime", landmarks="yunet").detect(canvas)
    b = create_detector("yunet", runtime="opencv", landmarks="yunet").detect(canvas)
    assert len(a) == len(b) >= 3, (a, b)
    for fa, fb in zip(sorted(a, key=lambda f: f.box[0]), sorted(b, key=lambda f: f.box[0])):
        assert abs(fa.score - fb.score) < 1e-3
        np.testing.assert_allclose(fa.box, fb.box, atol=0.5)
        np.testing.assert_allclose(fa.landmarks, fb.landmarks, atol=0.5)
    widths = sorted(f.width for f in a)
    assert widths[-1] > 200, widths       # the face in the 400 px paste (its box is the face, not the paste)


def test_min_face_and_options_are_checked():
    from litefer.vision import create_detector
    with pytest.raises(ValueError, match="min_face"):
        create_detector("yunet", min_face=0)
    with pytest.raises(ValueError, match="landmarks"):
        create_detector("yunet", landmarks="dlib")
    with pytest.raises(ValueError, match="runtime"):
        create_detector("yunet", runtime="tensorrt")


def test_missing_or_foreign_weights_say_so(tmp_path):
    from litefer.vision import DetectorUnavailable, create_detector
    with pytest.raises(DetectorUnavailable, match="not found"):
        create_detector("yunet", weights=tmp_path / "nope.onnx")
    bad = tmp_path / "other.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(DetectorUnavailable, match="YuNet"):
        create_detector("yunet", weights=bad, runtime="onnxruntime")


def test_onet_check_vetoes_faces_below_its_threshold(example):
    """The O-Net second opinion drops a face whose O-Net probability is under ``onet_min``
    (the example's face scores near 1, so only an impossible threshold removes it)."""
    from litefer.vision import create_detector
    assert len(create_detector("yunet", onet_min=0.0).detect(example)) == 1
    assert create_detector("yunet", onet_min=1.01).detect(example) == []
    assert len(create_detector("yunet", landmarks="yunet", onet_min=1.01).detect(example)) == 1  # no O-Net run


@pytest.mark.parametrize("runtime", ["onnxruntime", "opencv"])
def test_one_detector_serves_concurrent_threads(runtime, example):
    """The service shares one detector between request threads: same faces from every
    thread, images of different sizes interleaved (OpenCV's detector keeps its input size
    as state, so litefer keeps one per thread and size)."""
    from concurrent.futures import ThreadPoolExecutor

    import cv2
    from litefer.vision import create_detector
    det = create_detector("yunet", runtime=runtime)
    images = [example, cv2.resize(example, (320, 320), interpolation=cv2.INTER_AREA)]
    ref = [det.detect(im) for im in images]
    assert all(len(r) == 1 for r in ref)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: (i % 2, det.detect(images[i % 2])), range(24)))
    for k, faces in got:
        assert len(faces) == 1
        np.testing.assert_allclose(faces[0].box, ref[k][0].box, atol=1e-3)
        np.testing.assert_allclose(faces[0].landmarks, ref[k][0].landmarks, atol=1e-3)


def test_onet_in_bounded_chunks_equals_one_face_at_a_time(yunet, example):
    """Many faces go through O-Net in chunks of ONET_CHUNK (the session's memory arena stays
    bounded); the answers are those of one face at a time."""
    face = yunet.detect(example)[0]
    rng = np.random.default_rng(0)
    n = 2 * yunet.ONET_CHUNK + 3
    boxes = np.asarray(face.box)[None] + rng.uniform(-6, 6, (n, 4))
    prob, pts = yunet._onet(example, boxes)
    assert prob.shape == (n,) and pts.shape == (n, 5, 2)
    for i in (0, yunet.ONET_CHUNK - 1, yunet.ONET_CHUNK, n - 1):
        p1, q1 = yunet._onet(example, boxes[i:i + 1])
        np.testing.assert_allclose(prob[i], p1[0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(pts[i], q1[0], atol=1e-3)
