"""Real training on the real FER2013 (skipped, with the reason, when it is absent).

A few minutes on one CPU thread: mini-Xception from ``configs/mini_xception_fer2013.yaml``
trained for 3 short epochs on a seeded 6,000-image sample of Training, selected on the
whole PublicTest.  It must beat the majority-class baseline on PublicTest by a wide
margin, an interrupted run resumed from ``last.pt`` must end bit-identical to the
uninterrupted one, and ``litefer evaluate`` must write its report and confusion matrix.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import require_dataset

pytestmark = [pytest.mark.realdata, pytest.mark.slow]   # minutes of real training

REPO = Path(__file__).resolve().parents[1]
N_TRAIN, EPOCHS = 6000, 3


@pytest.fixture(scope="module")
def setup():
    root = require_dataset("fer2013")
    from litefer.training.config import load_config
    from litefer.training.trainer import DataSplits, prepare_data
    cfg = load_config(REPO / "configs" / "mini_xception_fer2013.yaml", [
        f"data.root={root}", f"train.epochs={EPOCHS}", "train.early_stopping=0",
        "sched.warmup_epochs=0", "train.progress=false", "train.tensorboard=false"])
    full = prepare_data(cfg)
    assert full.info["n_train"] == 28709 and full.info["n_val"] == 3589      # Training / PublicTest
    pick = np.sort(np.random.default_rng(0).choice(len(full.train), N_TRAIN, replace=False))
    data = DataSplits(full.train.subset(pick), full.val, None, {**full.info, "n_train": N_TRAIN, "n_test": 0})
    return cfg, data


@pytest.fixture(scope="module")
def straight(setup, tmp_path_factory):
    from litefer.training.trainer import train
    cfg, data = setup
    return train(cfg, out_dir=tmp_path_factory.mktemp("straight"), data=data, quiet=True)


def test_real_training_beats_the_majority_baseline(setup, straight):
    _, data = setup
    counts = np.bincount(data.val.hard_targets, minlength=len(data.val.labels))
    majority = counts.max() / counts.sum()                                  # "always happy": ~25 %
    best = max(r["val_acc"] for r in straight.history)
    assert len(straight.history) == EPOCHS
    assert best >= majority + 0.10, f"PublicTest accuracy {best:.3f} vs majority baseline {majority:.3f}"
    assert straight.history[-1]["train_loss"] < straight.history[0]["train_loss"]


def test_resume_on_real_data_is_exact(setup, straight, tmp_path):
    from litefer.training.trainer import train
    cfg, data = setup
    part = train(cfg, out_dir=tmp_path, data=data, max_epochs=EPOCHS - 1, quiet=True)
    resumed = train(cfg, out_dir=tmp_path, data=data, resume=part.last_checkpoint, quiet=True)
    a = torch.load(straight.last_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    b = torch.load(resumed.last_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["val_acc"] for r in resumed.history] == [r["val_acc"] for r in straight.history]


def test_evaluate_writes_report_and_confusion_matrix(straight, tmp_path):
    from typer.testing import CliRunner
    from litefer.cli import app
    root = require_dataset("fer2013")
    out = tmp_path / "eval"
    r = CliRunner().invoke(app, ["evaluate", str(straight.best_checkpoint), "--dataset", "fer2013",
                                 "--split", "privatetest", "--root", str(root), "--out", str(out)])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["n"] == 3589 and 0.3 < m["accuracy"] < 1.0
    assert (out / "report.md").read_text().count("|") > 20
    png = (out / "confusion.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
