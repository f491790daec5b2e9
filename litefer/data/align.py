"""Align a dataset's faces the way ``litefer predict`` crops them: detect, 5-point
similarity alignment, cache once.

>>> from litefer.data.align import load_aligned
>>> arrays, report = load_aligned("rafdb", split="train", crop="aligned112")
>>> report.not_found            # ids of images where no face was detected

Papers such as LFNSB train on faces that a detector found and aligned on five points
(RetinaFace, 112 x 112); ``litefer predict`` does the same with litefer's own detector
(:func:`litefer.vision.detect.create_detector`) and :func:`litefer.vision.align.crop_face`.
Training on a dataset's own crops (RAF-DB's 100 x 100, AffectNet's boxes) instead would
give the model a different framing at training and at inference.  This module applies
*the inference crop* to every image of a split, once: each image is searched for faces,
the largest face's five landmarks are mapped onto the crop's template (``aligned112``:
the ArcFace 112 x 112 template; ``fer``: FER2013's framing), and the result is cached in
the data cache (:mod:`litefer.data.cache`), keyed by the source pixels, the ids, the
crop, its size and the detector.

Images that are already small face crops (FER2013/FER+ and CK+48 are 48 x 48 faces):
a detector needs context around a face, so an image whose shorter side is below
:data:`SMALL_SIDE` is first padded by a quarter of its size on each side (edge pixels
repeated) and upsampled (bicubic) to at least :data:`DETECT_SIDE` pixels before
detection (the recipe litefer used to measure FER2013's landmark template,
``litefer.vision.align.FER_48``); the landmarks are mapped back and the crop is taken
from the original pixels.  So an aligned FER+ face is the same 48 x 48 image re-framed
onto the template (for ``aligned112``: upsampled to 112 x 112; no detail is added).

Faces not found (the report lists their ids): ``missing="box"`` (default) crops them
as if the whole image were the face box (the box-only rule of
:func:`litefer.vision.align.face_transform`), so no image is lost and a test split keeps
its size; ``missing="drop"`` removes them (for training splits; never use it on a
reported test split).
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from litefer.data.base import FaceArrays, SkipReport

#: images whose shorter side is below this are padded and upsampled before detection
SMALL_SIDE = 160
#: ... to at least this many pixels on the shorter side
DETECT_SIDE = 192
#: padding (fraction of the side, each side) added around small images before detection
SMALL_PAD = 0.25
#: what happens to images without a detected face
MISSING = ("box", "drop")
#: bump when the aligned pixels for the same inputs change
ALIGN_VERSION = 2

_log = logging.getLogger(__name__)


@dataclass
class AlignReport:
    """What :func:`align_arrays` did: how many faces were found, which were not."""
    dataset: str
    split: str
    crop: str
    size: int
    detector: str
    missing: str
    n: int
    found: int
    not_found: list[str] = field(default_factory=list)
    seconds: float = 0.0
    cached: bool = False

    @property
    def found_fraction(self) -> float:
        return self.found / self.n if self.n else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["found_fraction"] = self.found_fraction
        return d

    def summary(self) -> str:
        act = "dropped" if self.missing == "drop" else "cropped from the whole image"
        return (f"{self.dataset}/{self.split}: face found in {self.found} of {self.n} images "
                f"({100 * self.found_fraction:.1f} %); {len(self.not_found)} without a face {act} "
                f"(crop {self.crop} {self.size} px, detector {self.detector})")

    def write(self, out: str | Path) -> dict[str, Path]:
        """``align-<split>.json`` (the report) and ``not-found-<split>.txt`` (one id a line)."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        tag = self.split or "all"
        paths = {"json": out / f"align-{tag}.json", "not_found": out / f"not-found-{tag}.txt"}
        paths["json"].write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        head = f"# {self.summary()}\n"
        paths["not_found"].write_text(head + "".join(f"{i}\n" for i in self.not_found), encoding="utf-8")
        return paths


def _as_rgb(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim == 3 and img.shape[2] == 3:
        return img
    raise ValueError(f"expected an (H, W) or (H, W, 3) uint8 image, got shape {img.shape}")


def detect_landmarks(img: np.ndarray, detector) -> Optional[np.ndarray]:
    """The five landmarks (5, 2) of the largest face in ``img`` (image coordinates), or
    None when the detector finds no face.  Small images are padded and upsampled first
    (see the module docstring); a face without landmarks gets them from its box."""
    import cv2

    from litefer.vision.align import landmarks_from_box
    rgb = np.ascontiguousarray(_as_rgb(img))
    h, w = rgb.shape[:2]
    pad, scale = 0, 1.0
    if min(h, w) < SMALL_SIDE:
        pad = int(round(SMALL_PAD * min(h, w)))
        rgb = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        scale = float(np.ceil(DETECT_SIDE / min(rgb.shape[:2])))
        rgb = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    faces = detector.detect(rgb)
    if not faces:
        return None
    face = max(faces, key=lambda f: f.width * f.height)
    pts = face.landmarks if face.landmarks is not None else landmarks_from_box(face.box)
    return np.asarray(pts, dtype=np.float64).reshape(5, 2) / scale - pad


def align_images(images: np.ndarray, detector, crop: str = "aligned112", size: Optional[int] = None,
                 progress=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Aligned crops of ``images`` (N, H, W[, 3]) uint8: ``(crops, found, landmarks)``.

    ``crops`` keep the images' channels; ``found[i]`` is False where no face was
    detected (that crop then treats the whole image as the face box); ``landmarks`` are
    the detected points (N, 5, 2) in source pixels, NaN where none were found."""
    from litefer.vision.align import crop_face
    if size is None:
        size = 112 if crop == "aligned112" else 48
    n = len(images)
    shape = (n, size, size) + tuple(images.shape[3:])
    out = np.zeros(shape, dtype=np.uint8)
    found = np.zeros(n, dtype=bool)
    marks = np.full((n, 5, 2), np.nan, dtype=np.float32)
    for i in range(n):
        img = images[i]
        pts = detect_landmarks(img, detector)
        if pts is not None:
            found[i], marks[i] = True, pts
            out[i] = crop_face(img, crop, size, landmarks=pts)
        else:
            h, w = img.shape[:2]
            out[i] = crop_face(img, crop, size, box=(0, 0, w, h))
        if progress is not None:
            progress(i + 1, n)
    return out, found, marks


def _digest(arrays: FaceArrays) -> str:
    h = hashlib.sha1()
    h.update(str(arrays.images.shape).encode())
    h.update(np.ascontiguousarray(arrays.images).tobytes())
    h.update("\n".join(arrays.ids).encode())
    return h.hexdigest()


def align_arrays(arrays: FaceArrays, detector: str = "auto", crop: str = "aligned112",
                 size: Optional[int] = None, missing: str = "box", cache: bool = True,
                 progress=None, dataset: str = "") -> tuple[FaceArrays, AlignReport]:
    """``arrays`` with every image replaced by its aligned crop (cached), and the report.

    ``detector`` is a registered detector name (see ``litefer.vision.detect``);
    ``missing`` is ``"box"`` or ``"drop"`` (module docstring)."""
    from litefer.data.cache import load_or_build
    from litefer.vision.align import CROPS
    if crop not in CROPS:
        raise ValueError(f"unknown crop {crop!r}; known: {', '.join(CROPS)}")
    if missing not in MISSING:
        raise ValueError(f"missing must be one of {MISSING}, got {missing!r}")
    size = int(size or (112 if crop == "aligned112" else 48))
    if size < 16:
        raise ValueError(f"align size must be >= 16, got {size}")
    t0 = time.perf_counter()
    built = []

    from litefer.vision.detect import create_detector
    det = create_detector(detector)
    # the key names the detector actually used ("auto" changes meaning between versions)
    det_name = str(getattr(det, "name", None) or type(det).__name__)

    def build() -> dict:
        crops, found, marks = align_images(arrays.images, det, crop, size, progress=progress)
        built.append(type(det).__name__)
        return {"images": crops, "found": found, "landmarks": marks}

    key = {"digest": _digest(arrays), "crop": crop, "size": size, "detector": det_name,
           "small": [SMALL_SIDE, DETECT_SIDE, SMALL_PAD], "version": ALIGN_VERSION}
    z = load_or_build("align", key, build, enabled=cache)
    found = z["found"].astype(bool)
    keep = found if missing == "drop" else np.ones(len(found), dtype=bool)
    idx = np.flatnonzero(keep)
    skipped = SkipReport(dict(arrays.skipped.counts), {k: list(v) for k, v in arrays.skipped.examples.items()})
    if missing == "drop":
        for i in np.flatnonzero(~found):
            skipped.add("no face detected (align)", arrays.ids[i])
    out = FaceArrays(
        images=z["images"][idx], targets=arrays.targets[idx], labels=arrays.labels,
        ids=[arrays.ids[i] for i in idx],
        groups=None if arrays.groups is None else arrays.groups[idx],
        name=arrays.name, split=arrays.split, skipped=skipped,
        classes=None if arrays.classes is None else arrays.classes[idx])
    report = AlignReport(dataset=dataset or arrays.name, split=arrays.split, crop=crop, size=size,
                         detector=det_name, missing=missing, n=len(found), found=int(found.sum()),
                         not_found=[arrays.ids[i] for i in np.flatnonzero(~found)],
                         seconds=round(time.perf_counter() - t0, 3), cached=not built)
    _log.info(report.summary())
    return out, report


def load_aligned(dataset: str, root: Optional[str] = None, split: Optional[str] = None, *,
                 detector: str = "auto", crop: str = "aligned112", size: Optional[int] = None,
                 missing: str = "box", cache: bool = True, progress=None,
                 **opts) -> tuple[FaceArrays, AlignReport]:
    """:func:`litefer.data.load_dataset` followed by :func:`align_arrays`."""
    from litefer.data import load_dataset
    arrays = load_dataset(dataset, root=root, split=split, **opts)
    return align_arrays(arrays, detector=detector, crop=crop, size=size, missing=missing, cache=cache,
                        progress=progress, dataset=dataset)
