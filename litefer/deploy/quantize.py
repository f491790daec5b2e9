"""Post-training static int8 quantisation of exported ONNX models (ONNX Runtime).

>>> from litefer.deploy.quantize import quantize_onnx
>>> quantize_onnx("model.onnx", "model.int8.onnx")          # calibrates on 300 FER2013 train faces

Recipe: ONNX Runtime's ``quant_pre_process`` (shape inference + graph optimisation),
then ``quantize_static`` in QDQ format — weights int8 per output channel (symmetric),
activations uint8 per tensor (asymmetric), ranges from min/max (or percentile/entropy)
calibration on a few hundred **real training images** (FER2013 ``train`` through
:func:`litefer.data.load_dataset`, sampled with a fixed seed and preprocessed exactly
as the model's sidecar says).  Without the dataset the call fails with
:class:`CalibrationDataError` rather than calibrating on noise; pass ``faces=`` to
calibrate on images of your own.

The result is a normal litefer ONNX export (sidecar included) whose sidecar gains a
``quantization`` entry (scheme, calibration set, fp32 source sha256).  Accuracy cost
on FER2013 PrivateTest: see ``docs/benchmarks.md``.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

from litefer.deploy.sidecar import OnnxBackendError, file_sha256, read_sidecar, sidecar_path, write_meta
from litefer.preprocess import preprocess_faces

CALIB_METHODS = ("minmax", "percentile", "entropy")


class QuantizationError(RuntimeError):
    pass


class CalibrationDataError(QuantizationError):
    """No real images to calibrate on."""


def calibration_faces(dataset: str = "fer2013", count: int = 300, seed: int = 0,
                      root: str | os.PathLike | None = None, split: str = "train") -> tuple[np.ndarray, dict]:
    """``count`` uint8 faces sampled (fixed seed, stratified by class) from a dataset's
    training split, and a description of the sample for the sidecar."""
    if count < 1:
        raise CalibrationDataError(f"calibration count must be positive, got {count}")
    try:
        from litefer.data import dataset_root, load_dataset
        from litefer.data.base import DATA_ENV
    except ImportError as exc:  # pragma: no cover - the data layer is part of litefer
        raise CalibrationDataError(f"int8 calibration needs real training images, but the litefer data "
                                   f"readers are unavailable ({exc})") from None
    try:
        where = Path(root) if root is not None else dataset_root(dataset)
    except Exception as exc:
        raise CalibrationDataError(f"int8 calibration needs real training images: {exc}") from None
    try:
        arrays = load_dataset(dataset, root=root, split=split)
    except Exception as exc:
        raise CalibrationDataError(
            f"cannot load calibration images ({dataset} {split}) from {where}: {exc}. int8 calibration "
            f"needs real training images: set ${DATA_ENV} to the folder holding {dataset}/ (or give its "
            "folder as calib_root / --calib-root), or pass "
            "faces= (library) / another --calib-dataset (CLI)") from None
    n = len(arrays)
    if n == 0:
        raise CalibrationDataError(f"{dataset} {split} at {where} holds no images")
    rng = np.random.default_rng(seed)
    y = arrays.hard_targets
    # stratified: every class in proportion to its frequency, at least one image each
    picks = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        k = max(1, int(round(count * len(idx) / n)))
        picks.append(rng.choice(idx, size=min(k, len(idx)), replace=False))
    sel = np.concatenate(picks)
    rng.shuffle(sel)
    sel = np.sort(sel[:count])
    desc = {"dataset": dataset, "split": split, "count": int(len(sel)), "seed": seed,
            "sampling": "stratified by class", "ids_sha256": _ids_digest([arrays.ids[i] for i in sel])}
    return arrays.images[sel], desc


def _ids_digest(ids: list[str]) -> str:
    import hashlib
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


class _Reader:
    """onnxruntime CalibrationDataReader over a preprocessed float32 batch."""

    def __init__(self, x: np.ndarray, input_name: str, batch_size: int):
        self.x, self.name, self.bs = x, input_name, batch_size
        self.i = 0

    def get_next(self):
        if self.i >= len(self.x):
            return None
        b = self.x[self.i:self.i + self.bs]
        self.i += self.bs
        return {self.name: b}

    def rewind(self):
        self.i = 0


def quantize_onnx(fp32_path: str | os.PathLike, out: str | os.PathLike | None = None, *,
                  faces: Optional[np.ndarray] = None, calib_dataset: str = "fer2013", calib_count: int = 300,
                  calib_root: str | os.PathLike | None = None, seed: int = 0, method: str = "minmax",
                  per_channel: bool = True, reduce_range: bool = True, force: bool = False) -> Path:
    """Quantise an exported fp32 litefer ONNX model to int8 (QDQ) and write its sidecar.

    ``out`` defaults to ``<name>.int8.onnx`` beside the input.  ``faces``: uint8 face
    crops to calibrate on instead of ``calib_count`` images of ``calib_dataset``'s
    training split.  ``reduce_range`` (default) quantises weights to 7 bits: on x86 CPUs
    without VNNI (AVX2 only) ONNX Runtime's uint8 x int8 kernels can saturate with full
    8-bit weights — measured here, a mini_xception kept only 60 % of its fp32 top-1
    predictions with 8-bit weights and 95 % with 7-bit ones.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_path = Path(fp32_path)
    if method not in CALIB_METHODS:
        raise QuantizationError(f"calibration method must be one of {', '.join(CALIB_METHODS)}")
    try:
        meta = read_sidecar(fp32_path)
    except OnnxBackendError as exc:
        raise QuantizationError(str(exc)) from None
    if meta.get("quantization"):
        raise QuantizationError(f"{fp32_path} is already quantised")
    out = Path(out) if out is not None else fp32_path.with_name(fp32_path.name[:-len(".onnx")] + ".int8.onnx"
                                                                if fp32_path.name.endswith(".onnx")
                                                                else fp32_path.name + ".int8.onnx")
    for p in (out, sidecar_path(out)):
        if p.exists() and not force:
            raise QuantizationError(f"{p} already exists; pass --force (force=True) to overwrite it")

    if faces is None:
        faces, calib = calibration_faces(calib_dataset, calib_count, seed, calib_root)
    else:
        calib = {"dataset": "user-supplied", "count": int(len(faces))}
        if len(faces) == 0:
            raise CalibrationDataError("no calibration faces given")
    x = preprocess_faces(faces, meta["preprocess"])
    shape0 = meta["input"]["shape"][0]
    if isinstance(shape0, int):  # a fixed-batch export: whole batches only
        bs = shape0
        if len(x) % bs:
            x = x[: len(x) - len(x) % bs] if len(x) >= bs else np.repeat(x, bs, axis=0)[:bs]
    else:  # equal batches (the histogram calibrators cannot mix batch sizes)
        bs = max(d for d in range(1, min(32, len(x)) + 1) if len(x) % d == 0)

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    work = Path(tempfile.mkdtemp(prefix="litefer-quant-"))
    try:
        pre = work / "pre.onnx"
        # shape inference + optimisation; ORT's symbolic shape inference fails on some
        # graphs (e.g. a_mobilenet's), then ONNX's own shape inference alone is used
        prep = "quant_pre_process"
        try:
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=False)
        except Exception:
            try:
                quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
                prep = "quant_pre_process (without symbolic shape inference)"
            except Exception:
                shutil.copyfile(fp32_path, pre)
                prep = "none (quant_pre_process failed)"
        q = work / "int8.onnx"
        with contextlib.redirect_stdout(sys.stderr):  # ORT's calibrators print progress; keep stdout clean
            quantize_static(str(pre), str(q), _Reader(x, meta["input"]["name"], bs),
                            quant_format=QuantFormat.QDQ, per_channel=per_channel, reduce_range=reduce_range,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=methods[method],
                            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
                            calibration_providers=["CPUExecutionProvider"])
        qmeta = json.loads(json.dumps(meta))
        qmeta["quantization"] = {
            "tool": "onnxruntime.quantization.quantize_static", "format": "QDQ",
            "weights": f"int8 symmetric, {'per channel' if per_channel else 'per tensor'}"
                       f"{', 7-bit (reduce_range)' if reduce_range else ''}",
            "activations": "uint8 asymmetric, per tensor", "calibration_method": method,
            "preprocessing": prep,
            "calibration": calib, "fp32_sha256": file_sha256(fp32_path),
        }
        write_meta(q, qmeta)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(q), str(out))
        shutil.move(str(sidecar_path(q)), str(sidecar_path(out)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out
