"""The litefer ONNX sidecar format: what an exported model carries besides its graph.

An exported model is ``model.onnx`` plus ``model.onnx.json`` (labels, input size,
channels, mean/std, crop, arch, the source checkpoint's sha256, the litefer version);
the same JSON is embedded in the ONNX file's metadata (key ``litefer``), so a lone
``.onnx`` still runs.  Written by :mod:`litefer.deploy.export` and
:mod:`litefer.deploy.quantize`, read by :mod:`litefer.deploy.onnx_backend`.

Torch-free: stdlib and numpy only (``onnx`` when writing, ``onnxruntime`` when reading
metadata embedded in a model that has no sidecar file).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

#: sidecar ``format`` value and the version of the sidecar layout
FORMAT = "litefer-onnx"
FORMAT_VERSION = 1
#: key of the sidecar JSON inside the ONNX model's metadata_props
METADATA_KEY = "litefer"
REQUIRED_FIELDS = ("labels", "preprocess", "input", "output")
#: files taken for checkpoints (exported and cached) rather than ONNX models
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt")


class OnnxBackendError(RuntimeError):
    """An ONNX model or its sidecar is missing, unreadable or inconsistent."""


def ort():
    """The ``onnxruntime`` module, or ModuleNotFoundError saying how to install it."""
    try:
        import onnxruntime
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError("the ONNX backend needs onnxruntime: pip install onnxruntime",
                                  name=exc.name) from None
    return onnxruntime


def sidecar_path(onnx_path: str | os.PathLike) -> Path:
    """``model.onnx`` -> ``model.onnx.json``."""
    return Path(str(onnx_path) + ".json")


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def check_meta(meta: Any, where: str) -> dict:
    """``meta`` if it is valid litefer ONNX metadata, else OnnxBackendError naming ``where`` and the field."""
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
        return check_meta(meta, str(side))
    if not onnx_path.is_file():
        raise OnnxBackendError(f"{onnx_path}: no such ONNX file")
    rt = ort()
    try:
        sess = rt.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        raw = sess.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    except Exception as exc:  # onnxruntime raises its own error types
        raise OnnxBackendError(f"{onnx_path}: unreadable ONNX model ({exc})") from None
    if raw is None:
        raise OnnxBackendError(f"{onnx_path}: no sidecar {side.name} and no embedded litefer metadata; "
                               "export the model with `litefer export`")
    return check_meta(json.loads(raw), str(onnx_path))


def strip_debug_info(model) -> None:
    """Drop the per-node debugging records an exporter leaves in an ONNX graph (torch's
    dynamo exporter stores each node's Python stack trace, class hierarchy and FX node
    there, i.e. absolute paths of the machine that exported it): a shipped model must not
    carry them, and no runtime reads them."""
    todo = [model.graph, *model.functions]          # graphs and local functions hold nodes
    while todo:
        for node in todo.pop().node:
            node.doc_string = ""
            del node.metadata_props[:]
            for a in node.attribute:                  # subgraphs (If / Loop bodies)
                if a.HasField("g"):
                    todo.append(a.g)
                todo.extend(a.graphs)


def write_meta(onnx_path: Path, meta: dict) -> None:
    """Embed ``meta`` in the ONNX file (metadata_props) and write the sidecar next to it."""
    import onnx  # the onnx package only; no torch
    model = onnx.load(str(onnx_path))
    strip_debug_info(model)
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


def resolve_checkpoint(source: str | os.PathLike) -> Path:
    """A checkpoint path, or the file of a bundled model name (``default``), without torch."""
    from litefer.paths import asset
    p = Path(source)
    if p.is_file():
        return p
    name = str(source)
    if os.sep not in name and "/" not in name and not p.suffix:
        bundled = asset(f"{name}.safetensors")
        if bundled.is_file():
            return bundled
        raise OnnxBackendError(f"bundled model {name!r} is not installed ({bundled} is missing)")
    raise OnnxBackendError(f"{p}: no such checkpoint file")


def bundled_onnx(name: str) -> Path | None:
    """The ONNX export of a bundled model that ships next to its weights
    (``litefer/assets/<name>.onnx``), when it is there and was exported from exactly
    these weights (its sidecar's source sha256); else None."""
    from litefer.paths import asset
    onnx_path, weights = asset(f"{name}.onnx"), asset(f"{name}.safetensors")
    if not (onnx_path.is_file() and sidecar_path(onnx_path).is_file() and weights.is_file()):
        return None
    try:
        meta = read_sidecar(onnx_path)
    except OnnxBackendError:
        return None
    return onnx_path if meta.get("source", {}).get("sha256") == file_sha256(weights) else None
