"""``train.micro_batch``: a batch run as slices with gradients accumulated is the same step
(same gradient of the batch-mean loss, centre-loss centres included) for a network without
BatchNorm, resumes exactly, and ``auto`` is measured like the other step options."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn as nn

from litefer.training import config_from_dict, train
from litefer.training.budget import measure
from litefer.training.speed import autotune, batch_slices, micro_batch_candidates

from fixtures.models import TINY, registered_model

NOBN = "litefer_test_nobn"
SEEN: list[int] = []          # batch sizes the no-BN model was trained on


class NoBN(nn.Module):
    """Tiny's shape without BatchNorm or dropout: a slice's gradient depends on its samples only."""

    def __init__(self, num_classes: int = 7, in_chans: int = 1):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_chans, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.num_features = 64
        self.head = nn.Linear(64, num_classes)

    def forward_features(self, x):
        if self.training:
            SEEN.append(x.shape[0])
        return self.body(x)

    def forward_head(self, f):
        return self.head(f)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


@pytest.fixture(scope="module")
def nobn():
    with registered_model(NOBN, lambda num_classes=7, in_chans=1, **kw: NoBN(num_classes, in_chans)) as name:
        yield name


def _cfg(arch: str, **train_kw):
    return config_from_dict({
        "data": {"dataset": "synthetic", "num_classes": 4, "val_split": "val", "test_split": "test",
                 "options": {"n_train": 96, "n_val": 32, "n_test": 32, "size": 24}},
        "model": {"arch": arch, "in_chans": 1, "input_size": 24},
        # SGD: the update is linear in the gradient, so rounding differences stay rounding-sized
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "sched": {"name": "cosine"},
        "loss": {"label_smoothing": 0.1, "center": {"weight": 0.05}},
        "train": {"epochs": 2, "batch_size": 16, "progress": False, "tensorboard": False, "seed": 0,
                  "autotune": False, **train_kw},
        "aug": {"hflip": 0.5, "rotation": 8, "scale": [0.85, 1.0], "erasing": 0.3},
    }, name="mb")


def test_slices_give_the_whole_batch_step_without_batchnorm(nobn, tmp_path):
    SEEN.clear()
    whole = train(_cfg(nobn), out_dir=tmp_path / "whole", quiet=True)
    assert set(SEEN) == {16}
    SEEN.clear()
    sliced = train(_cfg(nobn, micro_batch=6), out_dir=tmp_path / "sliced", quiet=True)   # slices 6 + 6 + 4
    assert sorted(set(SEEN)) == [4, 6] and SEEN[:3] == [6, 6, 4]
    la = torch.load(whole.last_checkpoint, map_location="cpu", weights_only=True)
    lb = torch.load(sliced.last_checkpoint, map_location="cpu", weights_only=True)
    assert lb["training_state"]["step_options"]["micro_batch"] == 6
    for k, v in la["state_dict"].items():
        torch.testing.assert_close(lb["state_dict"][k], v, rtol=1e-4, atol=1e-5, msg=k)
    for k, v in la["training_state"]["criterion"].items():          # the centre loss's centres
        torch.testing.assert_close(lb["training_state"]["criterion"][k], v, rtol=1e-4, atol=1e-5, msg=k)
    for ra, rb in zip(whole.history, sliced.history):
        for key in ("train_loss", "train_ce", "train_center", "train_acc", "val_loss", "val_acc"):
            assert math.isclose(ra[key], rb[key], rel_tol=1e-4, abs_tol=1e-5), (key, ra[key], rb[key])


def test_slices_change_batchnorm_statistics(tiny_arch, tmp_path):
    """With BatchNorm the sliced run is a different run (per-slice statistics): the option
    really changes what is computed, and the config says so."""
    a = train(_cfg(TINY), out_dir=tmp_path / "a", quiet=True)
    b = train(_cfg(TINY, micro_batch=8), out_dir=tmp_path / "b", quiet=True)
    la = torch.load(a.last_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    lb = torch.load(b.last_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    assert any(not torch.allclose(la[k].float(), lb[k].float(), atol=1e-4) for k in la)


def test_micro_batch_candidates():
    assert micro_batch_candidates(64) == [32, 16]
    assert micro_batch_candidates(32) == [16]
    assert micro_batch_candidates(16) == []
    assert micro_batch_candidates(100) == [50, 25]


def test_autotune_measures_slices_and_caches_the_choice(tiny_arch, tmp_path, monkeypatch):
    monkeypatch.setenv("LITEFER_CACHE", str(tmp_path))
    from fixtures.models import Tiny
    model = Tiny(4, 1)
    said: list[str] = []
    opts = autotune(model, TINY, (1, 24, 24), 64, 4, micro=True, steps=3, log=said.append)
    assert opts.micro_batch in (0, 32, 16)
    assert "in slices of 32" in opts.reason and "in slices of 16" in opts.reason
    files = list((tmp_path / "speed").glob("*.json"))
    assert len(files) == 1
    stored = json.loads(files[0].read_text())
    assert stored["options"]["micro_batch"] == opts.micro_batch
    assert any(k.endswith("in slices of 16") for k in stored["results_s_per_step"])
    again = autotune(model, TINY, (1, 24, 24), 64, 4, micro=True, steps=3)
    assert again.micro_batch == opts.micro_batch and again.reason.startswith("cached")
    plain = autotune(model, TINY, (1, 24, 24), 64, 4, micro=False, steps=3)      # its own cache entry
    assert plain.micro_batch == 0 and "slices" not in plain.reason
    assert len(list((tmp_path / "speed").glob("*.json"))) == 2


def test_budget_measures_the_sliced_step(tiny_arch):
    from fixtures.models import Tiny
    ips, eps = measure(Tiny(4, 1), (1, 24, 24), 32, 64, 4, torch.device("cpu"), channels_last=False,
                       autocast=lambda: torch.autocast("cpu", enabled=False), steps=2, micro_batch=8)
    assert ips > 0 and eps > 0 and math.isfinite(ips)


def test_batch_slices_never_leave_a_single_sample():
    assert batch_slices(64, 16) == [slice(0, 16), slice(16, 32), slice(32, 48), slice(48, 64)]
    assert batch_slices(16, 6) == [slice(0, 6), slice(6, 12), slice(12, 16)]
    assert batch_slices(33, 16) == [slice(0, 16), slice(16, 33)]        # not 16 + 16 + 1
    assert batch_slices(20, 0) == batch_slices(20, 20) == batch_slices(20, 32) == [slice(0, 20)]
    for n in range(2, 70):
        for mb in range(2, 40):
            parts = batch_slices(n, mb)
            assert parts[0].start == 0 and parts[-1].stop == n
            assert all(a.stop == b.start for a, b in zip(parts, parts[1:]))
            assert all(s.stop - s.start >= 2 for s in parts)
