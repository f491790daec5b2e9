"""Training to a wall-clock budget (``train.budget_hours``, ``litefer train --budget``): the
duration syntax, the schedule scaled with the epochs, the epochs that fit, and real runs
sized from a measurement, written to the run folder and resumed on the same schedule."""
from __future__ import annotations

import math

import pytest
import torch
import yaml

from litefer.training import budget as B
from litefer.training import config_from_dict, load_config, train
from litefer.training.config import ConfigError

from fixtures.models import TINY


@pytest.fixture(autouse=True, scope="module")
def _tiny_registered(tiny_arch):
    assert tiny_arch == TINY


@pytest.mark.parametrize("text,hours", [("2h", 2.0), ("90m", 1.5), ("1h30m", 1.5), ("45min", 0.75),
                                        ("3600s", 1.0), ("1.5", 1.5), (" 2 h ", 2.0), ("1d", 24.0), (0.25, 0.25)])
def test_parse_duration(text, hours):
    assert B.parse_duration(text) == pytest.approx(hours)


@pytest.mark.parametrize("text", ["", "h", "abc", "2x", "2h30", "-1h", "0", "0m", "nan", "inf", "1h-5m"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="duration"):
        B.parse_duration(text)


def _paper_cfg(sched: dict, epochs: int = 100, early: int = 10):
    return config_from_dict({"sched": sched, "train": {"epochs": epochs, "early_stopping": early}})


def test_scale_schedule_keeps_the_shape_of_the_schedule():
    c = _paper_cfg({"name": "cosine", "warmup_epochs": 5})
    s = B.scale_schedule(c, 20)
    assert (s.train.epochs, s.sched.warmup_epochs, s.train.early_stopping) == (20, 1.0, 2)
    assert (c.train.epochs, c.sched.warmup_epochs, c.train.early_stopping) == (100, 5, 10)   # a copy
    m = B.scale_schedule(_paper_cfg({"name": "multistep", "milestones": [30, 60, 90]}), 10)
    assert m.sched.milestones == [3, 6, 9]
    st = B.scale_schedule(_paper_cfg({"name": "step", "step_size": 30}), 10)
    assert st.sched.step_size == 3
    one = B.scale_schedule(_paper_cfg({"name": "cosine", "warmup_epochs": 5}), 1)
    assert one.train.epochs == 1 and one.sched.warmup_epochs == 0      # never a warm-up as long as the run


def test_fit_epochs_arithmetic():
    # 90 images at 10/s (x 0.9 efficiency) = 10 s, + 20 validation images at 20/s = 1 s: 11 s an epoch;
    # the test pass: 40 images at 20/s = 2 s.  100 s of budget: floor(98 / 11) = 8 epochs.
    kw = dict(train_images=90, val_images=20, test_images=40, train_images_per_s=10, eval_images_per_s=20)
    assert B.fit_epochs(100, max_epochs=50, **kw) == (8, pytest.approx(11.0), pytest.approx(2.0))
    assert B.fit_epochs(100, max_epochs=5, **kw)[0] == 5                 # never more than the config's
    assert B.fit_epochs(1, max_epochs=5, **kw)[0] == 1                   # at least one epoch
    with pytest.raises(ValueError):
        B.fit_epochs(100, max_epochs=5, **{**kw, "train_images_per_s": 0})


def test_config_rejects_a_non_positive_budget():
    with pytest.raises(ConfigError, match="train.budget_hours"):
        config_from_dict({"train": {"budget_hours": 0}})
    assert config_from_dict({"train": {"budget_hours": 1.5}}).train.budget_hours == 1.5


def _cfg(budget_hours, epochs=4):
    return config_from_dict({
        "data": {"dataset": "synthetic", "num_classes": 4, "val_split": "val", "test_split": "test",
                 "options": {"n_train": 160, "n_val": 48, "n_test": 48, "size": 24}},
        "model": {"arch": TINY, "in_chans": 1, "input_size": 24},
        "optim": {"name": "adam", "lr": 3e-3},
        "sched": {"name": "cosine", "warmup_epochs": 1},
        "train": {"epochs": epochs, "batch_size": 16, "progress": False, "tensorboard": False, "seed": 0,
                  "budget_hours": budget_hours},
        "aug": {"hflip": 0.5, "rotation": 10},
    }, name="b")


def test_measure_times_the_real_model():
    from fixtures.models import Tiny
    tr, ev = B.measure(Tiny(num_classes=4, in_chans=1), (1, 24, 24), 16, 32, 4, torch.device("cpu"),
                       channels_last=False, autocast=lambda: torch.autocast("cpu", enabled=False), steps=3)
    assert math.isfinite(tr) and math.isfinite(ev) and tr > 0 and ev > 0


@pytest.fixture
def fixed_speed(monkeypatch):
    """The machine's speed, fixed: 160 training images take 1 s (after the 0.9 efficiency),
    48 validation (or test) images 1 s; so an epoch is 2 s and the test 1 s."""
    speeds = {"train": 160 / 0.9, "eval": 48.0}
    monkeypatch.setattr(B, "measure", lambda *a, **k: (speeds["train"], speeds["eval"]))
    return speeds


def test_budget_sizes_the_run_and_writes_the_sized_schedule(tmp_path, fixed_speed):
    # 5.5 s of budget: the test pass (1 s) + floor(4.5 / 2) = 2 epochs of the config's 4
    res = train(_cfg(5.5 / 3600), tmp_path / "run", quiet=True)
    assert len(res.history) == 2 and res.test_metrics is not None
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 2 and saved["train"]["budget_hours"] is None
    assert saved["sched"]["warmup_epochs"] == pytest.approx(0.5)
    assert "budget" in saved["notes"] and "2 epochs" in saved["notes"]
    # the cosine spans the 2 epochs (warm-up 0.5): at epoch 2's start it is a third of the way down,
    # where the unsized 4-epoch schedule (warm-up 1) would still be at its peak of 3e-3
    assert res.history[1]["lr"] == pytest.approx(3e-3 * 0.5 * (1 + math.cos(math.pi / 3)))
    # a budget larger than the schedule needs: the config's epochs, not more
    big = train(_cfg(100.0), tmp_path / "big", quiet=True)
    assert len(big.history) == 4
    assert yaml.safe_load((tmp_path / "big" / "config.yaml").read_text())["train"]["epochs"] == 4


def test_resume_keeps_the_sized_schedule(tmp_path, fixed_speed):
    whole = train(_cfg(5.5 / 3600), tmp_path / "whole", quiet=True)
    train(_cfg(5.5 / 3600), tmp_path / "part", quiet=True, max_epochs=1)
    fixed_speed["train"] *= 10                                  # resumed on a faster machine
    fixed_speed["eval"] *= 10
    again = train(_cfg(5.5 / 3600), tmp_path / "part", resume=tmp_path / "part", quiet=True)
    assert len(again.history) == 2
    drop = ("time_s", "images_per_s")
    strip = lambda h: [{k: v for k, v in r.items() if k not in drop} for r in h]  # noqa: E731
    assert strip(again.history) == strip(whole.history)
    assert again.test_metrics == whole.test_metrics
    # the run folder resumes with its own (sized) config, no budget left in it
    cfg = load_config(tmp_path / "part" / "config.yaml")
    assert cfg.train.budget_hours is None and cfg.train.epochs == 2


def test_cli_budget(tmp_path, fixed_speed):
    from typer.testing import CliRunner
    from litefer.cli import app
    from litefer.training.config import dump_config
    cfg_file = tmp_path / "b.yaml"
    cfg_file.write_text(dump_config(_cfg(None)))
    bad = CliRunner().invoke(app, ["train", str(cfg_file), "--budget", "soon", "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "--budget" in bad.output and "soon" in bad.output
    assert not (tmp_path / "x").exists()
    ok = CliRunner().invoke(app, ["train", str(cfg_file), "--budget", "5.5s", "--out", str(tmp_path / "y")])
    assert ok.exit_code == 0, ok.output
    assert yaml.safe_load((tmp_path / "y" / "config.yaml").read_text())["train"]["epochs"] == 2
