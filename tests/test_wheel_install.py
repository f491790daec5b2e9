"""`pip install litefer` alone: the wheel carries the model, the detectors and their
licences, installs without torch, and `litefer predict` recognises the example photo."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # a fresh virtual environment: about a minute on 2 cores


def test_wheel_in_a_fresh_torch_free_venv(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(REPO / "litefer", src / "litefer", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    dist = tmp_path / "dist"
    # setuptools' PEP 517 backend, as pip/build would call it (no network, no isolation needed)
    build = subprocess.run([sys.executable, "-c", f"from setuptools import build_meta as b; "
                            f"print(b.build_wheel({str(dist)!r}))"], cwd=src, capture_output=True, text=True,
                           timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = dist / build.stdout.strip().splitlines()[-1]
    import zipfile
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("litefer/assets/default.onnx", "litefer/assets/default.safetensors", "litefer/assets/example.jpg",
              "litefer/assets/detectors/mtcnn_pnet.onnx", "litefer/assets/detectors/LICENSES.md",
              "litefer/assets/detectors/face_detection_yunet_2023mar.onnx",
              "litefer/assets/detectors/face_detection_short_range.tflite"):
        assert f in names, f
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = "1"
    inst = subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], capture_output=True, text=True,
                          env=env, timeout=900)
    if inst.returncode != 0 and ("No matching distribution" in inst.stderr or "Could not find" in inst.stderr):
        pytest.skip(f"the package index cannot provide litefer's dependencies here: {inst.stderr[-500:]}")
    assert inst.returncode == 0, inst.stderr[-3000:]
    no_torch = subprocess.run([str(py), "-c", "import torch"], capture_output=True, text=True, env=env)
    assert no_torch.returncode != 0, "the base install pulled in torch"
    out = subprocess.run([str(env_dir / "bin" / "litefer"), "predict", "--example", "--format", "json"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    (line,) = [json.loads(x) for x in out.stdout.splitlines() if x.strip()]
    assert len(line["faces"]) == 1 and line["faces"][0]["label"] == "happy"
    assert str(env_dir) in line["path"]            # the installed copy of the example, not the repo's
    # a command of the train extra says what to install instead of a traceback
    models = subprocess.run([str(env_dir / "bin" / "litefer"), "models"], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=120)
    assert models.returncode == 2 and "litefer[train]" in models.stderr and "Traceback" not in models.stderr
