"""Image pipelines: uint8 numpy faces in, normalised float tensors ``(C, S, S)`` out.

Training augmentation (:class:`Augment`) draws all its randomness from an explicit
``numpy.random.Generator``, so a run is reproducible and a resumed run sees the same
augmentations: :class:`AugmentedFaces` derives one generator per (seed, epoch, index).
All geometric steps (random resized crop, rotation, translation, horizontal flip and the
resize to the model input) are composed into one affine warp, so each image is
interpolated once.

Pipeline of :class:`Augment`, in order:

1. colour handling: RGB -> grey (ITU-R 601 luma) for 1-channel models; grey is
   repeated to 3 channels for 3-channel models (after the warp, which is cheaper);
2. one affine warp to ``size x size``: random resized crop (area fraction ``scale``,
   aspect ratio ``ratio``, log-uniform), rotation in ``[-rotation, rotation]`` degrees,
   translation by up to ``translate * size`` pixels on each axis, horizontal flip
   with probability ``hflip``;
3. brightness / contrast jitter (multiplicative factors in ``[1-b, 1+b]``);
4. ``x = (pixel / 255 - mean) / std`` per channel;
5. random erasing (Zhong et al. 2020) on the normalised tensor: with probability
   ``erasing`` a rectangle of area fraction in ``erasing_scale`` and aspect ratio in
   ``erasing_ratio`` is set to ``erasing_value`` (0 = the mean pixel, or "random").

:class:`Preprocess` is the deterministic evaluation pipeline (colour handling, resize,
normalisation); :func:`from_preprocess` builds it from a checkpoint's ``preprocess`` dict.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from litefer.data.base import FaceArrays

from litefer.preprocess import colour as _shared_colour
from litefer.preprocess import normalise as _normalise
from litefer.preprocess import per_channel as _per_channel
from litefer.preprocess import resize as _resize


def _colour(img: np.ndarray, channels: int, grey: bool = False) -> np.ndarray:
    """uint8 HxW or HxWx3 -> HxW for 1-channel models (and with ``grey``); grey stays HxW
    for 3-channel models (repeated to 3 channels only when the tensor is made)."""
    return _shared_colour(img, channels, grey)


def _to_tensor(img: np.ndarray, channels: int, mean: np.ndarray, std: np.ndarray):
    import torch
    return torch.from_numpy(_normalise(img, channels, mean, std))


class Preprocess:
    """Deterministic evaluation transform: colour handling, resize, normalisation."""

    def __init__(self, size: int, channels: int = 1, mean: float | Sequence[float] = 0.5,
                 std: float | Sequence[float] = 0.5, grey: bool = False):
        self.size, self.channels = int(size), int(channels)
        self.grey = bool(grey)
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if self.size < 1:
            raise ValueError(f"size must be positive, got {size}")
        self.mean = _per_channel(mean, self.channels, "mean")
        self.std = _per_channel(std, self.channels, "std")
        if np.any(self.std <= 0):
            raise ValueError("std must be positive")

    def __call__(self, img: np.ndarray, rng: Optional[np.random.Generator] = None):
        img = _resize(_colour(img, self.channels, self.grey), self.size)
        return _to_tensor(img, self.channels, self.mean, self.std)

    def __repr__(self) -> str:
        return (f"Preprocess(size={self.size}, channels={self.channels}, mean={self.mean.tolist()}, "
                f"std={self.std.tolist()}, grey={self.grey})")


def from_preprocess(preprocess: dict) -> Preprocess:
    """The evaluation transform of a checkpoint's ``preprocess`` dict (``grey`` honoured,
    as the recognizer and the ONNX backend do: see :mod:`litefer.preprocess`)."""
    return Preprocess(preprocess["size"], preprocess.get("channels", 1),
                      preprocess.get("mean", 0.5), preprocess.get("std", 0.5),
                      grey=bool(preprocess.get("grey", False)))


class Augment:
    """Random training augmentation; see the module docstring for the steps.

    Called as ``aug(img, rng)``; without ``rng`` it draws a generator from torch's RNG.
    """

    def __init__(self, size: int, channels: int = 1, mean: float | Sequence[float] = 0.5,
                 std: float | Sequence[float] = 0.5, *, hflip: float = 0.5, rotation: float = 0.0,
                 scale: Sequence[float] = (1.0, 1.0), ratio: Sequence[float] = (1.0, 1.0),
                 translate: float = 0.0, brightness: float = 0.0, contrast: float = 0.0,
                 erasing: float = 0.0, erasing_scale: Sequence[float] = (0.02, 0.33),
                 erasing_ratio: Sequence[float] = (0.3, 3.3), erasing_value: float | str = 0.0,
                 border: str = "reflect"):
        self.pre = Preprocess(size, channels, mean, std)
        self.size, self.channels = self.pre.size, self.pre.channels
        self.hflip, self.rotation, self.translate = float(hflip), float(rotation), float(translate)
        self.scale, self.ratio = tuple(map(float, scale)), tuple(map(float, ratio))
        self.brightness, self.contrast = float(brightness), float(contrast)
        self.erasing = float(erasing)
        self.erasing_scale, self.erasing_ratio = tuple(map(float, erasing_scale)), tuple(map(float, erasing_ratio))
        self.erasing_value = erasing_value
        checks = [
            (0 <= self.hflip <= 1, "hflip must be a probability in [0, 1]"),
            (0 <= self.erasing <= 1, "erasing must be a probability in [0, 1]"),
            (len(self.scale) == 2 and 0 < self.scale[0] <= self.scale[1], "scale must be (min, max) with 0 < min <= max"),
            (len(self.ratio) == 2 and 0 < self.ratio[0] <= self.ratio[1], "ratio must be (min, max) with 0 < min <= max"),
            (len(self.erasing_scale) == 2 and 0 < self.erasing_scale[0] <= self.erasing_scale[1] <= 1,
             "erasing_scale must be (min, max) within (0, 1]"),
            (len(self.erasing_ratio) == 2 and 0 < self.erasing_ratio[0] <= self.erasing_ratio[1],
             "erasing_ratio must be (min, max) with 0 < min <= max"),
            (self.rotation >= 0 and 0 <= self.translate < 1, "rotation must be >= 0 and translate in [0, 1)"),
            (0 <= self.brightness < 1 and 0 <= self.contrast < 1, "brightness and contrast must be in [0, 1)"),
            (border in ("reflect", "constant", "replicate"), "border must be reflect, constant or replicate"),
            (erasing_value == "random" or isinstance(erasing_value, (int, float)), "erasing_value must be a number or 'random'"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        self.border = border

    # -- geometry -------------------------------------------------------------------
    def _matrix(self, h: int, w: int, rng: np.random.Generator) -> Optional[np.ndarray]:
        """2x3 affine map from source pixel coordinates to output pixel coordinates."""
        s = self.size
        cw, ch = float(w), float(h)
        cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
        if self.scale != (1.0, 1.0) or self.ratio != (1.0, 1.0):
            area = h * w * rng.uniform(*self.scale)
            r = math.exp(rng.uniform(math.log(self.ratio[0]), math.log(self.ratio[1])))
            cw, ch = math.sqrt(area * r), math.sqrt(area / r)
            # centre of the crop: anywhere that keeps it inside the image (centred if it cannot)
            cx = (w - 1) / 2.0 + (rng.uniform(-1, 1) * max(0.0, (w - cw) / 2.0))
            cy = (h - 1) / 2.0 + (rng.uniform(-1, 1) * max(0.0, (h - ch) / 2.0))
        angle = math.radians(rng.uniform(-self.rotation, self.rotation)) if self.rotation else 0.0
        tx = rng.uniform(-self.translate, self.translate) * s if self.translate else 0.0
        ty = rng.uniform(-self.translate, self.translate) * s if self.translate else 0.0
        flip = self.hflip > 0 and rng.random() < self.hflip
        if (cw, ch) == (s, s) and (cx, cy) == ((w - 1) / 2.0, (h - 1) / 2.0) and not (angle or tx or ty or flip):
            return None                                   # identity: no warp needed
        sx, sy = s / cw, s / ch
        if flip:
            sx = -sx
        ca, sa = math.cos(angle), math.sin(angle)
        # out = T(centre_out + t) . R . F . S . T(-centre_src), in plain floats (cheaper than numpy here)
        a, b, c, d = ca * sx, -sa * sy, sa * sx, ca * sy
        ox, oy = (s - 1) / 2.0 + tx, (s - 1) / 2.0 + ty
        return np.array([[a, b, ox - (a * cx + b * cy)], [c, d, oy - (c * cx + d * cy)]], dtype=np.float64)

    def _warp(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        import cv2
        m = self._matrix(img.shape[0], img.shape[1], rng)
        if m is None:
            return _resize(img, self.size)
        border = {"reflect": cv2.BORDER_REFLECT_101, "constant": cv2.BORDER_CONSTANT,
                  "replicate": cv2.BORDER_REPLICATE}[self.border]
        # shrinking by more than 2x: pre-resize with area averaging to avoid aliasing
        if math.sqrt(abs(m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0])) < 0.5:
            f = self.size / min(img.shape[:2]) * 2
            small = cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
            m = m @ np.array([[1 / f, 0, 0], [0, 1 / f, 0], [0, 0, 1]])
            img = small
        return cv2.warpAffine(img, m, (self.size, self.size), flags=cv2.INTER_LINEAR, borderMode=border)

    # -- the pipeline -----------------------------------------------------------------
    def __call__(self, img: np.ndarray, rng: Optional[np.random.Generator] = None):
        if rng is None:
            import torch
            rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        img = self._warp(_colour(img, self.channels), rng)
        if self.brightness or self.contrast:
            x = img.astype(np.float32)
            if self.contrast:
                m = x.mean()
                x = (x - m) * rng.uniform(1 - self.contrast, 1 + self.contrast) + m
            if self.brightness:
                x = x * rng.uniform(1 - self.brightness, 1 + self.brightness)
            img = np.clip(x + 0.5, 0, 255).astype(np.uint8)
        t = _to_tensor(img, self.channels, self.pre.mean, self.pre.std)
        if self.erasing and rng.random() < self.erasing:
            self._erase(t, rng)
        return t

    def _erase(self, t, rng: np.random.Generator) -> None:
        import torch
        _, h, w = t.shape
        for _ in range(10):
            area = h * w * rng.uniform(*self.erasing_scale)
            r = math.exp(rng.uniform(math.log(self.erasing_ratio[0]), math.log(self.erasing_ratio[1])))
            eh, ew = int(round(math.sqrt(area * r))), int(round(math.sqrt(area / r)))
            if 0 < eh < h and 0 < ew < w:
                y0, x0 = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
                if self.erasing_value == "random":
                    noise = rng.standard_normal((t.shape[0], eh, ew)).astype(np.float32)
                    t[:, y0:y0 + eh, x0:x0 + ew] = torch.from_numpy(noise)
                else:
                    t[:, y0:y0 + eh, x0:x0 + ew] = float(self.erasing_value)
                return

    def __repr__(self) -> str:
        return (f"Augment(size={self.size}, channels={self.channels}, hflip={self.hflip}, rotation={self.rotation}, "
                f"scale={self.scale}, ratio={self.ratio}, translate={self.translate}, erasing={self.erasing})")


class AugmentedFaces:
    """A map-style dataset over :class:`FaceArrays` with reproducible per-sample randomness.

    Sample ``i`` of epoch ``e`` is transformed with ``numpy.random.default_rng([seed, e, i])``,
    so augmentations do not depend on the number of loader workers or on what ran before
    (a resumed run sees exactly the images an uninterrupted one would).  Call
    :meth:`set_epoch` before iterating a new epoch (with non-persistent workers).
    """

    def __init__(self, arrays: FaceArrays, transform, seed: int = 0):
        self.arrays, self.transform, self.seed, self.epoch = arrays, transform, int(seed), 0
        t = arrays.targets
        self._soft = t.ndim == 2

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, i: int):
        import torch
        i = int(i)
        rng = np.random.default_rng([self.seed, self.epoch, i])
        x = self.transform(self.arrays.images[i], rng)
        t = self.arrays.targets[i]
        y = torch.from_numpy(np.asarray(t, dtype=np.float32)) if self._soft else torch.tensor(int(t), dtype=torch.int64)
        return x, y
