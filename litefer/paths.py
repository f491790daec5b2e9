"""The one home of the paths to files that ship inside the litefer package.

>>> from litefer.paths import ASSETS, asset, detector_weights
>>> asset("example.jpg")                       # the bundled example photo
>>> detector_weights("mtcnn_pnet.onnx")        # a bundled face-detector file

Found next to this module, not with ``importlib.resources`` (which trips over some
editable installs).  Torch-free: stdlib only.
"""
from __future__ import annotations

from pathlib import Path

#: folder of the bundled model, its card, the example photo and the detector weights
ASSETS = Path(__file__).resolve().parent / "assets"
#: folder of the bundled face-detector weights (see its LICENSES.md)
DETECTORS = ASSETS / "detectors"
#: bundled classifier names -> weight files in :data:`ASSETS`
BUNDLED = {"default": "default.safetensors", "fer2013": "fer2013.safetensors"}


def asset(name: str) -> Path:
    """The path of a bundled file (it may not exist: callers check and say what is missing)."""
    return ASSETS / name


def detector_weights(name: str) -> Path:
    """The path of a bundled face-detector file."""
    return DETECTORS / name


def example_photo() -> Path:
    return ASSETS / "example.jpg"
