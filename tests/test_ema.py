"""Weight averaging (``train.ema_decay``): the update rule, resume, and what selection sees."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from litefer.training import config_from_dict, train
from litefer.training.config import ConfigError
from litefer.training.ema import ModelEma
from litefer.training.trainer import TrainingInterrupted

from fixtures.models import TINY


def test_update_rule_buffers_and_state_round_trip():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    ema = ModelEma(net, 0.99)
    start = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
        net[1].running_mean.add_(2.0)
        net[1].num_batches_tracked.add_(5)
    ema.update(net)
    d = min(0.99, 2 / 11)                      # the ramp: (1 + n) / (10 + n) after n = 1 update
    assert ema.current_decay() == pytest.approx(d)
    for k, v in ema.module.state_dict().items():
        now = net.state_dict()[k]
        if v.dtype.is_floating_point:
            torch.testing.assert_close(v, d * start[k] + (1 - d) * now)
        else:
            assert torch.equal(v, now)              # integer buffers are copied
    assert all(not p.requires_grad for p in ema.module.parameters()) and not ema.module.training
    for _ in range(2000):
        ema.update(net)
    assert ema.current_decay() == 0.99
    other = ModelEma(nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)), 0.99)
    other.load_state_dict(ema.state_dict())
    assert other.updates == ema.updates
    for k, v in other.module.state_dict().items():
        assert torch.equal(v, ema.module.state_dict()[k])
    with pytest.raises(ValueError):
        ModelEma(net, 1.0)


def _cfg(**train_kw):
    return config_from_dict({
        "data": {"dataset": "synthetic", "num_classes": 4, "val_split": "val", "test_split": "test",
                 "options": {"n_train": 160, "n_val": 48, "n_test": 48, "size": 24}},
        "model": {"arch": TINY, "in_chans": 1, "input_size": 24},
        "optim": {"name": "adam", "lr": 3e-3},
        "train": {"epochs": 3, "batch_size": 16, "progress": False, "tensorboard": False, "seed": 0,
                  "ema_decay": 0.9, **train_kw},
        "aug": {"hflip": 0.5},
    }, name="ema")


def test_config_checks_the_decay():
    with pytest.raises(ConfigError, match="ema_decay"):
        _cfg(ema_decay=1.5)


def test_selection_and_test_use_the_average_and_a_resume_is_exact(tmp_path, tiny_arch):
    straight = train(_cfg(), out_dir=tmp_path / "a", quiet=True)
    last = torch.load(tmp_path / "a" / "last.pt", map_location="cpu", weights_only=True)
    best = torch.load(tmp_path / "a" / "best.pt", map_location="cpu", weights_only=True)
    ema = last["training_state"]["ema"]
    assert ema["updates"] == 3 * 10
    # one epoch: it is the selected one, so best.pt must hold the average, not the raw weights
    one = train(_cfg(epochs=1), out_dir=tmp_path / "one", quiet=True)
    assert one.best_epoch == 1
    l1 = torch.load(tmp_path / "one" / "last.pt", map_location="cpu", weights_only=True)
    b1 = torch.load(tmp_path / "one" / "best.pt", map_location="cpu", weights_only=True)
    e1 = l1["training_state"]["ema"]["state_dict"]
    floats = [n for n, v in e1.items() if v.dtype.is_floating_point]
    assert any(not torch.equal(l1["state_dict"][n], e1[n]) for n in floats)
    for n in e1:
        assert torch.equal(b1["state_dict"][n], e1[n]), n
    assert ema["updates"] == 3 * 10 and best["metrics"]["best_epoch"] == straight.best_epoch

    def hook(e, i):
        if (e, i) == (1, 4):
            import os
            import signal
            os.kill(os.getpid(), signal.SIGTERM)
    with pytest.raises(TrainingInterrupted):
        train(_cfg(), out_dir=tmp_path / "b", quiet=True, on_step=hook)
    resumed = train(_cfg(), out_dir=tmp_path / "b", resume=tmp_path / "b", quiet=True)
    lb = torch.load(tmp_path / "b" / "last.pt", map_location="cpu", weights_only=True)
    for n, v in ema["state_dict"].items():
        assert torch.equal(v, lb["training_state"]["ema"]["state_dict"][n]), n
    drop = ("time_s", "images_per_s")
    strip = lambda h: [{a: b for a, b in r.items() if a not in drop} for r in h]  # noqa: E731
    assert strip(straight.history) == strip(resumed.history)
    assert straight.test_metrics == resumed.test_metrics
