"""Export litefer models to ONNX: ``model.onnx`` + sidecar ``model.onnx.json``.

>>> from litefer.deploy.export import export_onnx
>>> res = export_onnx("default", "model.onnx")        # a checkpoint path or bundled name
>>> res.path, res.sidecar, res.max_abs_diff

Steps: load the checkpoint (:func:`litefer.models.checkpoint.load_model`), fold
BatchNorm / re-parameterise (:func:`litefer.deploy.fuse`), export with
``torch.onnx.export``, embed the metadata, check the graph with ``onnx.checker`` and
compare ONNX Runtime's output with the *unfused* eager PyTorch model on a random batch
(the export fails if they differ by more than ``atol`` times ``max(1, max |logit|)``).

Exporter: ``"dynamo"`` is the ``torch.export``-based exporter (``dynamo=True``, needs
``onnxscript``), the default of PyTorch >= 2.9 and the one litefer uses by default;
``"torchscript"`` is the legacy TorchScript-based exporter (``dynamo=False``), deprecated
by PyTorch but about 20x faster to run; ``"auto"`` tries dynamo and falls back to
torchscript if dynamo fails.  Both give the same graph up to node naming (parity
is tested for both).

The sidecar JSON (also embedded in the ONNX metadata under the key ``litefer``) holds
everything needed to run the file alone: ``labels``, ``preprocess`` (channels, size,
mean, std, crop), ``input``/``output`` names and shapes, ``arch``/``arch_kwargs``, the
source checkpoint's sha256 and the litefer version.  See :mod:`litefer.deploy.onnx_backend`.
"""
from __future__ import annotations

import contextlib
import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn as nn

from litefer.deploy.sidecar import (FORMAT, FORMAT_VERSION, file_sha256, ort, resolve_checkpoint, sidecar_path,
                                    write_meta)

EXPORTERS = ("auto", "dynamo", "torchscript")
DEFAULT_OPSET = {"dynamo": 18, "torchscript": 17}
INPUT_NAME, OUTPUT_NAME = "input", "logits"


class ExportError(RuntimeError):
    """The export failed, was refused (existing output) or did not match PyTorch."""


@dataclass
class ExportResult:
    path: Path
    sidecar: Path
    meta: dict
    exporter: str
    opset: int
    max_abs_diff: float
    notes: list[str] = field(default_factory=list)


def _litefer_version() -> str:
    from litefer._version import __version__
    return __version__


def check_writable(path: Path, force: bool) -> None:
    """Refuse to overwrite ``path`` or its sidecar unless ``force``."""
    for p in (path, sidecar_path(path)):
        if p.exists() and not force:
            raise ExportError(f"{p} already exists; pass --force (force=True) to overwrite it")
        if p.is_dir():
            raise ExportError(f"{p} is a directory")


def _fuse(model: nn.Module, notes: list[str]) -> tuple[nn.Module, bool]:
    try:
        from litefer.deploy.fuse import fuse
    except ModuleNotFoundError as exc:
        if exc.name not in ("litefer.deploy.fuse",):
            raise
        notes.append("litefer.deploy.fuse not available: exported unfused")
        return model, False
    return fuse(model).eval(), True  # fuse() returns a folded eval-mode copy


def _torch_export(model: nn.Module, example: torch.Tensor, path: Path, exporter: str,
                  opset: int, dynamic_batch: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation/trace chatter; failures still raise
        if exporter == "dynamo":
            dyn = ({0: torch.export.Dim("batch", min=1, max=65536)},) if dynamic_batch else None
            # the dynamo exporter prints its progress to stdout: keep the CLI's stdout clean
            with contextlib.redirect_stdout(io.StringIO()):
                torch.onnx.export(model, (example,), str(path), dynamo=True, opset_version=opset,
                                  input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                  dynamic_shapes=dyn, external_data=False, verbose=False)
        else:
            axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
            torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes=axes, do_constant_folding=True)


def export_model(model: nn.Module, meta: dict, out: str | os.PathLike, *, opset: Optional[int] = None,
                 dynamic_batch: bool = True, fuse: bool = True, exporter: str = "auto",
                 force: bool = False, atol: float = 1e-3, seed: int = 0) -> ExportResult:
    """Export an in-memory model.  ``meta`` holds at least ``labels`` and ``preprocess``
    (``{"channels", "size", "mean", "std", "crop"}``) and optionally ``arch``,
    ``arch_kwargs``, ``source`` ({"checkpoint", "sha256"}) and ``metrics``."""
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter must be one of {', '.join(EXPORTERS)}, not {exporter!r}")
    out = Path(out)
    check_writable(out, force)
    if not out.parent.is_dir():
        raise ExportError(f"{out.parent}: output folder does not exist")
    pre = dict(meta["preprocess"])
    c, s = int(pre["channels"]), int(pre["size"])
    labels = list(meta["labels"])
    notes: list[str] = []
    model = model.eval()
    fused = False
    export_net = model
    if fuse:
        export_net, fused = _fuse(model, notes)

    g = torch.Generator().manual_seed(seed)
    check_x = torch.randn(3 if dynamic_batch else 1, c, s, s, generator=g)
    with torch.no_grad():
        ref = model(check_x).float().numpy()
    if ref.shape != (len(check_x), len(labels)):
        raise ExportError(f"model output {ref.shape} does not match {len(labels)} labels")

    example = torch.randn(2 if dynamic_batch else 1, c, s, s, generator=g)
    tmp = out.with_name(f".tmp-{os.getpid()}-{out.name}")
    order = ["dynamo", "torchscript"] if exporter == "auto" else [exporter]
    used, errors = None, []
    for kind in order:
        op = int(opset) if opset is not None else DEFAULT_OPSET[kind]
        try:
            _torch_export(export_net, example, tmp, kind, op, dynamic_batch)
            used = kind
            break
        except Exception as exc:  # exporter failures come in many types
            errors.append(f"{kind}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            for p in (tmp, Path(str(tmp) + ".data")):
                p.unlink(missing_ok=True)
    if used is None:
        raise ExportError("torch.onnx.export failed: " + "; ".join(errors))
    if errors:
        notes.append("fell back to the torchscript exporter (" + errors[0] + ")")

    batch_dim: Any = "batch" if dynamic_batch else 1
    full = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "litefer_version": _litefer_version(),
        "arch": meta.get("arch"), "arch_kwargs": meta.get("arch_kwargs", {}),
        "labels": labels,
        "preprocess": {**pre, "crop": pre.get("crop", "fer")},
        "input": {"name": INPUT_NAME, "shape": [batch_dim, c, s, s], "dtype": "float32", "layout": "NCHW",
                  "colour": "grey" if c == 1 else "RGB",
                  "normalisation": "(pixel/255 - mean) / std per channel"},
        "output": {"name": OUTPUT_NAME, "shape": [batch_dim, len(labels)], "kind": "logits",
                   "postprocess": "softmax over axis 1"},
        "source": dict(meta.get("source") or {}),
        "export": {"exporter": used, "opset": op, "torch_version": torch.__version__.split("+")[0],
                   "fused": fused, "dynamic_batch": dynamic_batch},
        "quantization": None,
    }
    if meta.get("metrics"):
        full["metrics"] = meta["metrics"]
    try:
        import onnx
        write_meta(tmp, full)
        onnx.checker.check_model(str(tmp))
        so = ort().SessionOptions()
        so.intra_op_num_threads = 1
        sess = ort().InferenceSession(str(tmp), so, providers=["CPUExecutionProvider"])
        got = sess.run([OUTPUT_NAME], {INPUT_NAME: check_x.numpy() if dynamic_batch else check_x.numpy()[:1]})[0]
        diff = float(np.abs(got - ref).max())
        tol = atol * max(1.0, float(np.abs(ref).max()))  # relative for large logits
        if not np.isfinite(diff) or diff > tol:
            raise ExportError(f"ONNX Runtime output differs from PyTorch by {diff:.3g} (> {tol:.3g})")
        full["export"]["max_abs_diff_vs_torch"] = diff
        write_meta(tmp, full)
        os.replace(tmp, out)
        os.replace(sidecar_path(tmp), sidecar_path(out))
    finally:
        tmp.unlink(missing_ok=True)
        sidecar_path(tmp).unlink(missing_ok=True)
    return ExportResult(out, sidecar_path(out), full, used, op, diff, notes)


def export_onnx(checkpoint: str | os.PathLike = "default", out: str | os.PathLike | None = None, *,
                opset: Optional[int] = None, dynamic_batch: bool = True, fuse: bool = True,
                exporter: str = "auto", force: bool = False, atol: float = 1e-3) -> ExportResult:
    """Export a checkpoint (path, or bundled model name such as ``default``) to ONNX.

    ``out`` defaults to ``<checkpoint stem>.onnx`` in the current folder.  An existing
    output (or sidecar) is never overwritten unless ``force``.
    """
    from litefer.models.checkpoint import load_model
    ckpt = resolve_checkpoint(checkpoint)
    out = Path(out) if out is not None else Path.cwd() / f"{ckpt.stem}.onnx"
    check_writable(out, force)  # before the (slow) load and export
    model, mmeta = load_model(ckpt)
    meta = {"arch": mmeta.arch, "arch_kwargs": mmeta.arch_kwargs, "labels": mmeta.labels,
            "preprocess": mmeta.preprocess,
            "source": {"checkpoint": ckpt.name, "bundled": _is_bundled(ckpt), "sha256": file_sha256(ckpt)}}
    if mmeta.extra.get("metrics"):
        meta["metrics"] = mmeta.extra["metrics"]
    return export_model(model, meta, out, opset=opset, dynamic_batch=dynamic_batch, fuse=fuse,
                        exporter=exporter, force=force, atol=atol)


def _is_bundled(p: Path) -> bool:
    from litefer.paths import ASSETS
    return p.resolve().parent == ASSETS.resolve()
