"""Run exported litefer ONNX models with ONNX Runtime — no PyTorch at run time.

An exported model is two files: ``model.onnx`` and its sidecar ``model.onnx.json``
(labels, input size, channels, mean/std, crop, arch, source checkpoint sha256,
litefer version; see :mod:`litefer.deploy.export`).  The same JSON is also embedded
in the ONNX file's metadata (key ``litefer``), so a lone ``.onnx`` still runs.

>>> from litefer.deploy.onnx_backend import OnnxBackend
>>> be = OnnxBackend("model.onnx")
>>> probs = be.predict(batch)          # float32 NCHW, already normalised -> (N, C) probabilities
>>> probs = be.predict_faces(faces)    # uint8 HxW / HxWx3 face crops -> (N, C) probabilities

:func:`ensure_onnx` turns a checkpoint (or the bundled model) into a cached ONNX
file, exporting it once (that step needs PyTorch); later calls with the same
checkpoint bytes hit the cache and need only onnxruntime.

This module imports only numpy, json/hashlib and (lazily) onnxruntime and OpenCV;
it must never import torch (a test runs it with torch blocked).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

#: sidecar ``format`` value and the version of the sidecar layout
FORMAT = "litefer-onnx"
FORMAT_VERSION = 1
#: key of the sidecar JSON inside the ONNX model's metadata_props
METADATA_KEY = "litefer"
#: environment variable naming the cache folder (default ``~/.cache/litefer``)
CACHE_ENV = "LITEFER_CACHE"
#: bump when the export recipe changes, so cached exports are rebuilt
CACHE_RECIPE = "1"

#: files taken for checkpoints (exported and cached) rather than ONNX models
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt")
REQUIRED_FIELDS = ("labels", "preprocess", "input", "output")
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class OnnxBackendError(RuntimeError):
    """An ONNX model or its sidecar is missing, unreadable or inconsistent."""


# --------------------------------------------------------------------------- files


def sidecar_path(onnx_path: str | os.PathLike) -> Path:
    """``model.onnx`` -> ``model.onnx.json``."""
    return Path(str(onnx_path) + ".json")


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _check_meta(meta: Any, where: str) -> dict:
    if not isinstance(meta, dict):
        raise OnnxBackendError(f"{where}: litefer ONNX metadata is not a JSON object")
    if meta.get("format") not in (None, FORMAT):
        raise OnnxBackendError(f"{where}: format {meta.get('format')!r} is not {FORMAT!r}")
    missing = [k for k in REQUIRED_FIELDS if k not in meta]
    if missing:
        raise OnnxBackendError(f"{where}: litefer ONNX metadata lacks {', '.join(missing)}")
    pre = meta["preprocess"]
    for k in ("channels", "size", "mean", "std"):
        if k not in pre:
            raise OnnxBackendError(f"{where}: preprocess lacks {k!r}")
    if int(pre["channels"]) not in (1, 3):
        raise OnnxBackendError(f"{where}: preprocess channels must be 1 or 3, got {pre['channels']}")
    return meta


def read_sidecar(onnx_path: str | os.PathLike) -> dict:
    """The litefer metadata of an exported model: the sidecar JSON when present, else
    the copy embedded in the ONNX file's metadata."""
    onnx_path = Path(onnx_path)
    side = sidecar_path(onnx_path)
    if side.is_file():
        try:
            meta = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise OnnxBackendError(f"{side}: unreadable sidecar ({exc})") from None
        return _check_meta(meta, str(side))
    if not onnx_path.is_file():
        raise OnnxBackendError(f"{onnx_path}: no such ONNX file")
    ort = _ort()
    try:
        sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        raw = sess.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    except Exception as exc:  # onnxruntime raises its own error types
        raise OnnxBackendError(f"{onnx_path}: unreadable ONNX model ({exc})") from None
    if raw is None:
        raise OnnxBackendError(f"{onnx_path}: no sidecar {side.name} and no embedded litefer metadata; "
                               "export the model with `litefer export`")
    return _check_meta(json.loads(raw), str(onnx_path))


def write_meta(onnx_path: Path, meta: dict) -> None:
    """Embed ``meta`` in the ONNX file (metadata_props) and write the sidecar next to it."""
    import onnx  # the onnx package only; no torch
    model = onnx.load(str(onnx_path))
    props = {p.key: p.value for p in model.metadata_props}
    props[METADATA_KEY] = json.dumps(meta, sort_keys=True)
    del model.metadata_props[:]
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    model.producer_name = model.producer_name or "litefer"
    model.doc_string = (f"litefer {meta.get('arch', '')} facial expression classifier; input "
                        f"{meta['input']['name']} {meta['input']['shape']} = (pixel/255 - mean)/std, "
                        f"output {meta['output']['name']} (logits; softmax for probabilities)")
    onnx.save(model, str(onnx_path))
    sidecar_path(onnx_path).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _ort():
    try:
        import onnxruntime
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError("the ONNX backend needs onnxruntime: pip install 'litefer[onnx]'",
                                  name=exc.name) from None
    return onnxruntime


# --------------------------------------------------------------------------- preprocessing


def _colour(img: np.ndarray, channels: int, grey: bool = False) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError(f"expected an HxW or HxWx3 image, got shape {img.shape}")
    if (channels == 1 or grey) and img.ndim == 3:  # RGB -> grey, ITU-R 601 luma (as litefer.data.transforms)
        img = np.clip(img.astype(np.float32) @ _LUMA + 0.5, 0, 255).astype(np.uint8)
    return img


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return img
    import cv2
    interp = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interp)


def preprocess_faces(faces: Sequence[np.ndarray] | np.ndarray, preprocess: dict) -> np.ndarray:
    """uint8 face crops (HxW grey or HxWx3 RGB, any size) -> float32 NCHW batch, the same
    numbers as ``litefer.data.transforms.from_preprocess(preprocess)`` gives, without torch.
    ``preprocess["grey"]`` (3-channel models trained on grey faces): RGB is turned to grey
    first, then repeated to 3 channels."""
    channels, size = int(preprocess["channels"]), int(preprocess["size"])
    grey = bool(preprocess.get("grey", False))
    mean = np.broadcast_to(np.asarray(preprocess.get("mean", 0.5), np.float32).reshape(-1), (channels,))
    std = np.broadcast_to(np.asarray(preprocess.get("std", 0.5), np.float32).reshape(-1), (channels,))
    if isinstance(faces, np.ndarray) and faces.ndim == 2:
        faces = faces[None]
    out = np.empty((len(faces), channels, size, size), np.float32)
    for i, face in enumerate(faces):
        img = _resize(_colour(face, channels, grey), size)
        x = img.astype(np.float32) * (1.0 / 255.0)
        x = x[None] if x.ndim == 2 else x.transpose(2, 0, 1)
        if x.shape[0] == 1 and channels == 3:
            x = np.repeat(x, 3, axis=0)
        out[i] = (x - mean[:, None, None]) / std[:, None, None]
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------- backend


class OnnxBackend:
    """A litefer classifier exported to ONNX, run with ONNX Runtime (CPU by default).

    ``source``: an ``.onnx`` file (with its sidecar or embedded metadata), or a
    checkpoint path / bundled model name, which is exported once and cached
    (:func:`ensure_onnx`).  ``threads``: ONNX Runtime intra-op threads (None: all cores).
    ``spin``: let idle ORT threads busy-wait (lowest latency for a classifier running
    alone; off by default because it starves the face detector in a pipeline).
    Satisfies the ``ClassifierBackend`` protocol: ``predict(batch) -> probs``.
    """

    kind = "onnx"

    def __init__(self, source: str | os.PathLike = "default", *, threads: Optional[int] = None,
                 providers: Optional[Sequence[str]] = None, spin: bool = False):
        path = Path(source)
        if path.suffix.lower() in CHECKPOINT_SUFFIXES or (not path.suffix and not path.exists()):
            path = ensure_onnx(source)  # a checkpoint or a bundled model name
        if not path.is_file():
            raise OnnxBackendError(f"{path}: no such ONNX file")
        self.path = path
        self.meta = read_sidecar(path)
        ort = _ort()
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.inter_op_num_threads = 1
        if not spin:
            # idle ORT threads would otherwise busy-wait and steal the cores that the face
            # detector needs between two classifier calls (end-to-end pipelines)
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads is not None:
            so.intra_op_num_threads = int(threads)
        self.threads = threads
        try:
            self.session = ort.InferenceSession(str(path), so, providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as exc:
            raise OnnxBackendError(f"{path}: ONNX Runtime cannot load it ({exc})") from None
        self.input_name = self.meta["input"].get("name") or self.session.get_inputs()[0].name
        self.output_name = self.meta["output"].get("name") or self.session.get_outputs()[0].name
        self.output_kind = self.meta["output"].get("kind", "logits")
        self.labels = list(self.meta["labels"])
        self.preprocess = dict(self.meta["preprocess"])
        self.input_size = int(self.preprocess["size"])
        self.channels = int(self.preprocess["channels"])
        self.arch = self.meta.get("arch", "?")
        self.int8 = bool(self.meta.get("quantization"))
        shape = self.meta["input"].get("shape") or self.session.get_inputs()[0].shape
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None

    def __repr__(self) -> str:
        return f"OnnxBackend({str(self.path)!r}, arch={self.arch}, int8={self.int8})"

    def _run(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        want = (self.channels, self.input_size, self.input_size)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != want:
            raise ValueError(f"expected a float32 batch of shape (N, {', '.join(map(str, want))}), "
                             f"got {tuple(batch.shape)}")
        if self.fixed_batch is None or len(batch) == self.fixed_batch:
            return self.session.run([self.output_name], {self.input_name: batch})[0]
        if len(batch) == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        fb = self.fixed_batch  # an export with a fixed batch: run it in chunks, pad the last
        outs = []
        for i in range(0, len(batch), fb):
            chunk = batch[i:i + fb]
            n = len(chunk)
            if n < fb:
                chunk = np.concatenate([chunk, np.zeros((fb - n, *want), np.float32)])
            outs.append(self.session.run([self.output_name], {self.input_name: chunk})[0][:n])
        return np.concatenate(outs)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        if self.output_kind != "logits":
            raise OnnxBackendError(f"{self.path}: the model outputs {self.output_kind}, not logits")
        return self._run(batch)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities (N, C) of a preprocessed float32 NCHW batch."""
        out = self._run(batch).astype(np.float32, copy=False)
        return softmax(out) if self.output_kind == "logits" else out

    __call__ = predict

    def preprocess_faces(self, faces: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        return preprocess_faces(faces, self.preprocess)

    def predict_faces(self, faces: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Class probabilities of uint8 face crops (preprocessed as the sidecar says)."""
        return self.predict(self.preprocess_faces(faces))


# --------------------------------------------------------------------------- cache


def cache_dir() -> Path:
    """``$LITEFER_CACHE``, else ``~/.cache/litefer`` (the folder the data cache uses too;
    exports live under its ``onnx/`` sub-folder)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "litefer"


def resolve_checkpoint(source: str | os.PathLike) -> Path:
    """A checkpoint path, or the file of a bundled model name (``default``), without torch."""
    p = Path(source)
    if p.is_file():
        return p
    name = str(source)
    if os.sep not in name and "/" not in name and not p.suffix:
        bundled = Path(str(resources.files("litefer") / "assets" / f"{name}.safetensors"))
        if bundled.is_file():
            return bundled
        raise OnnxBackendError(f"bundled model {name!r} is not installed ({bundled} is missing)")
    raise OnnxBackendError(f"{p}: no such checkpoint file")


def ensure_onnx(checkpoint: str | os.PathLike = "default", *, int8: bool = False,
                cache: str | os.PathLike | None = None, calib_count: int = 300) -> Path:
    """Path of a cached ONNX export of ``checkpoint`` (a path or a bundled model name).

    The cache entry is keyed by the checkpoint's sha256 (and the export recipe), so a
    changed checkpoint is re-exported and an unchanged one is exported only once.
    On a cache hit nothing but hashing happens (no torch); on a miss the model is
    exported (and, with ``int8``, quantised with FER2013 training images for
    calibration), which needs PyTorch.
    """
    ckpt = resolve_checkpoint(checkpoint)
    digest = file_sha256(ckpt)
    root = Path(cache).expanduser() if cache is not None else cache_dir()
    entry = root / "onnx" / f"{digest[:24]}-r{CACHE_RECIPE}"
    name = "model.int8.onnx" if int8 else "model.onnx"
    target = entry / name
    if target.is_file() and sidecar_path(target).is_file():
        try:
            meta = read_sidecar(target)
        except OnnxBackendError:
            meta = {}
        if meta.get("source", {}).get("sha256") == digest:
            return target
    entry.mkdir(parents=True, exist_ok=True)
    fp32 = entry / "model.onnx"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=entry))
    try:
        if not (fp32.is_file() and sidecar_path(fp32).is_file()):
            from litefer.deploy.export import export_onnx  # needs torch
            res = export_onnx(ckpt, tmp / "model.onnx")
            _publish(res.path, fp32)
        if int8:
            from litefer.deploy.quantize import quantize_onnx
            q = quantize_onnx(fp32, tmp / "model.int8.onnx", calib_count=calib_count)
            _publish(q, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _publish(src: Path, dst: Path) -> None:
    """Move ``src`` and its sidecar to ``dst`` (sidecar last, so a half-written entry
    never looks complete); a racing writer's identical result is simply replaced."""
    os.replace(src, dst)
    os.replace(sidecar_path(src), sidecar_path(dst))
