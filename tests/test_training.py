"""Transforms, samplers, schedules and the training loop on small synthetic data."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from litefer.data.sampling import EpochSampler, OversamplingSampler, class_counts_after, oversample_indices
from litefer.data.transforms import Augment, AugmentedFaces, Preprocess, from_preprocess
from litefer.training import (ConfigError, LRSchedule, config_from_dict, metrics_from_confusion, prepare_data,
                              synthetic_faces, train)
from litefer.training.config import SchedConfig

from fixtures.models import TINY


@pytest.fixture(autouse=True, scope="module")
def _tiny_registered(tiny_arch):
    """The test model is registered for this module only (conftest.tiny_arch removes it)."""
    assert tiny_arch == TINY


def _cfg(**sections) -> "TrainConfig":  # noqa: F821
    base = {
        "data": {"dataset": "synthetic", "num_classes": 4, "val_split": "val", "test_split": "test",
                 "options": {"n_train": 192, "n_val": 64, "n_test": 64, "size": 24}},
        "model": {"arch": TINY, "in_chans": 1, "input_size": 24},
        "optim": {"name": "adam", "lr": 3e-3},
        "sched": {"name": "cosine"},
        # autotune measures step times: off, so that no result depends on the clock
        "train": {"epochs": 3, "batch_size": 32, "progress": False, "seed": 0, "autotune": False},
        "aug": {"hflip": 0.5, "rotation": 8, "scale": [0.85, 1.0]},
    }
    for sec, vals in sections.items():
        if isinstance(vals, dict) and isinstance(base.get(sec), dict):
            base[sec] = {**base[sec], **vals}
        else:
            base[sec] = vals
    return config_from_dict(base, name="t")


# ------------------------------------------------------------------------------ transforms
def test_preprocess_normalises_and_resizes():
    img = np.full((48, 48), 153, np.uint8)
    x = Preprocess(48, 1, 0.5, 0.25)(img)
    assert x.shape == (1, 48, 48) and x.dtype == torch.float32
    assert torch.allclose(x, torch.full_like(x, (153 / 255 - 0.5) / 0.25))
    big = np.random.default_rng(0).integers(0, 255, (100, 80, 3), dtype=np.uint8)
    y = Preprocess(112, 3, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])(big)
    assert y.shape == (3, 112, 112)
    # the checkpoint preprocess dict builds the same transform
    pre = {"channels": 3, "size": 112, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "crop": "aligned112"}
    assert torch.equal(from_preprocess(pre)(big), y)


def test_colour_handling():
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 200                                       # pure red -> luma 0.299 * 200
    g = Preprocess(4, 1, 0.0, 1.0)(rgb)
    assert g.shape == (1, 4, 4) and torch.allclose(g, torch.full_like(g, round(0.299 * 200) / 255))
    grey = np.full((4, 4), 100, np.uint8)
    c = Preprocess(4, 3, 0.0, 1.0)(grey)
    assert c.shape == (3, 4, 4) and torch.allclose(c[0], c[2])
    with pytest.raises(ValueError, match="uint8"):
        Preprocess(4)(grey.astype(np.float32))
    with pytest.raises(ValueError, match="channels"):
        Preprocess(4, 2)


def test_augment_is_deterministic_given_rng_and_identity_without_aug():
    img = np.random.default_rng(1).integers(0, 255, (48, 48), dtype=np.uint8)
    aug = Augment(48, 1, 0.5, 0.5, hflip=0.5, rotation=15, scale=(0.7, 1.0), ratio=(0.8, 1.25), translate=0.1,
                  brightness=0.2, contrast=0.2, erasing=0.5)
    a = aug(img, np.random.default_rng([3, 4]))
    b = aug(img, np.random.default_rng([3, 4]))
    c = aug(img, np.random.default_rng([3, 5]))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (1, 48, 48)
    none = Augment(48, 1, 0.5, 0.5, hflip=0.0)
    assert torch.equal(none(img, np.random.default_rng(0)), Preprocess(48, 1, 0.5, 0.5)(img))


def test_augment_flip_and_erasing():
    img = np.tile(np.arange(48, dtype=np.uint8)[None, :] * 5, (48, 1))   # left-right gradient
    flip = Augment(48, 1, 0.0, 1.0, hflip=1.0)(img, np.random.default_rng(0))
    assert torch.allclose(flip[0], torch.from_numpy(img[:, ::-1].astype(np.float32) / 255), atol=1e-6)
    er = Augment(48, 1, 0.0, 1.0, hflip=0.0, erasing=1.0, erasing_scale=(0.1, 0.1), erasing_value=-7.0)
    out = er(np.full((48, 48), 255, np.uint8), np.random.default_rng(0))
    erased = (out == -7.0).float().mean().item()
    assert 0.05 < erased < 0.15 and ((out == 1.0) | (out == -7.0)).all()


def test_augment_rotation_keeps_content_centred():
    img = np.zeros((48, 48), np.uint8)
    img[20:28, 20:28] = 255                                 # a centred square survives rotation
    out = Augment(48, 1, 0.0, 1.0, hflip=0.0, rotation=30, border="constant")(img, np.random.default_rng(2))
    assert out[0, 22:26, 22:26].min() > 0.9
    assert out[0, :5, :5].max() == 0.0


def test_augment_rejects_bad_parameters():
    with pytest.raises(ValueError, match="hflip"):
        Augment(48, hflip=2)
    with pytest.raises(ValueError, match="scale"):
        Augment(48, scale=(1.0, 0.5))


def test_augmented_faces_depend_only_on_seed_epoch_index():
    arr = synthetic_faces(8, 4, size=24)
    aug = Augment(24, 1, hflip=0.5, rotation=10)
    ds = AugmentedFaces(arr, aug, seed=5)
    ds.set_epoch(2)
    x1, y1 = ds[3]
    _ = [ds[i] for i in range(8)]
    x2, _ = ds[3]
    assert torch.equal(x1, x2) and y1.dtype == torch.int64 and y1.item() == arr.targets[3]
    ds.set_epoch(3)
    assert not torch.equal(ds[3][0], x1)


# ------------------------------------------------------------------------------ samplers
def test_epoch_sampler_seeded_per_epoch_and_sharded():
    s = EpochSampler(10, seed=1)
    s.set_epoch(0)
    e0 = list(s)
    assert sorted(e0) == list(range(10))
    assert list(s) == e0
    s.set_epoch(1)
    assert list(s) != e0
    r0 = EpochSampler(10, seed=1, num_replicas=3, rank=0, pad=False)
    r1 = EpochSampler(10, seed=1, num_replicas=3, rank=1, pad=False)
    r2 = EpochSampler(10, seed=1, num_replicas=3, rank=2, pad=False)
    parts = [list(r) for r in (r0, r1, r2)]
    assert sorted(sum(parts, [])) == list(range(10)) and [len(r) for r in (r0, r1, r2)] == [4, 3, 3]
    p0 = EpochSampler(10, seed=1, num_replicas=3, rank=0)
    p2 = EpochSampler(10, seed=1, num_replicas=3, rank=2)
    assert len(p0) == len(p2) == 4 and len(list(p2)) == 4


def test_oversampling_brings_minorities_up():
    y = np.array([0] * 50 + [1] * 10 + [2] * 3)
    idx = oversample_indices(y, np.random.default_rng(0))
    counts = np.bincount(y[idx])
    assert counts.tolist() == [50, 50, 50]
    # class 1: every image 5x; class 2: every image 16x or 17x (even spread)
    reps = np.bincount(idx, minlength=len(y))
    assert set(reps[50:60]) == {5} and set(reps[60:]) <= {16, 17}
    assert class_counts_after(y, ratio=0.5).tolist() == [50, 25, 25]
    assert class_counts_after(y, ratio=1.0, max_factor=4).tolist() == [50, 40, 12]
    s = OversamplingSampler(y, seed=0)
    assert len(s) == 150 and sorted(set(s)) == list(range(63))
    with pytest.raises(ValueError, match="targets"):
        EpochSampler(10, oversample=True)


# ------------------------------------------------------------------------------ schedules, metrics
def _lrs(sched: SchedConfig, epochs=10, iters=4, base=1.0):
    s = LRSchedule(sched, epochs, iters)
    return s, [s.lr(base, e, 0) for e in range(epochs)]


def test_lr_schedules():
    _, lrs = _lrs(SchedConfig(name="step", step_size=3, gamma=0.1))
    assert lrs[:7] == pytest.approx([1, 1, 1, 0.1, 0.1, 0.1, 0.01])
    s, lrs = _lrs(SchedConfig(name="cosine", warmup_epochs=2, warmup_start=0.1, min_lr=0.0))
    assert lrs[0] == pytest.approx(0.1) and s.lr(1.0, 1, 0) == pytest.approx(0.55)
    assert lrs[2] == pytest.approx(1.0) and s.lr(1.0, 6, 0) == pytest.approx(0.5)
    assert s.lr(1.0, 9, 3) > 0 and s.lr(1.0, 9, 3) < 0.05
    _, lrs = _lrs(SchedConfig(name="multistep", milestones=[2, 5], gamma=0.5))
    assert lrs[:6] == pytest.approx([1, 1, 0.5, 0.5, 0.5, 0.25])
    s = LRSchedule(SchedConfig(name="inverse_time", decay=0.5), 3, 4)
    assert s.lr(1.0, 1, 2) == pytest.approx(1 / (1 + 0.5 * 6))
    s = LRSchedule(SchedConfig(name="plateau", patience=1, factor=0.5), 10, 4, mode="max")
    for e, v in enumerate([0.5, 0.6, 0.6, 0.6, 0.6]):
        s.epoch_end(e, v)
    assert s.lr(1.0, 5, 0) == pytest.approx(0.5)           # two bad epochs > patience 1 -> halve once
    s2 = LRSchedule(SchedConfig(name="plateau"), 10, 4)
    s2.load_state_dict(s.state_dict())
    assert s2.lr(1.0, 5, 0) == pytest.approx(0.5)


def test_metrics_from_confusion_hand_example():
    conf = np.array([[3, 1, 0], [0, 2, 2], [0, 0, 0]])     # class 2 absent from the targets
    m = metrics_from_confusion(conf)
    assert m["acc"] == pytest.approx(5 / 8)
    assert m["mean_class_acc"] == pytest.approx((3 / 4 + 2 / 4) / 2)
    f1_0 = 2 * 1 * 0.75 / 1.75
    f1_1 = 2 * (2 / 3) * 0.5 / (2 / 3 + 0.5)
    assert m["macro_f1"] == pytest.approx((f1_0 + f1_1) / 2)
    assert m["per_class_acc"][2] is None and m["n"] == 8


# ------------------------------------------------------------------------------ training runs
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = _cfg(train={"epochs": 4}, loss={"center": {"weight": 0.01}, "cosine_harmony": {"weight": 0.1}},
               data={"options": {"n_train": 192, "n_val": 64, "n_test": 64, "size": 24, "noise": 70}})
    return cfg, train(cfg, out_dir=out, quiet=True)


def test_training_learns_synthetic_data(trained):
    cfg, res = trained
    h = res.history
    assert len(h) == 4 and not res.stopped_early
    assert h[-1]["train_loss"] < 0.7 * h[0]["train_loss"]
    assert max(r["val_acc"] for r in h) > 0.6                 # chance is 0.25
    assert res.best_metrics["acc"] == max(r["val_acc"] for r in h)
    assert res.best_epoch == 1 + int(np.argmax([r["val_acc"] for r in h]))
    assert res.test_metrics is not None and res.test_metrics["acc"] > 0.5
    assert h[0]["train_center"] is not None and h[0]["train_ch"] is not None
    rows = list(csv.DictReader(open(res.out_dir / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[-1]["val_acc"]) == pytest.approx(h[-1]["val_acc"])
    summary = json.loads((res.out_dir / "result.json").read_text())
    assert summary["best_epoch"] == res.best_epoch and summary["test"]["acc"] == res.test_metrics["acc"]
    assert (res.out_dir / "config.yaml").is_file()



def test_learning_curves_read_the_runs_metrics(trained, tmp_path):
    """``litefer curves`` reads what the trainer wrote: every epoch, the best one, a figure."""
    from PIL import Image
    from typer.testing import CliRunner

    from litefer.cli import app
    from litefer.evaluation.curves import curve_table, plot_curves, read_curve
    cfg, res = trained
    c = read_curve(res.out_dir)
    assert [r["epoch"] for r in c.rows] == [r["epoch"] for r in res.history]
    for got, want in zip(c.rows, res.history):
        assert got["val_acc"] == pytest.approx(want["val_acc"]) and got["lr"] == pytest.approx(want["lr"])
    assert c.best_epoch == res.best_epoch
    best = f"**{100 * res.best_metrics['acc']:.2f} %**"
    table = curve_table(c)
    assert table.count("**") == 2 and best in table and len(table.strip().splitlines()) == 2 + len(res.history)
    png = plot_curves([c, read_curve(res.out_dir / "metrics.csv", name="again")], tmp_path / "c.png")
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 2 * im.size[1]
    out = CliRunner().invoke(app, ["curves", str(res.out_dir), "--plot", str(tmp_path / "cli.png")])
    assert out.exit_code == 0, out.output
    assert best in out.stdout and f"best epoch {res.best_epoch} (kept as best.pt)" in out.stdout
    assert (tmp_path / "cli.png").is_file()
    again = CliRunner().invoke(app, ["curves", str(res.out_dir), "--plot", str(tmp_path / "cli.png")])
    assert again.exit_code == 2 and "--overwrite" in again.output

def test_checkpoints_follow_the_checkpoint_format(trained):
    from litefer.models.checkpoint import load_model, read_checkpoint
    cfg, res = trained
    meta, state, raw = read_checkpoint(res.best_checkpoint)
    assert meta.arch == TINY and meta.labels == list(res.labels)
    assert meta.preprocess == {"channels": 1, "size": 24, "mean": [0.5], "std": [0.5], "crop": "fer"}
    for key in ("config", "metrics", "epoch", "code_version", "arch_kwargs"):
        assert key in raw, key
    assert raw["epoch"] == res.best_epoch and raw["config"]["optim"]["lr"] == cfg.optim.lr
    assert raw["metrics"]["val"]["acc"] == res.best_metrics["acc"] and "test" in raw["metrics"]
    assert raw["code_version"]["litefer"] and "git" in raw["code_version"]
    model, meta2 = load_model(res.best_checkpoint)
    x = torch.randn(3, 1, 24, 24)
    with torch.no_grad():
        assert torch.allclose(model(x), res.model(x), atol=1e-6)
    last = torch.load(res.last_checkpoint, map_location="cpu", weights_only=True)
    ts = last["training_state"]
    for key in ("optimizer", "center_optimizer", "scheduler", "rng_per_rank", "history", "criterion", "best"):
        assert key in ts, key
    assert last["epoch"] == 4 and len(ts["history"]) == 4
    assert "ch.centers" in ts["criterion"] and "center.centers" in ts["criterion"]


def test_resume_continues_exactly(tmp_path):
    cfg = _cfg(train={"epochs": 2}, model={"kwargs": {"drop_rate": 0.3}}, sched={"name": "cosine", "warmup_epochs": 1},
               loss={"label_smoothing": 0.1, "center": {"weight": 0.01}, "cosine_harmony": {"weight": 0.1}},
               aug={"hflip": 0.5, "rotation": 10, "scale": [0.8, 1.0], "translate": 0.1, "erasing": 0.5})
    cfg.train.oversample.enabled = True
    straight = train(cfg, out_dir=tmp_path / "a", quiet=True)
    part = train(cfg, out_dir=tmp_path / "b", max_epochs=1, quiet=True)
    assert len(part.history) == 1
    resumed = train(cfg, out_dir=tmp_path / "b", resume=part.last_checkpoint, quiet=True)
    a = torch.load(straight.last_checkpoint, map_location="cpu", weights_only=True)
    b = torch.load(resumed.last_checkpoint, map_location="cpu", weights_only=True)
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    for k in a["training_state"]["criterion"]:
        assert torch.equal(a["training_state"]["criterion"][k], b["training_state"]["criterion"][k]), k
    drop = ("time_s", "images_per_s")
    strip = lambda h: [{k: v for k, v in r.items() if k not in drop} for r in h]  # noqa: E731
    assert strip(straight.history) == strip(resumed.history)
    assert len(list(csv.DictReader(open(tmp_path / "b" / "metrics.csv")))) == 2
    with pytest.raises(ConfigError, match="training state"):
        train(cfg, out_dir=tmp_path / "c", resume=straight.best_checkpoint, quiet=True)


def test_warm_start_from_a_runs_best_checkpoint_is_recorded(tmp_path):
    """A second stage (``model.init_from`` = an earlier run's best.pt) starts from exactly those
    weights, and its result.json names the file and its SHA-256 (= the first run's best_sha256)."""
    from litefer.training.build import build_model
    first = train(_cfg(train={"epochs": 1}), out_dir=tmp_path / "a", quiet=True)
    stage2 = _cfg(train={"epochs": 1, "seed": 1}, model={"init_from": str(first.best_checkpoint)})
    model, _ = build_model(stage2, 4)
    best = torch.load(first.best_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, best[k]), k
    train(stage2, out_dir=tmp_path / "b", quiet=True)
    res_a = json.loads((tmp_path / "a" / "result.json").read_text())
    res_b = json.loads((tmp_path / "b" / "result.json").read_text())
    assert "init_from" not in res_a
    assert res_b["init_from"] == {"file": str(first.best_checkpoint), "sha256": res_a["best_sha256"]}


def test_a_config_relative_init_from_is_recorded_as_loaded_and_resume_does_not_reread_it(tmp_path, monkeypatch):
    """``model.init_from`` relative to the config's folder (not the working folder) is written to
    the run folder's config.yaml as the path actually loaded; resuming that run takes the weights
    from last.pt and does not need the init file any more."""
    from litefer.training.config import dump_config, load_config
    from litefer.evaluation.curves import read_stages
    first = train(_cfg(train={"epochs": 1}), out_dir=tmp_path / "a", quiet=True)
    cfg_dir = tmp_path / "configs"
    cfg_dir.mkdir()
    stage2 = _cfg(train={"epochs": 2, "seed": 1}, model={"init_from": "../a/best.pt"})
    (cfg_dir / "stage2.yaml").write_text(dump_config(stage2), encoding="utf-8")
    (tmp_path / "x" / "y").mkdir(parents=True)     # a working folder where "../a/best.pt" is not a file
    monkeypatch.chdir(tmp_path / "x" / "y")
    cfg = load_config(str(cfg_dir / "stage2.yaml"))
    part = train(cfg, out_dir=tmp_path / "b", max_epochs=1, quiet=True)
    written = load_config(str(tmp_path / "b" / "config.yaml"))
    assert written.model.init_from == str(cfg_dir / "../a/best.pt") and cfg.model.init_from == "../a/best.pt"
    chain = read_stages(tmp_path / "b")                       # the curves find the first stage
    assert [c.path.parent.name for c in chain] == ["a", "b"] and chain[1].offset == first.best_epoch == 1
    moved = tmp_path / "a" / "moved.pt"
    (tmp_path / "a" / "best.pt").rename(moved)
    resumed = train(written, out_dir=tmp_path / "b", resume=part.last_checkpoint, quiet=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    res = json.loads((tmp_path / "b" / "result.json").read_text())
    assert res["init_from"] == {"file": str(cfg_dir / "../a/best.pt"), "sha256": None}


def test_test_split_never_influences_training(tmp_path):
    with_test = train(_cfg(train={"epochs": 2}), out_dir=tmp_path / "a", quiet=True)
    no_test = train(_cfg(train={"epochs": 2}, data={"test_split": None}), out_dir=tmp_path / "b", quiet=True)
    assert no_test.test_metrics is None and with_test.test_metrics is not None
    assert with_test.best_epoch == no_test.best_epoch
    sa, sb = with_test.model.state_dict(), no_test.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    with pytest.raises(ConfigError, match="must not be the test split"):
        prepare_data(_cfg(data={"val_split": "test", "test_split": "test"}))


def test_early_stopping(tmp_path):
    # min_delta 1.0: no accuracy can improve on the first epoch by more than 1
    res = train(_cfg(train={"epochs": 10, "early_stopping": 2, "min_delta": 1.0}), out_dir=tmp_path, quiet=True)
    assert res.stopped_early and len(res.history) == 3 and res.best_epoch == 1
    # patience runs out exactly at the last epoch: the run finished, it did not stop early
    res = train(_cfg(train={"epochs": 3, "early_stopping": 2, "min_delta": 1.0}), out_dir=tmp_path / "b", quiet=True)
    assert not res.stopped_early and len(res.history) == 3
    assert json.loads((tmp_path / "b" / "result.json").read_text())["stopped_early"] is False


def test_holdout_validation_and_exclusion(tmp_path):
    excl = tmp_path / "exclude.txt"
    excl.write_text("# audit\nsyn1_000000\nsyn1_000001, duplicate\n")
    cfg = _cfg(data={"val_split": None, "val_fraction": 0.25, "exclude": str(excl)})
    s = prepare_data(cfg)
    assert len(s.train) + len(s.val) == 190 and s.info["excluded"] == 2
    assert not set(s.train.ids) & set(s.val.ids)
    assert "syn1_000000" not in s.train.ids + s.val.ids
    counts = np.bincount(s.val.hard_targets, minlength=4)
    assert (np.abs(counts - counts.mean()) <= 1).all()      # stratified
    assert prepare_data(cfg).val.ids == s.val.ids           # seeded
    cfg.data.val_seed = 1
    assert prepare_data(cfg).val.ids != s.val.ids


def test_validation_hold_out_by_subject():
    s = prepare_data(_cfg(data={"val_split": None, "val_fraction": 0.25, "val_by_subject": True}))
    assert not set(s.train.groups) & set(s.val.groups)
    assert 0.15 < len(s.val) / (len(s.val) + len(s.train)) < 0.35
    assert "subject" in s.info["val_split"]


def test_subject_folds_and_train_folds(tmp_path):
    cfg = _cfg(data={"test_split": None, "val_split": None, "folds": 2}, train={"epochs": 1})
    s0 = prepare_data(_cfg(data={"test_split": None, "val_split": None, "folds": 2, "fold": 0}))
    s1 = prepare_data(_cfg(data={"test_split": None, "val_split": None, "folds": 2, "fold": 1}))
    assert not set(s0.test.groups) & set(s0.train.groups) and not set(s0.test.groups) & set(s0.val.groups)
    assert sorted(s0.test.ids + s1.test.ids) == sorted(synthetic_faces(192, 4, 24, seed=1).ids)
    from litefer.evaluation.cv import cross_validate          # the one CV runner
    cv = cross_validate(cfg, out_dir=tmp_path, quiet=True)
    assert len(cv.folds) == 2 and (tmp_path / "fold1" / "best.pt").is_file()
    assert json.loads((tmp_path / "cv.json").read_text())["k"] == 2


def test_soft_targets_train_with_balanced_weights(tmp_path):
    """FER+ 'probability' label mode: float (N, C) targets through loader, losses and metrics;
    ``class_weights: balanced`` uses N / (C * n_c) of the training split (counted by hand
    here): the same run as those weights given explicitly, and not the unweighted run."""
    from litefer.data.base import FaceArrays
    from litefer.training import DataSplits

    def soften(a: FaceArrays) -> FaceArrays:
        t = np.full((len(a), 4), 0.1, np.float32)
        t[np.arange(len(a)), a.targets] = 0.7
        return FaceArrays(a.images, t, a.labels, a.ids, a.groups, a.name, a.split)

    def imbalanced(a: FaceArrays) -> FaceArrays:
        keep = np.concatenate([np.where(a.targets == c)[0][:n] for c, n in enumerate((40, 20, 10, 5))])
        keep.sort()
        return FaceArrays(a.images[keep], a.targets[keep], a.labels, [a.ids[i] for i in keep],
                          None if a.groups is None else a.groups[keep], a.name, a.split)

    tr = imbalanced(synthetic_faces(256, 4, 24, seed=1))
    counts = np.bincount(tr.targets, minlength=4)
    assert counts.tolist() == [40, 20, 10, 5]
    by_hand = [len(tr) / (4 * c) for c in counts]
    splits = DataSplits(soften(tr), soften(synthetic_faces(64, 4, 24, seed=2)),
                        soften(synthetic_faces(64, 4, 24, seed=3)))
    runs = {}
    for name, weights in (("balanced", "balanced"), ("explicit", by_hand), ("none", None)):
        cfg = _cfg(train={"epochs": 2}, loss={"class_weights": weights, "center": {"weight": 0.01}})
        runs[name] = train(cfg, out_dir=tmp_path / name, data=splits, quiet=True)
    res = runs["balanced"]
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"]) for r in res.history)
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    assert res.test_metrics["n"] == 64
    loss = lambda r: [h["train_loss"] for h in r.history]  # noqa: E731
    assert loss(runs["balanced"]) == pytest.approx(loss(runs["explicit"]), rel=1e-5)
    assert loss(runs["balanced"]) != pytest.approx(loss(runs["none"]), rel=1e-3)


def _params(res) -> dict:
    return {k: v.detach().clone() for k, v in res.model.named_parameters()}


def test_monitor_val_loss_selects_the_lowest_validation_loss(tmp_path):
    res = train(_cfg(train={"epochs": 4, "monitor": "val_loss"}), out_dir=tmp_path, quiet=True)
    losses = [r["val_loss"] for r in res.history]
    assert res.best_epoch == 1 + int(np.argmin(losses))
    from litefer.models.checkpoint import read_checkpoint
    _, _, raw = read_checkpoint(res.best_checkpoint)
    assert raw["epoch"] == res.best_epoch and raw["metrics"]["monitor"] == "val_loss"
    # early stopping watches the same metric: a loss can never fall by 100 in one epoch
    res = train(_cfg(train={"epochs": 10, "monitor": "val_loss", "early_stopping": 2, "min_delta": 100.0}),
                out_dir=tmp_path / "es", quiet=True)
    assert res.stopped_early and len(res.history) == 3 and res.best_epoch == 1
    # patience runs out exactly at the last epoch: the run finished, it did not stop early
    res = train(_cfg(train={"epochs": 3, "early_stopping": 2, "min_delta": 1.0}), out_dir=tmp_path / "b", quiet=True)
    assert not res.stopped_early and len(res.history) == 3
    assert json.loads((tmp_path / "b" / "result.json").read_text())["stopped_early"] is False


def test_grad_clip_bounds_every_step(tmp_path):
    """Plain SGD with the gradient norm clipped to c moves the weights by at most lr * c per
    step; without clipping the same run moves them hundreds of times further."""
    sgd = {"name": "sgd", "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0}
    start = _params(train(_cfg(train={"epochs": 1}, optim={**sgd, "lr": 1e-12}, sched={"name": "none"}),
                          out_dir=tmp_path / "start", quiet=True))
    clip = 1e-4
    clipped = train(_cfg(train={"epochs": 1, "grad_clip": clip}, optim=sgd, sched={"name": "none"}),
                    out_dir=tmp_path / "clip", quiet=True)
    free = train(_cfg(train={"epochs": 1}, optim=sgd, sched={"name": "none"}), out_dir=tmp_path / "free", quiet=True)

    def moved(res) -> float:
        p = _params(res)
        return float(torch.sqrt(sum(((p[k] - start[k]) ** 2).sum() for k in start)))

    steps = 192 // 32
    assert 0 < moved(clipped) <= steps * 0.1 * clip * 1.01
    assert moved(free) > 100 * steps * 0.1 * clip


def test_diverging_loss_stops_with_a_clear_error(tmp_path):
    cfg = _cfg(train={"epochs": 2}, optim={"name": "sgd", "lr": 1e8, "momentum": 0.9}, sched={"name": "none"})
    with pytest.raises(FloatingPointError, match="lower optim.lr"):
        train(cfg, out_dir=tmp_path, quiet=True)


def test_resume_refuses_another_model_or_label_set(tmp_path):
    part = train(_cfg(train={"epochs": 2}), out_dir=tmp_path / "a", max_epochs=1, quiet=True)
    other_arch = _cfg(train={"epochs": 2}, model={"arch": "mini_xception", "input_size": 24})
    with pytest.raises(ConfigError, match="mini_xception"):
        train(other_arch, out_dir=tmp_path / "b", resume=part.last_checkpoint, quiet=True)
    three = _cfg(train={"epochs": 2}, data={"num_classes": 3})
    with pytest.raises(ConfigError, match="litefer_test_tiny"):
        train(three, out_dir=tmp_path / "c", resume=part.last_checkpoint, quiet=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="last.pt"):
        train(_cfg(), out_dir=tmp_path / "d", resume=tmp_path / "empty", quiet=True)
    # the folder of a run resumes from its last.pt
    done = train(_cfg(train={"epochs": 2}), out_dir=tmp_path / "a", resume=tmp_path / "a", quiet=True)
    assert len(done.history) == 2


def test_unused_workers_key_is_reported_not_silently_ignored(tmp_path, capsys):
    """``train.workers`` no longer does anything (the data are held in memory and batches
    made in-process): a config that sets it still loads, and the run says the key is unused
    instead of dropping it silently."""
    train(_cfg(train={"epochs": 1, "workers": 2, "progress": False}), out_dir=tmp_path / "w2")
    out = capsys.readouterr()
    assert "train.workers = 2 is not used" in out.out + out.err
    train(_cfg(train={"epochs": 1, "workers": 0, "progress": False}), out_dir=tmp_path / "w0")
    out = capsys.readouterr()
    assert "train.workers" not in out.out + out.err


def test_model_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.arch.*unknown model"):
        train(_cfg(model={"arch": "litefer_test_tinyy"}), out_dir=tmp_path, quiet=True)
    with pytest.raises(ConfigError, match=r"model\.kwargs"):
        train(_cfg(model={"kwargs": {"nonsense": 1}}), out_dir=tmp_path, quiet=True)
    with pytest.raises(ConfigError, match=r"loss\.class_weights"):
        train(_cfg(loss={"class_weights": [1.0, 2.0]}), out_dir=tmp_path, quiet=True)


def test_cli_train(tmp_path):
    from typer.testing import CliRunner
    from litefer.cli import app
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(f"""
data: {{dataset: synthetic, num_classes: 3, val_split: val, test_split: test,
        options: {{n_train: 96, n_val: 48, n_test: 48, size: 24}}}}
model: {{arch: {TINY}, input_size: 24}}
optim: {{name: adam, lr: 0.003}}
train: {{epochs: 2, batch_size: 32}}
""")
    runner = CliRunner()
    out = tmp_path / "out"
    r = runner.invoke(app, ["train", str(cfg_file), "--out", str(out), "--set", "train.epochs=1", "--no-progress"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["epochs_run"] == 1 and (out / "best.pt").is_file()
    r = runner.invoke(app, ["train", str(cfg_file), "--out", str(out)])
    assert r.exit_code == 2 and "already holds a run" in r.output
    r = runner.invoke(app, ["train", str(cfg_file), "--out", str(out), "--resume", str(out / "last.pt")])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.strip().splitlines()[-1])["epochs_run"] == 2
    r = runner.invoke(app, ["train", str(cfg_file), "--set", "optim.lrr=0.1"])
    assert r.exit_code == 2 and "optim.lrr" in r.output and "optim.lr" in r.output
    r = runner.invoke(app, ["train", str(cfg_file), "--print-config", "--set", "optim.lr=0.5"])
    assert r.exit_code == 0 and "lr: 0.5" in r.stdout
    # cross-validation configs: one fold into out/fold{k}, or all folds with a cv.json summary
    cv_args = ["--set", "data.folds=2", "--set", "data.test_split=null", "--set", "data.val_split=null",
               "--set", "train.epochs=1"]
    r = runner.invoke(app, ["train", str(cfg_file), "--out", str(tmp_path / "cv"), "--fold", "1", *cv_args])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "cv" / "fold1" / "best.pt").is_file() and not (tmp_path / "cv" / "fold0").exists()
    r = runner.invoke(app, ["train", str(cfg_file), "--out", str(tmp_path / "cv2"), *cv_args])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.strip().splitlines()[-1])["folds"] == 2 and (tmp_path / "cv2" / "cv.json").is_file()


@pytest.mark.realdata
def test_prepare_data_ferplus_default_config():
    """The bundled model's config on the real FER+: selection on PublicTest, report on PrivateTest."""
    from conftest import require_dataset
    from litefer.training import load_config
    require_dataset("ferplus")
    from pathlib import Path
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "default_ferplus.yaml")
    s = prepare_data(cfg)
    assert len(s.train.labels) == 8 and s.train.labels == s.val.labels == s.test.labels
    assert len(s.train) > 20000 and 2500 < len(s.val) < 3600 and 2500 < len(s.test) < 3600
    assert not set(s.train.ids) & set(s.test.ids) and not set(s.val.ids) & set(s.test.ids)
    assert s.train.images.shape[1:3] == (48, 48)


def test_bf16_epochs_are_validated_and_tested_in_fp32(tmp_path):
    """With bf16 autocast on a CPU the training steps run in bf16, but the validation split
    (selection) and the test split are evaluated in fp32: the numbers are the exported
    (fp32) model's.  The loss pins it: fp32 recomputation matches to float precision, a bf16
    evaluation does not."""
    from litefer.training.batches import Normalize, TensorFaces, iterate_batches
    from litefer.training.trainer import prepare_data
    cfg = _cfg(train={"epochs": 1, "cpu_bf16": "on"})
    res = train(cfg, out_dir=tmp_path / "r", quiet=True)
    assert res.best_checkpoint is not None and res.test_metrics is not None
    splits = prepare_data(cfg)
    pre = res.preprocess
    norm = Normalize(pre["channels"], pre["mean"], pre["std"])
    model = res.model.eval()

    def mean_loss(bf16: bool, split) -> float:
        t = TensorFaces(split, pre["size"], pre["channels"])
        total, n = 0.0, 0
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            for x, y in iterate_batches(t, np.arange(len(t)), 64, False, None, norm):
                out = model(x).float()
                total += float(torch.nn.functional.cross_entropy(out, y, reduction="sum"))
                n += len(y)
        return total / n

    fp32, bf16 = mean_loss(False, splits.test), mean_loss(True, splits.test)
    assert abs(bf16 - fp32) > 1e-5                                  # the two really differ here
    assert res.test_metrics["loss"] == pytest.approx(fp32, rel=1e-5, abs=1e-6)
    # one epoch: the validation row is the final (= selected) model's
    v32, v16 = mean_loss(False, splits.val), mean_loss(True, splits.val)
    assert abs(v16 - v32) > 1e-5
    assert res.history[-1]["val_loss"] == pytest.approx(v32, rel=1e-5, abs=1e-6)
