"""Face-crop preprocessing, the one copy: uint8 faces in, the model's float32 input out.

Every path that feeds a classifier uses these functions: evaluation and training
(:class:`litefer.data.transforms.Preprocess`), the recognizer (``litefer predict``,
``Recognizer``, the service) and the ONNX backend.  A model's ``preprocess`` dict says
what to do (see :mod:`litefer.models.checkpoint`):

- ``channels`` 1: RGB -> grey (ITU-R 601 luma, rounded); 3: RGB kept, grey repeated;
- ``grey`` (3-channel models trained on grey faces): RGB -> grey first, then repeated;
- resize to ``size`` x ``size`` (area when shrinking, else bilinear);
- ``x = (pixel / 255 - mean) / std`` per channel.

Torch-free: numpy and OpenCV only.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

#: ITU-R BT.601 luma weights (R, G, B)
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def per_channel(v: float | Sequence[float], channels: int, name: str) -> np.ndarray:
    """``v`` (one value or one per channel) as a float32 vector of ``channels`` values."""
    a = np.atleast_1d(np.asarray(v, dtype=np.float32)).reshape(-1)
    if a.size == 1:
        a = np.repeat(a, channels)
    if a.size != channels:
        raise ValueError(f"{name} has {a.size} values for {channels} channels")
    return a


def to_grey(img: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 RGB -> uint8 HxW luma."""
    return np.clip(img.astype(np.float32) @ LUMA + 0.5, 0, 255).astype(np.uint8)


def colour(img: np.ndarray, channels: int, grey: bool = False) -> np.ndarray:
    """uint8 HxW or HxWx3 -> HxW for 1-channel models (and with ``grey``), else as given;
    grey stays HxW for 3-channel models (repeated only when the tensor is made)."""
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError(f"expected an HxW or HxWx3 image, got shape {img.shape}")
    if (channels == 1 or grey) and img.ndim == 3:
        img = to_grey(img)
    return img


def resize(img: np.ndarray, size: int) -> np.ndarray:
    """``img`` as ``size`` x ``size``: area interpolation when shrinking, else bilinear."""
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return img
    import cv2
    interp = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interp)


def normalise(img: np.ndarray, channels: int, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """uint8 HxW or HxWx3 (already sized) -> float32 (channels, H, W) = (x/255 - mean)/std."""
    x = img.astype(np.float32) * (1.0 / 255.0)
    x = x[None] if x.ndim == 2 else x.transpose(2, 0, 1)
    if x.shape[0] == 1 and channels == 3:
        x = np.repeat(x, 3, axis=0)
    return np.ascontiguousarray((x - mean[:, None, None]) / std[:, None, None], dtype=np.float32)


def preprocess_face(face: np.ndarray, preprocess: dict) -> np.ndarray:
    """One uint8 face crop (any size) -> float32 (channels, size, size)."""
    channels, size = int(preprocess["channels"]), int(preprocess["size"])
    mean = per_channel(preprocess.get("mean", 0.5), channels, "mean")
    std = per_channel(preprocess.get("std", 0.5), channels, "std")
    img = resize(colour(face, channels, bool(preprocess.get("grey", False))), size)
    return normalise(img, channels, mean, std)


def preprocess_faces(faces: Sequence[np.ndarray] | np.ndarray, preprocess: dict) -> np.ndarray:
    """uint8 face crops (HxW grey or HxWx3 RGB, any size) -> float32 NCHW batch."""
    channels, size = int(preprocess["channels"]), int(preprocess["size"])
    grey = bool(preprocess.get("grey", False))
    mean = per_channel(preprocess.get("mean", 0.5), channels, "mean")
    std = per_channel(preprocess.get("std", 0.5), channels, "std")
    if isinstance(faces, np.ndarray) and faces.ndim == 2:
        faces = faces[None]
    out = np.empty((len(faces), channels, size, size), np.float32)
    for i, face in enumerate(faces):
        out[i] = normalise(resize(colour(face, channels, grey), size), channels, mean, std)
    return out
