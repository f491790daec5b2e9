"""Face crops for the classifier: five-point similarity alignment, or a box crop.

Two crop styles, named by a checkpoint's ``preprocess["crop"]``:

``"aligned112"``
    The five landmarks (image-left eye, image-right eye, nose tip, image-left and
    image-right mouth corner) are mapped by a least-squares similarity transform
    (Umeyama 1991: rotation, uniform scale, translation) onto the standard ArcFace /
    RetinaFace 112x112 template :data:`ARCFACE_112` (scaled to the model's input
    size when it is not 112).  This is the input LFNSB-style models expect.

``"fer"``
    A FER2013-style crop: FER2013 faces are *loosely* framed (forehead to chin, a
    little of the hair and cheeks, eyes about 39 % down the frame).  The template
    :data:`FER_48` is the median of the five landmarks that litefer's MTCNN finds on
    1,277 FER2013 training images (each 48x48 face padded and upsampled 4x first):
    inter-ocular distance 17.6 px of 48 (IQR 15.9-19.1), eyes at y = 18.6, mouth at
    y = 37.6.  Faces are aligned onto it the same way, so a photo's face fills the
    frame as a FER2013 face does.  (FER2013 faces keep some head roll — median
    |roll| 4.8 deg, 90th percentile 15.5 deg — so removing the roll stays inside the
    training distribution.)

Without landmarks (a box-only detector, or a box given by hand) the five points are
estimated from the box with :data:`BOX_LANDMARKS` — where MTCNN's points sit, on
median, inside MTCNN's own box on the same FER2013 images — restricted to scale and
translation (no rotation), and the crop is then made the same way.  For the FER
crop this amounts to a square of about 1.24x the box width about the box centre.

Everything here is numpy + OpenCV; the transforms are plain 2x3 affine matrices.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

#: the ArcFace / InsightFace 112x112 five-point template (x, y)
ARCFACE_112 = np.array([
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
], dtype=np.float64)

#: FER2013's five points in its 48x48 frame (medians measured with litefer's MTCNN, see above)
FER_48 = np.array([
    [15.13, 18.78],
    [32.96, 18.40],
    [24.07, 28.82],
    [16.92, 37.71],
    [31.66, 37.43],
], dtype=np.float64)

#: where the five points sit inside an MTCNN face box, as fractions of its width/height
BOX_LANDMARKS = np.array([
    [0.282, 0.391],
    [0.744, 0.382],
    [0.513, 0.589],
    [0.329, 0.767],
    [0.709, 0.760],
], dtype=np.float64)

CROPS = ("aligned112", "fer")


def template(crop: str, size: int) -> np.ndarray:
    """The five target points of ``crop`` in a ``size`` x ``size`` frame."""
    if crop == "aligned112":
        return ARCFACE_112 * (size / 112.0)
    if crop == "fer":
        return FER_48 * (size / 48.0)
    raise ValueError(f"unknown crop {crop!r}; known: {', '.join(CROPS)}")


def umeyama(src: np.ndarray, dst: np.ndarray, rotation: bool = True) -> np.ndarray:
    """2x3 least-squares similarity transform taking points ``src`` onto ``dst``.

    Umeyama (1991), "Least-squares estimation of transformation parameters between
    two point patterns", in the plane: with centred points ``s_i``, ``d_i`` the optimal
    ``scale x rotation`` is ``[[a, -b], [b, a]]`` with ``a = sum(s_i . d_i) / sum|s_i|^2``
    and ``b = sum(s_i x d_i) / sum|s_i|^2`` (the 2x2 case of Umeyama's SVD solution, in
    closed form: a proper rotation, never a reflection; about 5x faster than the SVD at
    five points).  With ``rotation=False`` only scale and translation are fitted
    (``scale = std(dst) / std(src)``).
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape or len(src) < 2:
        raise ValueError(f"need matching point sets of at least 2 points, got {src.shape} and {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("landmarks contain NaN or infinite values")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    ss = float((sc * sc).sum())
    if ss < 1e-12 * len(src):
        raise ValueError("landmarks are all at one point")
    if rotation:
        a = float((sc * dc).sum()) / ss
        b = float((sc[:, 0] * dc[:, 1] - sc[:, 1] * dc[:, 0]).sum()) / ss
        sr = np.array([[a, -b], [b, a]])
    else:
        sr = np.sqrt(float((dc * dc).sum()) / ss) * np.eye(2)
    t = mu_d - sr @ mu_s
    return np.hstack([sr, t[:, None]])


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Points (N, 2) mapped by the 2x3 affine ``m``."""
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    return pts @ m[:, :2].T + m[:, 2]


def landmarks_from_box(box: Sequence[float]) -> np.ndarray:
    """Five points estimated from a face box (x1, y1, x2, y2) with :data:`BOX_LANDMARKS`."""
    x1, y1, x2, y2 = [float(v) for v in box]
    w, h = x2 - x1, y2 - y1
    if not (w > 0 and h > 0):
        raise ValueError(f"face box {list(box)} has no area")
    return np.stack([x1 + BOX_LANDMARKS[:, 0] * w, y1 + BOX_LANDMARKS[:, 1] * h], 1)


def face_transform(crop: str, size: int, landmarks: Optional[np.ndarray] = None,
                   box: Optional[Sequence[float]] = None) -> np.ndarray:
    """The 2x3 matrix taking image pixels to the ``size`` x ``size`` crop of a face."""
    dst = template(crop, size)
    if landmarks is not None:
        return umeyama(np.asarray(landmarks, dtype=np.float64).reshape(5, 2), dst)
    if box is None:
        raise ValueError("a face crop needs landmarks or a box")
    return umeyama(landmarks_from_box(box), dst, rotation=False)


def warp(img: np.ndarray, m: np.ndarray, size: int, border: str = "replicate") -> np.ndarray:
    """``img`` warped by ``m`` to ``size`` x ``size``; pixels outside the image repeat
    the edge (``"replicate"``) or are black (``"constant"``).  Shrinking by more than
    2x first averages (area resize) so the crop does not alias: only the part of the
    image the crop sees (plus a margin) is resized, not the whole photo (that cost 6 ms
    a face on a 1100x600 photo)."""
    import cv2
    m = np.asarray(m, dtype=np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if scale < 0.5 and min(img.shape[:2]) > 1:
        img, m = _region(img, m, int(size), margin=4.0 / scale)
        f = min(1.0, 2.0 * scale)
        small = cv2.resize(img, (max(1, round(img.shape[1] * f)), max(1, round(img.shape[0] * f))),
                           interpolation=cv2.INTER_AREA)
        fx, fy = small.shape[1] / img.shape[1], small.shape[0] / img.shape[0]
        m = m @ np.array([[1.0 / fx, 0, 0], [0, 1.0 / fy, 0], [0, 0, 1]])
        img = small
    mode = cv2.BORDER_REPLICATE if border == "replicate" else cv2.BORDER_CONSTANT
    return cv2.warpAffine(img, m, (int(size), int(size)), flags=cv2.INTER_LINEAR, borderMode=mode, borderValue=0)


def _region(img: np.ndarray, m: np.ndarray, size: int, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """The part of ``img`` that the ``size`` x ``size`` crop of ``m`` samples (its corners
    mapped back, ``margin`` source pixels around), and ``m`` moved to it.  Where the region
    is cut by the image's edge the edge is the image's own, so the warp's border handling
    is unchanged; a crop that sees (almost) none of the image keeps the whole image."""
    inv = np.linalg.inv(np.vstack([m, [0.0, 0.0, 1.0]]))[:2]
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], dtype=np.float64)
    src = corners @ inv[:, :2].T + inv[:, 2]
    h, w = img.shape[:2]
    x0 = max(0, int(np.floor(src[:, 0].min() - margin)))
    y0 = max(0, int(np.floor(src[:, 1].min() - margin)))
    x1 = min(w, int(np.ceil(src[:, 0].max() + margin)) + 1)
    y1 = min(h, int(np.ceil(src[:, 1].max() + margin)) + 1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return img, m
    return img[y0:y1, x0:x1], m @ np.array([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]])


def crop_face(img: np.ndarray, crop: str = "aligned112", size: Optional[int] = None,
              landmarks: Optional[np.ndarray] = None, box: Optional[Sequence[float]] = None,
              border: Optional[str] = None) -> np.ndarray:
    """The face crop (``size`` x ``size``, same channels and dtype as ``img``).

    ``crop``: ``"aligned112"`` (default size 112, black outside the image, as the
    ArcFace crops) or ``"fer"`` (default size 48, edge pixels repeated outside).
    Landmarks (5, 2) are used when given, else the box.
    """
    if size is None:
        size = 112 if crop == "aligned112" else 48
    if border is None:
        border = "constant" if crop == "aligned112" else "replicate"
    m = face_transform(crop, int(size), landmarks=landmarks, box=box)
    return warp(img, m, int(size), border=border)
