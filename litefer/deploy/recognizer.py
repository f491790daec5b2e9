"""The end-to-end recognizer: image(s) in, faces with expression probabilities out.

>>> from litefer import Recognizer
>>> rec = Recognizer.from_pretrained()                # bundled model, "auto" detector
>>> faces = rec("photo.jpg")                          # one image -> list[FaceResult]
>>> faces[0].label, faces[0].probs["happy"], faces[0].box
>>> per_image = rec(["a.jpg", "b.png", frame_bgr], color="bgr")   # a list -> list of lists

Inputs: file paths, bytes, PIL images, numpy arrays (RGB; ``color="bgr"`` for
OpenCV frames; grey, RGBA, 16-bit and float are converted) — see
:func:`litefer.vision.load_image`.  For every image the detector finds the faces;
each face is cropped as the model's ``preprocess["crop"]`` says (``"aligned112"``:
five-point alignment to the ArcFace template; ``"fer"``: a FER2013-style loose
crop), converted to the model's channels and normalised; the faces of all the
images are classified together in batches.

``detector=None`` is the no-detection mode: each image already *is* a face crop and
is only resized (its box is the whole image).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from litefer.deploy.backends import ClassifierBackend, check_batch, make_backend, resolve_backend
from litefer.preprocess import preprocess_faces


@dataclass
class FaceResult:
    """One face: ``box`` (x1, y1, x2, y2) in image pixels, ``landmarks`` (five (x, y)
    points, or None), ``probs`` (label -> probability, the model's label order),
    ``label`` (the most probable) and ``score`` (its probability);
    ``detection_score`` is the detector's confidence (None without detection)."""

    box: list[float]
    landmarks: Optional[list[list[float]]]
    probs: dict[str, float]
    label: str
    score: float
    detection_score: Optional[float] = None

    def to_dict(self) -> dict:
        """``{"box", "landmarks", "probs", "label", "score"}`` with plain Python numbers."""
        return {"box": [round(float(v), 2) for v in self.box],
                "landmarks": None if self.landmarks is None
                else [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
                "probs": {k: float(v) for k, v in self.probs.items()},
                "label": self.label, "score": float(self.score)}


def normalise_crops(crops: Sequence[np.ndarray], preprocess: dict, grey: bool = False) -> np.ndarray:
    """uint8 face crops (H, W, 3) RGB or (H, W) grey -> float32 NCHW batch:
    :func:`litefer.preprocess.preprocess_faces` (the one preprocessing copy), with
    ``grey`` forcing grey faces for a 3-channel model."""
    return preprocess_faces(crops, {**preprocess, "grey": bool(grey or preprocess.get("grey", False))})


#: the detectors that take the ``threads`` policy (a user-registered factory may not)
BUILTIN_DETECTORS = ("auto", "mtcnn", "yunet", "blazeface", "blazeface_full", "haar")


@dataclass
class RecognizerMeta:
    """What the recognizer knows of its model when the backend carries no checkpoint
    metadata (an ONNX sidecar): the same fields as ``litefer.models.checkpoint.ModelMeta``,
    without importing torch."""

    arch: str
    labels: list
    preprocess: dict
    arch_kwargs: dict


def _is_batch(images: Any) -> bool:
    if isinstance(images, (list, tuple)):
        return True
    return isinstance(images, np.ndarray) and images.ndim == 4


class Recognizer:
    """Face detection + alignment + expression classification.

    backend: a :class:`~litefer.deploy.backends.ClassifierBackend` (``predict``,
        ``labels``, ``preprocess``).
    detector: a :class:`~litefer.vision.FaceDetector`, or None (images are face crops).
    grey: feed 3-channel models grey faces (repeated), as a model trained on grey
        FER2013 images saw them; default ``preprocess.get("grey", False)``.
    max_pixels: larger images are refused (:data:`litefer.vision.MAX_PIXELS`).
    """

    def __init__(self, backend: ClassifierBackend, detector: Any = None, *, grey: Optional[bool] = None,
                 max_pixels: Optional[int] = None, batch_size: int = 64):
        from litefer.vision.io import MAX_PIXELS
        self.backend = backend
        self.detector = detector
        self.labels = list(backend.labels)
        self.preprocess = dict(backend.preprocess)
        for k in ("channels", "size"):
            if k not in self.preprocess:
                raise ValueError(f"the model's preprocess lacks {k!r}: {self.preprocess}")
        self.crop = self.preprocess.get("crop") or "fer"
        from litefer.vision.align import CROPS
        if self.crop not in CROPS:
            raise ValueError(f"the model's preprocess crop {self.crop!r} is not one of {', '.join(CROPS)}")
        self.grey = bool(self.preprocess.get("grey", False)) if grey is None else bool(grey)
        self.max_pixels = int(max_pixels or MAX_PIXELS)
        self.batch_size = int(batch_size)
        self.backend_name = getattr(backend, "kind", type(backend).__name__)
        self.detector_name = "none" if detector is None else getattr(detector, "name", type(detector).__name__)
        self.meta = self._meta(backend)

    @staticmethod
    def _meta(backend: Any) -> Any:
        meta = getattr(backend, "meta", None)
        if meta is not None and not isinstance(meta, dict) and hasattr(meta, "arch"):
            return meta  # a checkpoint's ModelMeta (torch backend)
        if isinstance(meta, dict):  # the ONNX sidecar
            return RecognizerMeta(str(meta.get("arch", "?")), list(backend.labels), dict(backend.preprocess),
                                  dict(meta.get("arch_kwargs") or {}))
        return RecognizerMeta(getattr(backend, "arch", "?"), list(backend.labels), dict(backend.preprocess), {})

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike = "default", detector: Any = "auto",
                        device: str = "cpu", backend: str = "auto", *, grey: Optional[bool] = None,
                        detector_kwargs: Optional[dict] = None, threads: Optional[int] = 1,
                        **backend_kwargs: Any) -> "Recognizer":
        """A recognizer for ``source``: ``"default"`` (the bundled model), a checkpoint
        path (``.safetensors``/``.pt``) or an ``.onnx`` file (which implies
        ``backend="onnx"``).  ``detector``: ``"auto"``, a registered name, a
        :class:`~litefer.vision.FaceDetector`, or None / ``"none"`` for no detection.

        ``backend="auto"`` (the default) is ONNX Runtime when an ONNX model is at hand
        without exporting (an ``.onnx`` file, the bundled model's shipped export) or when
        torch is not installed, else torch (see :func:`~litefer.deploy.backends.resolve_backend`).
        ``threads``: the inference thread policy (default 1: per-face work does not gain
        from more threads and collapses when other processes load the cores); ONNX Runtime
        sessions get it per session, OpenCV (resizing, warping, ``cv2.dnn``) and torch
        process-wide (``cv2.setNumThreads``, ``torch.set_num_threads``); None leaves the
        runtimes' defaults."""
        backend = resolve_backend(backend, source, device)
        if threads is not None:
            import cv2
            cv2.setNumThreads(int(threads))
            if isinstance(detector, str) and detector.strip().lower().replace("-", "_") in BUILTIN_DETECTORS:
                detector_kwargs = {"threads": int(threads), **(detector_kwargs or {})}
            if backend == "onnx":
                backend_kwargs.setdefault("threads", int(threads))
        det = cls.make_detector(detector, device=device, **(detector_kwargs or {}))
        if threads is not None and backend == "torch":   # before the backend measures its layout
            import torch
            torch.set_num_threads(int(threads))
        be = make_backend(backend, source, device=device, **backend_kwargs)
        return cls(be, det, grey=grey)

    @staticmethod
    def make_detector(detector: Any = "auto", device: str = "cpu", **kwargs: Any) -> Any:
        """A detector from a name (``"auto"``, ``"mtcnn"``…), None/``"none"`` (no
        detection), or an object with ``detect(rgb)`` (returned as is)."""
        if detector is None or (isinstance(detector, str) and detector.strip().lower() in ("none", "")):
            return None
        if isinstance(detector, str):
            from litefer.vision.detect import create_detector
            if device not in (None, "cpu") and "device" not in kwargs:
                kwargs = {**kwargs, "device": device}
            return create_detector(detector, **kwargs)
        if not hasattr(detector, "detect"):
            raise TypeError(f"a detector needs a detect(rgb) method; got {type(detector).__name__}")
        return detector

    def __repr__(self) -> str:
        return (f"Recognizer(arch={self.meta.arch}, labels={len(self.labels)}, crop={self.crop}, "
                f"backend={self.backend_name}, detector={self.detector_name})")

    # ------------------------------------------------------------------ steps

    def load(self, image: Any, color: str = "rgb") -> np.ndarray:
        """uint8 RGB of one input (see :func:`litefer.vision.load_image`)."""
        from litefer.vision.io import load_image
        return load_image(image, color=color, max_pixels=self.max_pixels)

    def detect(self, rgb: np.ndarray) -> list:
        """Faces of one RGB image (``[whole image]`` without a detector)."""
        from litefer.vision.detect import Face
        if self.detector is None:
            h, w = rgb.shape[:2]
            return [Face([0.0, 0.0, float(w), float(h)], 1.0, None)]
        return list(self.detector.detect(rgb))

    def crop_faces(self, rgb: np.ndarray, faces: Sequence[Any]) -> list[np.ndarray]:
        """The model-sized uint8 crops of ``faces`` in ``rgb``."""
        from litefer.vision.align import crop_face
        size = int(self.preprocess["size"])
        if self.detector is None:
            return [rgb]
        return [crop_face(rgb, self.crop, size, landmarks=getattr(f, "landmarks", None), box=f.box) for f in faces]

    def classify(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """(N, C) probabilities of uint8 face crops (any size: resized to the model's)."""
        if len(crops) == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        outs = []
        for i in range(0, len(crops), self.batch_size):
            batch = check_batch(normalise_crops(crops[i:i + self.batch_size], self.preprocess, self.grey),
                                self.preprocess)
            outs.append(np.asarray(self.backend.predict(batch), dtype=np.float32))
        probs = np.concatenate(outs)
        if probs.shape != (len(crops), len(self.labels)):
            raise RuntimeError(f"the classifier answered shape {probs.shape} for {len(crops)} faces "
                               f"and {len(self.labels)} labels")
        return probs

    def _result(self, face: Any, p: np.ndarray) -> FaceResult:
        k = int(np.argmax(p))
        lm = getattr(face, "landmarks", None)
        return FaceResult(box=[float(v) for v in np.asarray(face.box).reshape(4)],
                          landmarks=None if lm is None else np.asarray(lm, dtype=float).reshape(-1, 2).tolist(),
                          probs={lab: float(v) for lab, v in zip(self.labels, p)},
                          label=self.labels[k], score=float(p[k]),
                          detection_score=None if self.detector is None else float(face.score))

    def analyze(self, rgbs: Sequence[np.ndarray]) -> list[list[FaceResult]]:
        """Results for already loaded uint8 RGB images: one list per image."""
        per_image, crops = [], []
        for rgb in rgbs:
            faces = self.detect(rgb)
            c = self.crop_faces(rgb, faces)
            per_image.append(faces)
            crops.extend(c)
        probs = self.classify(crops)
        out, k = [], 0
        for faces in per_image:
            out.append([self._result(f, probs[k + j]) for j, f in enumerate(faces)])
            k += len(faces)
        return out

    def __call__(self, images: Any, color: str = "rgb") -> list:
        """One image -> ``list[FaceResult]``; a list/tuple of images (or an (N, H, W, C)
        array) -> one such list per image.  A bad input raises
        :class:`~litefer.vision.ImageLoadError` (a ``ValueError``) naming it."""
        if _is_batch(images):
            rgbs = [self.load(im, color) for im in images]
            return self.analyze(rgbs)
        return self.analyze([self.load(images, color)])[0]

    predict = __call__
