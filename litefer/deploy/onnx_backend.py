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

A bundled model ships its ONNX export (``litefer/assets/default.onnx``), so the
bundled model needs no export at all.  The sidecar format lives in
:mod:`litefer.deploy.sidecar`, the preprocessing in :mod:`litefer.preprocess`.
This module imports only numpy and (lazily) onnxruntime and OpenCV; it must never
import torch (a test runs it with torch blocked).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from litefer.deploy.sidecar import (CHECKPOINT_SUFFIXES, FORMAT, FORMAT_VERSION, METADATA_KEY,  # noqa: F401
                                    REQUIRED_FIELDS, OnnxBackendError, bundled_onnx, file_sha256,
                                    read_sidecar, resolve_checkpoint, sidecar_path, write_meta)
from litefer.deploy.sidecar import ort as _ort
from litefer.preprocess import preprocess_faces  # noqa: F401  (the one preprocessing copy)

#: environment variable naming the cache folder (default ``~/.cache/litefer``)
CACHE_ENV = "LITEFER_CACHE"
#: bump when the export recipe changes, so cached exports are rebuilt
CACHE_RECIPE = "1"


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
            path = ensure_onnx(source)  # a checkpoint or a bundled model name (its shipped ONNX)
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
        # batch sizes vary with the number of faces: without this, ONNX Runtime's memory
        # arena grows to the largest batch ever seen and keeps it for the process's life
        so.enable_cpu_mem_arena = False
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


def ensure_onnx(checkpoint: str | os.PathLike = "default", *, int8: bool = False,
                cache: str | os.PathLike | None = None, calib_count: int = 300) -> Path:
    """Path of a cached ONNX export of ``checkpoint`` (a path or a bundled model name).

    The cache entry is keyed by the checkpoint's sha256 (and the export recipe), so a
    changed checkpoint is re-exported and an unchanged one is exported only once.
    On a cache hit nothing but hashing happens (no torch); on a miss the model is
    exported (and, with ``int8``, quantised with FER2013 training images for
    calibration), which needs PyTorch.
    """
    if not int8 and cache is None and not Path(checkpoint).suffix:
        shipped = bundled_onnx(str(checkpoint))  # a bundled model ships its ONNX export
        if shipped is not None:
            return shipped
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
