"""Shared test fixtures and helpers: the real-data root, the bundled model, a real photo,
registry hygiene and the golden-file (expect) switch.

Helpers used by several test files live here or in ``tests/fixtures`` (one copy each):
``require_dataset``, ``require_bundled_model``, ``bundled_names``, ``real_photo``,
``EXAMPLE``; ``fixtures.models`` holds ``Tiny``, ``registered_model`` and the BatchNorm
randomisers.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from litefer.data.base import DATA_ENV, data_root

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "litefer" / "assets" / "example.jpg"
#: where the example photo's one face is (x1, y1, x2, y2), by eye
EXAMPLE_FACE = (172, 60, 275, 178)
#: the expression everyone agrees the example photo shows (a smiling astronaut)
EXAMPLE_LABEL = "happy"

# one intra-op thread: the suite is many small models, where threading only adds overhead
torch.set_num_threads(1)


def pytest_addoption(parser):
    parser.addoption("--regen-expect", action="store_true", default=False,
                     help="Rewrite the golden files under tests/expect/ instead of comparing with them "
                          "(same as LITEFER_REGEN_EXPECT=1).")


def regen_expect(config) -> bool:
    return bool(config.getoption("--regen-expect")) or os.environ.get("LITEFER_REGEN_EXPECT") == "1"


def _root() -> Path:
    root = data_root()
    if not root.is_absolute():
        # relative to the repository, so the tests work from any working directory
        root = (REPO / root).resolve() if not root.exists() else root.resolve()
    return root


@pytest.fixture(scope="session")
def real_data_root() -> Path:
    return _root()


def require_dataset(sub: str) -> Path:
    """Path of a real dataset folder, or skip the test with the reason."""
    p = _root() / sub
    if not p.is_dir():
        pytest.skip(f"real dataset {sub!r} not found at {p} (set ${DATA_ENV} to the folder holding it)")
    return p


def bundled_names() -> list[str]:
    """Every bundled model name (the package ships their weights)."""
    from litefer.models.checkpoint import BUNDLED
    return sorted(BUNDLED)


def require_bundled_model(name: str = "default") -> Path:
    """The bundled weights ship with the package: their absence is a failure, not a skip."""
    from litefer.models.checkpoint import bundled_path
    p = bundled_path(name)
    if not p.is_file():
        pytest.fail(f"the bundled model {name!r} is missing: {p}")
    return p


def real_photo() -> Path:
    """A real photo with one face whose expression is known: the bundled example (happy)."""
    if not EXAMPLE.is_file():
        pytest.fail(f"the bundled example photo is missing: {EXAMPLE}")
    return EXAMPLE


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _registries_restored():
    """Whatever a test registers (models, face detectors) is gone after it, so no test
    depends on another having run first. Fixtures of wider scope that register on purpose
    (``fixtures.models.registered_model``) are set up before this snapshot and kept."""
    from litefer.models._registry import _REGISTRY
    from litefer.vision.detect import _DETECTORS
    models, detectors = dict(_REGISTRY), dict(_DETECTORS)
    yield
    for reg, before in ((_REGISTRY, models), (_DETECTORS, detectors)):
        if reg != before:
            reg.clear()
            reg.update(before)


@pytest.fixture()
def one_thread():
    """One intra-op torch thread for the test (the suite shares a small CPU), restored after."""
    import torch
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def tiny_arch():
    """``fixtures.models.Tiny`` registered as ``litefer_test_tiny`` for one test module."""
    from fixtures.models import registered_model
    with registered_model() as name:
        yield name


@pytest.fixture(scope="session")
def bundled_onnx(tmp_path_factory) -> Path:
    """The bundled ``default`` model exported to ONNX once per session (a few seconds)."""
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install 'litefer[onnx]')")
    require_bundled_model()
    from litefer.deploy.export import export_onnx
    return export_onnx("default", tmp_path_factory.mktemp("onnx") / "default.onnx").path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Say which random test order ran (``make test`` is quiet, so pytest-randomly's header is not shown)."""
    seed = getattr(config.option, "randomly_seed", None)
    if config.pluginmanager.hasplugin("randomly") and isinstance(seed, int):
        terminalreporter.write_line(f"test order: random, seed {seed} (repeat it with --randomly-seed={seed}; "
                                    "-p no:randomly runs the file order)")
