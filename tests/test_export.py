"""ONNX export, the ONNX Runtime backend, int8 quantisation and ``litefer export``.

Parity: every registered model (weights and BatchNorm statistics randomised so the
outputs are O(1), not the near-zero logits of a fresh init) exported, then run with
ONNX Runtime, equals eager PyTorch within 1e-4 — with the default (dynamo) exporter
for one model of each family file, and with the fast legacy exporter (dynamo where
the legacy one cannot) for all of them.  int8: top-1 agreement with fp32 on real
FER2013 PrivateTest faces, for the bundled model when present and for a model
trained here on real FER2013 images (slow).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from litefer.deploy.export import ExportError, export_model, export_onnx
from litefer.deploy.onnx_backend import (OnnxBackend, OnnxBackendError, ensure_onnx, file_sha256,
                                         preprocess_faces, read_sidecar, sidecar_path)
from litefer.models import create_model, list_models, model_info
from litefer.models.checkpoint import ModelMeta, bundled_path, save_safetensors

from conftest import REPO, require_dataset
from fixtures.models import randomise

ATOL = 1e-4
FER7 = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
#: int8 must keep this share of fp32's top-1 predictions on real test faces
INT8_AGREEMENT = {"bundled": 0.97, "quick": 0.93}


def toy_meta(name: str, model: nn.Module, labels=FER7) -> dict:
    c, s = model.default_input
    return {"arch": name, "labels": list(labels),
            "preprocess": {"channels": c, "size": s, "mean": [0.5] * c, "std": [0.5] * c, "crop": "fer"}}


def _family_representatives() -> list[str]:
    seen: dict[str, str] = {}
    for name in list_models():
        seen.setdefault(model_info(name).builder.__module__, name)
    return sorted(seen.values())


def _check_parity(name: str, exporter: str, out: Path) -> tuple[str, float]:
    torch.manual_seed(0)
    model = randomise(create_model(name))
    c, s = model.default_input
    res = export_model(model, toy_meta(name, model), out, exporter=exporter)
    be = OnnxBackend(res.path, threads=1)
    worst, scale = 0.0, 0.0
    for n in (1, 4):  # dynamic batch
        x = torch.randn(n, c, s, s, generator=torch.Generator().manual_seed(n))
        with torch.no_grad():
            ref = model(x).numpy()
        got = be.logits(x.numpy())
        assert got.shape == ref.shape == (n, 7)
        worst = max(worst, float(np.abs(got - ref).max()))
        scale = max(scale, float(np.abs(ref).max()))
        np.testing.assert_allclose(be.predict(x.numpy()), torch.softmax(torch.from_numpy(ref), 1).numpy(),
                                   atol=ATOL)
    assert scale > 0.5, f"{name}: logits too small ({scale:.2g}) for a meaningful parity check"
    assert worst <= ATOL, f"{name} ({res.exporter}): ONNX Runtime differs from PyTorch by {worst:.3g}"
    return res.exporter, worst


@pytest.mark.parametrize("name", _family_representatives())
def test_parity_default_exporter_per_family(name, tmp_path):
    exporter, diff = _check_parity(name, "dynamo", tmp_path / f"{name}.onnx")
    assert exporter == "dynamo"


def _machine_paths(path: Path) -> list[bytes]:
    data = path.read_bytes()
    return [m for m in (str(REPO).encode(), sys.prefix.encode(), b"site-packages") if m in data]


def test_exported_and_shipped_onnx_carry_no_machine_paths(tmp_path):
    """The dynamo exporter records every node's Python stack trace (absolute paths of the
    exporting machine); litefer strips them from whatever it writes, and from what it ships."""
    out = tmp_path / "m.onnx"
    _check_parity("mini_xception", "dynamo", out)
    assert _machine_paths(out) == []
    shipped_models = sorted((REPO / "litefer" / "assets").glob("*.onnx"))
    assert {p.stem for p in shipped_models} >= {"default", "fer2013"}
    for shipped in [*shipped_models, *(REPO / "litefer" / "assets").glob("detectors/*.onnx")]:
        assert _machine_paths(shipped) == [], shipped


@pytest.mark.parametrize("name", list_models())
def test_parity_every_registered_model(name, tmp_path):
    try:  # the legacy exporter is ~20x faster; the dynamo one handles what it cannot
        _check_parity(name, "torchscript", tmp_path / f"{name}.onnx")
    except ExportError as exc:
        if "torch.onnx.export failed" not in str(exc):
            raise
        _check_parity(name, "dynamo", tmp_path / f"{name}.onnx")


def test_export_folds_batchnorm(tmp_path):
    import onnx
    model = randomise(create_model("i_mobilenetv2"))
    res = export_model(model, toy_meta("i_mobilenetv2", model), tmp_path / "m.onnx", exporter="torchscript")
    ops = {n.op_type for n in onnx.load(str(res.path)).graph.node}
    assert res.meta["export"]["fused"] is True
    assert "BatchNormalization" not in ops and "Conv" in ops


# --------------------------------------------------------------------------- checkpoint, sidecar, CLI


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory) -> Path:
    """A real litefer checkpoint (.safetensors) of a randomised mini_xception."""
    torch.manual_seed(0)
    model = randomise(create_model("mini_xception"))
    meta = ModelMeta("mini_xception", FER7, {"channels": 1, "size": 48, "mean": [0.5], "std": [0.5], "crop": "fer"},
                     extra={"metrics": {"note": "randomised test model"}})
    return save_safetensors(tmp_path_factory.mktemp("ckpt") / "mx.safetensors", meta, model.state_dict())


@pytest.fixture(scope="module")
def exported(small_ckpt, tmp_path_factory) -> Path:
    return export_onnx(small_ckpt, tmp_path_factory.mktemp("onnx") / "mx.onnx").path


def test_sidecar_is_self_sufficient(exported, small_ckpt):
    meta = json.loads(sidecar_path(exported).read_text())
    assert meta["format"] == "litefer-onnx"
    assert meta["labels"] == FER7 and meta["arch"] == "mini_xception"
    assert meta["preprocess"] == {"channels": 1, "size": 48, "mean": [0.5], "std": [0.5], "crop": "fer"}
    assert meta["input"]["shape"] == ["batch", 1, 48, 48] and meta["output"]["kind"] == "logits"
    assert meta["source"]["sha256"] == file_sha256(small_ckpt)
    from litefer import __version__
    assert meta["litefer_version"] == __version__
    assert meta["export"]["exporter"] in ("dynamo", "torchscript") and meta["export"]["fused"] is True
    assert meta["export"]["max_abs_diff_vs_torch"] <= ATOL
    assert meta["metrics"] == {"note": "randomised test model"}
    # the same metadata is embedded in the model: a lone .onnx still runs
    import onnxruntime as ort
    embedded = json.loads(ort.InferenceSession(str(exported)).get_modelmeta().custom_metadata_map["litefer"])
    assert embedded == meta


def test_lone_onnx_runs_from_embedded_metadata(exported, tmp_path, rng):
    lone = tmp_path / "lone.onnx"
    lone.write_bytes(exported.read_bytes())
    faces = rng.integers(0, 256, (3, 48, 48), dtype=np.uint8)
    a = OnnxBackend(lone).predict_faces(faces)
    b = OnnxBackend(exported).predict_faces(faces)
    np.testing.assert_array_equal(a, b)
    assert read_sidecar(lone)["labels"] == FER7


def test_onnx_matches_checkpoint_model_on_faces(exported, small_ckpt, rng):
    from litefer.data.transforms import from_preprocess
    from litefer.models.checkpoint import load_model
    model, meta = load_model(small_ckpt)
    faces = rng.integers(0, 256, (5, 48, 48), dtype=np.uint8)
    tf = from_preprocess(meta.preprocess)
    with torch.no_grad():
        ref = torch.softmax(model(torch.stack([tf(f) for f in faces])), 1).numpy()
    np.testing.assert_allclose(OnnxBackend(exported).predict_faces(faces), ref, atol=ATOL)


def test_export_never_overwrites_without_force(exported, small_ckpt):
    before = exported.read_bytes()
    with pytest.raises(ExportError, match="already exists"):
        export_onnx(small_ckpt, exported)
    assert exported.read_bytes() == before
    res = export_onnx(small_ckpt, exported, force=True, exporter="dynamo")
    assert res.path == exported and read_sidecar(exported)["source"]["sha256"] == file_sha256(small_ckpt)


@pytest.mark.parametrize("spec", [
    {"preprocess": {"channels": 1, "size": 48, "mean": [0.5], "std": [0.5]}, "shape": (48, 48)},
    {"preprocess": {"channels": 1, "size": 64, "mean": [0.5], "std": [0.25]}, "shape": (90, 70, 3)},
    {"preprocess": {"channels": 3, "size": 112, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
     "shape": (48, 48)},
    {"preprocess": {"channels": 3, "size": 32, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.3, 0.4]},
     "shape": (100, 80, 3)},
])
def test_numpy_preprocessing_matches_training_transform(spec, rng):
    from litefer.data.transforms import from_preprocess
    faces = [rng.integers(0, 256, spec["shape"], dtype=np.uint8) for _ in range(2)]
    got = preprocess_faces(faces, spec["preprocess"])
    ref = np.stack([from_preprocess(spec["preprocess"])(f).numpy() for f in faces])
    np.testing.assert_allclose(got, ref, atol=1e-6)


def test_numpy_preprocessing_matches_recognizer(rng):
    from litefer.deploy.recognizer import normalise_crops
    crops = [rng.integers(0, 256, (60, 50, 3), dtype=np.uint8), rng.integers(0, 256, (40, 40), dtype=np.uint8)]
    for pre, grey in (({"channels": 1, "size": 48, "mean": [0.5], "std": [0.5]}, False),
                      ({"channels": 3, "size": 56, "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3]}, False),
                      ({"channels": 3, "size": 56, "mean": [0.5] * 3, "std": [0.5] * 3, "grey": True}, True)):
        np.testing.assert_allclose(preprocess_faces(crops, pre), normalise_crops(crops, pre, grey=grey), atol=1e-6)


def test_onnx_backend_runs_without_torch(exported, small_ckpt, tmp_path, rng):
    """The runtime path (including an ensure_onnx cache hit) never imports torch."""
    faces = rng.integers(0, 256, (4, 48, 48), dtype=np.uint8)
    np.save(tmp_path / "faces.npy", faces)
    expected = OnnxBackend(exported).predict_faces(faces)
    cache = tmp_path / "cache"
    cached = ensure_onnx(small_ckpt, cache=cache)  # export now, with torch
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None          # any `import torch` now raises ImportError
        import numpy as np
        from litefer.deploy.onnx_backend import OnnxBackend, ensure_onnx
        faces = np.load({str(tmp_path / 'faces.npy')!r})
        p1 = OnnxBackend({str(exported)!r}).predict_faces(faces)
        path = ensure_onnx({str(small_ckpt)!r}, cache={str(cache)!r})
        assert str(path) == {str(cached)!r}, path
        p2 = OnnxBackend({str(small_ckpt)!r}).predict_faces(faces)   # checkpoint -> cached ONNX
        np.save({str(tmp_path / 'out.npy')!r}, np.stack([p1, p2]))
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules if sys.modules[m] is not None)
    """)
    env = {**os.environ, "LITEFER_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    p1, p2 = np.load(tmp_path / "out.npy")
    np.testing.assert_allclose(p1, expected, atol=1e-6)
    np.testing.assert_allclose(p2, expected, atol=ATOL)


def test_ensure_onnx_caches_by_checkpoint_hash(small_ckpt, tmp_path, monkeypatch):
    import litefer.deploy.export as export_mod
    cache = tmp_path / "cache"
    first = ensure_onnx(small_ckpt, cache=cache)
    assert first.is_file() and sidecar_path(first).is_file()
    assert read_sidecar(first)["source"]["sha256"] == file_sha256(small_ckpt)
    assert file_sha256(small_ckpt)[:24] in str(first)

    def boom(*a, **k):
        raise AssertionError("a cache hit must not export again")
    monkeypatch.setattr(export_mod, "export_onnx", boom)
    assert ensure_onnx(small_ckpt, cache=cache) == first
    monkeypatch.setenv("LITEFER_CACHE", str(cache))
    assert ensure_onnx(small_ckpt) == first
    monkeypatch.undo()
    # different weights under the same file name: a new cache entry
    changed = tmp_path / "mx.safetensors"
    model = randomise(create_model("mini_xception"), seed=1)
    save_safetensors(changed, ModelMeta("mini_xception", FER7, read_sidecar(first)["preprocess"]), model.state_dict())
    second = ensure_onnx(changed, cache=cache)
    assert second != first and read_sidecar(second)["source"]["sha256"] == file_sha256(changed)


def test_backend_errors(tmp_path):
    with pytest.raises(OnnxBackendError, match="no such"):
        OnnxBackend(tmp_path / "missing.onnx")
    with pytest.raises(OnnxBackendError, match="no such checkpoint"):
        ensure_onnx(tmp_path / "missing.safetensors", cache=tmp_path)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(OnnxBackendError):
        OnnxBackend(bad)


def test_cli_export(small_ckpt, tmp_path):
    from typer.testing import CliRunner
    from litefer.cli import app
    out = tmp_path / "cli.onnx"
    runner = CliRunner()
    r = runner.invoke(app, ["export", str(small_ckpt), "--format", "onnx", "--out", str(out),
                            "--exporter", "torchscript", "--fixed-batch", "--opset", "17"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["path"] == str(out) and summary["opset"] == 17 and summary["dynamic_batch"] is False
    meta = read_sidecar(out)
    assert meta["input"]["shape"] == [1, 1, 48, 48]
    be = OnnxBackend(out)
    assert be.predict_faces(np.zeros((3, 48, 48), np.uint8)).shape == (3, 7)  # chunks a fixed batch
    before = out.read_bytes()
    def said(r) -> str:  # rich wraps long lines
        return " ".join(r.output.split())
    r = runner.invoke(app, ["export", str(small_ckpt), "--out", str(out)])
    assert r.exit_code == 2 and "already exists" in said(r) and out.read_bytes() == before
    r = runner.invoke(app, ["export", str(small_ckpt), "--format", "tflite", "--out", str(tmp_path / "x.onnx")])
    assert r.exit_code == 2 and "only onnx" in said(r)
    r = runner.invoke(app, ["export", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "y.onnx")])
    assert r.exit_code == 2 and "no such checkpoint" in said(r)


def test_int8_needs_real_calibration_data(exported, tmp_path):
    from litefer.deploy.quantize import CalibrationDataError, quantize_onnx
    with pytest.raises(CalibrationDataError, match="real training images"):
        quantize_onnx(exported, tmp_path / "q.onnx", calib_root=tmp_path / "no-data")
    assert not (tmp_path / "q.onnx").exists()


# --------------------------------------------------------------------------- int8 on real faces


def _fer2013(split: str):
    require_dataset("fer2013")
    from litefer.data import load_dataset
    return load_dataset("fer2013", split=split)


def _quick_trained_checkpoint(path: Path) -> Path:
    """mini_xception trained for two short epochs on 2,400 real FER2013 training faces."""
    from litefer.data.transforms import from_preprocess
    train = _fer2013("train")
    rng = np.random.default_rng(0)
    idx = rng.choice(len(train), 2400, replace=False)
    pre = {"channels": 1, "size": 48, "mean": [0.5], "std": [0.5], "crop": "fer"}
    tf = from_preprocess(pre)
    x = torch.stack([tf(train.images[i]) for i in idx])
    y = torch.as_tensor(train.hard_targets[idx])
    torch.manual_seed(0)
    model = create_model("mini_xception", num_classes=len(train.labels))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(2):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            b = perm[i:i + 64]
            xb = x[b].flip(3) if i % 128 else x[b]
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), y[b]).backward()
            opt.step()
    return save_safetensors(path, ModelMeta("mini_xception", list(train.labels), pre), model.eval().state_dict())


@pytest.mark.realdata
@pytest.mark.parametrize("subject", ["bundled", pytest.param("quick", marks=pytest.mark.slow)])
def test_int8_keeps_top1_on_real_faces(subject, tmp_path):
    from litefer.deploy.quantize import quantize_onnx
    test = _fer2013("privatetest")
    if subject == "bundled":
        ckpt = bundled_path("default")
        assert ckpt.is_file(), f"the bundled model is missing ({ckpt})"
    else:
        ckpt = _quick_trained_checkpoint(tmp_path / "quick.safetensors")
    fp32 = export_onnx(ckpt, tmp_path / "m.onnx").path
    int8 = quantize_onnx(fp32, tmp_path / "m.int8.onnx", calib_count=300)
    q = read_sidecar(int8)["quantization"]
    assert q["format"] == "QDQ" and q["calibration"]["dataset"] == "fer2013" and q["calibration"]["count"] >= 290
    assert q["calibration"]["split"] == "train" and q["fp32_sha256"] == file_sha256(fp32)
    assert int8.stat().st_size < 0.6 * fp32.stat().st_size

    sel = np.random.default_rng(1).choice(len(test), 1000, replace=False)
    faces, y = test.images[sel], test.hard_targets[sel]
    p32 = OnnxBackend(fp32, threads=1).predict_faces(faces)
    p8 = OnnxBackend(int8, threads=1).predict_faces(faces)
    # the model's classes onto the dataset's by name (the bundled model has FER+'s order;
    # its contempt has no FER2013 counterpart and counts as wrong)
    to_ds = np.array([list(test.labels).index(n) if n in test.labels else -1 for n in read_sidecar(fp32)["labels"]])
    acc32, acc8 = float((to_ds[p32.argmax(1)] == y).mean()), float((to_ds[p8.argmax(1)] == y).mean())
    agree = float((p32.argmax(1) == p8.argmax(1)).mean())
    majority = float(np.bincount(y).max() / len(y))
    # the subject must have learnt something, else agreement would be vacuous
    assert acc32 > majority + 0.03, f"fp32 accuracy {acc32:.3f} vs majority class {majority:.3f}"
    assert agree >= INT8_AGREEMENT[subject], f"int8/fp32 top-1 agreement {agree:.3f} (acc {acc32:.3f} -> {acc8:.3f})"
    assert acc8 >= acc32 - 0.03


# --------------------------------------------------------------------------- `litefer export --int8`


@pytest.mark.realdata
@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy"])
def test_cli_export_int8_each_calibration_method(method, tmp_path):
    """The CLI quantises the bundled model with each calibration method on real FER2013
    training faces; the result is a smaller model that still gives the example photo's
    known answer and agrees with fp32 on real test faces."""
    from typer.testing import CliRunner
    from litefer.cli import app
    from litefer.deploy.recognizer import Recognizer
    from conftest import EXAMPLE, EXAMPLE_LABEL, require_bundled_model
    require_bundled_model()
    require_dataset("fer2013")
    out = tmp_path / "default.int8.onnx"
    r = CliRunner().invoke(app, ["export", "default", "--int8", "--calib-method", method, "--calib-count", "64",
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["int8"] is True and summary["path"] == str(out)
    q = read_sidecar(out)["quantization"]
    assert q["calibration_method"] == method and q["format"] == "QDQ"
    assert q["calibration"]["dataset"] == "fer2013" and q["calibration"]["split"] == "train"
    assert q["calibration"]["count"] == 64
    fp32 = export_onnx("default", tmp_path / "default.onnx").path
    assert out.stat().st_size < 0.6 * fp32.stat().st_size
    (face,) = Recognizer.from_pretrained(out, backend="onnx")(EXAMPLE)
    assert face.label == EXAMPLE_LABEL
    test = _fer2013("privatetest")
    faces = test.images[np.random.default_rng(2).choice(len(test), 300, replace=False)]
    p32 = OnnxBackend(fp32, threads=1).predict_faces(faces)
    p8 = OnnxBackend(out, threads=1).predict_faces(faces)
    assert (p32.argmax(1) == p8.argmax(1)).mean() >= 0.9, method
