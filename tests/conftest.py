"""Shared test fixtures: the real-data root and small helpers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from litefer.data.base import DATA_ENV, data_root

REPO = Path(__file__).resolve().parents[1]

# one intra-op thread: the suite is many small models, where threading only adds overhead
torch.set_num_threads(1)


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


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
