"""evaluate / TTA / reports / CLI / cross-validation / ablation on tiny synthetic problems."""
from __future__ import annotations

import copy
import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
import typer
from typer.testing import CliRunner

from litefer.data.base import FaceArrays
from litefer.evaluation import evaluate, predict_proba
from litefer.evaluation.cv import CVError, cross_validate
from litefer.evaluation.metrics import format_mean_std
from litefer.labels import FER2013, FERPLUS8

PRE = {"channels": 1, "size": 8, "mean": [0.5], "std": [0.5], "crop": "fer"}
L3 = ("neutral", "happy", "sad")


# ------------------------------------------------------------------------------ helpers
class BrightnessNet(nn.Module):
    """Classifies an image by its mean intensity: class k <-> grey level ``levels[k]``."""

    def __init__(self, levels):
        super().__init__()
        lv = (torch.tensor(levels, dtype=torch.float32) / 255.0 - 0.5) / 0.5      # normalised like PRE
        self.centres = nn.Parameter(lv, requires_grad=False)

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))
        return -((m[:, None] - self.centres[None]) ** 2) * 200.0


class FlattenNet(nn.Module):
    """Not mirror-invariant: a linear layer over all pixels."""

    def __init__(self, size=8, classes=3):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(size * size, classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


def grey_images(levels, values, size=12):
    return np.stack([np.full((size, size), levels[v], np.uint8) for v in values])


def arrays_of(images, targets, labels, groups=None, name="toy", split="test"):
    return FaceArrays(images=images, targets=np.asarray(targets, np.int64), labels=tuple(labels),
                      ids=[f"img{i:03d}" for i in range(len(images))], groups=groups, name=name, split=split)


LEVELS3 = [40, 128, 215]


# ------------------------------------------------------------------------------ evaluate
def test_evaluate_end_to_end_known_metrics_and_report(tmp_path):
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 1, 0, 1, 2, 2]            # what BrightnessNet will answer (the image's level)
    arr = arrays_of(grey_images(LEVELS3, y_pred), y_true, L3)
    res = evaluate(BrightnessNet(LEVELS3), arr, batch_size=4, preprocess=PRE, out_dir=tmp_path / "ev")
    m = res.metrics
    assert res.y_pred.tolist() == y_pred
    assert m["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["mean_class_acc"] == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    assert res.probs.shape == (6, 3) and np.allclose(res.probs.sum(1), 1, atol=1e-5)

    out = tmp_path / "ev"
    report = (out / "report.md").read_text()
    assert "66.67" in report and "65.56" in report and "72.22" in report
    assert "| happy | 2 | 50.00 | 50.00 | 50.00 | 2 |" in report
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["accuracy"] == pytest.approx(4 / 6) and saved["per_class"]["sad"]["recall"] == 1.0
    with open(out / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and sum(int(r["correct"]) for r in rows) == 4
    assert [r["predicted"] for r in rows] == [L3[i] for i in y_pred]
    png = out / "confusion.png"
    assert png.stat().st_size > 1000
    import matplotlib.image as mpimg
    img = mpimg.imread(str(png))
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200 and float(img.std()) > 0.01


def test_bare_model_needs_preprocess_and_matching_labels():
    arr = arrays_of(grey_images(LEVELS3, [0, 1]), [0, 1], L3)
    with pytest.raises(ValueError, match="preprocess"):
        evaluate(BrightnessNet(LEVELS3), arr)
    with pytest.raises(ValueError, match="outputs 3 classes"):
        evaluate(BrightnessNet(LEVELS3), arr, preprocess=PRE, labels=("neutral", "happy"))


def test_tta_changes_nothing_for_a_mirror_symmetric_image():
    rng = np.random.default_rng(0)
    left = rng.integers(0, 256, (5, 8, 4), dtype=np.uint8)
    sym = np.concatenate([left, left[:, :, ::-1]], axis=2)                   # (5, 8, 8), mirror-symmetric
    net = FlattenNet()
    plain = predict_proba(net, sym, PRE, batch_size=2)
    tta = predict_proba(net, sym, PRE, batch_size=2, tta=True)
    np.testing.assert_allclose(tta, plain, atol=1e-6)
    # and for ordinary images TTA is the mean of the image's and its mirror's probabilities
    imgs = rng.integers(0, 256, (5, 8, 8), dtype=np.uint8)
    mirrored = np.ascontiguousarray(imgs[:, :, ::-1])
    expect = 0.5 * (predict_proba(net, imgs, PRE) + predict_proba(net, mirrored, PRE))
    got = predict_proba(net, imgs, PRE, tta=True)
    np.testing.assert_allclose(got, expect, atol=1e-6)
    assert not np.allclose(got, predict_proba(net, imgs, PRE), atol=1e-4)
    # mirror=True classifies the mirrors only: the second half of TTA, for callers that need both
    np.testing.assert_allclose(predict_proba(net, imgs, PRE, mirror=True), predict_proba(net, mirrored, PRE),
                               atol=1e-6)
    with pytest.raises(ValueError, match="exclusive"):
        predict_proba(net, imgs, PRE, tta=True, mirror=True)


def test_ferplus8_model_on_fer2013_data(tmp_path):
    levels8 = np.linspace(20, 235, 8).round().astype(int).tolist()        # one grey level per FER+ class
    # model classes: happy (1), contempt (7; nearest other level: fear, 6), neutral (0)
    images = grey_images(levels8, [1, 7, 0])
    targets = [FER2013.index("happy"), FER2013.index("fear"), FER2013.index("neutral")]
    arr = arrays_of(images, targets, FER2013, name="fer2013", split="privatetest")
    net = BrightnessNet(levels8)
    err = evaluate(net, arr, preprocess=PRE, labels=FERPLUS8, out_dir=tmp_path / "err")
    assert err.metrics["accuracy"] == pytest.approx(2 / 3)
    assert err.metrics["unmapped_predictions"] == 1
    assert err.y_pred.tolist() == [FER2013.index("happy"), -1, FER2013.index("neutral")]
    assert "contempt" in err.metrics["label_mapping"]
    report = (tmp_path / "err" / "report.md").read_text()
    assert "unmapped" in report and "count as errors" in report
    with open(tmp_path / "err" / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert rows[1]["predicted"] == "contempt" and rows[1]["counted_as"] == "unmapped" and rows[1]["correct"] == "0"
    restrict = evaluate(net, arr, preprocess=PRE, labels=FERPLUS8, unmapped="restrict")
    assert restrict.metrics["accuracy"] == pytest.approx(1.0)
    assert restrict.metrics["unmapped_predictions"] == 0


# ------------------------------------------------------------------------------ checkpoint + CLI
def _save_checkpoint(path: Path, labels=L3, size=24) -> Path:
    from litefer.models import create_model
    torch.manual_seed(0)
    model = create_model("mini_xception", num_classes=len(labels), in_chans=1)
    torch.save({"arch": "mini_xception", "arch_kwargs": {}, "labels": list(labels),
                "preprocess": {"channels": 1, "size": size, "mean": [0.5], "std": [0.5], "crop": "fer"},
                "state_dict": model.state_dict(), "epoch": 3}, path)
    return path


def _text(r) -> str:
    """CLI output with rich's line wrapping undone (wrap points depend on path lengths)."""
    return " ".join(r.output.split())


def _app():
    from litefer.cli.evaluate import register
    app = typer.Typer()
    register(app)
    return app


def test_cli_evaluate_checkpoint(tmp_path):
    ckpt = _save_checkpoint(tmp_path / "tiny.pt")
    excl = tmp_path / "exclude.txt"
    excl.write_text("# audit\nsyn3_000000\nsyn3_000005,blurry\n")
    out = tmp_path / "eval"
    r = CliRunner().invoke(_app(), ["evaluate", str(ckpt), "--dataset", "synthetic", "--split", "test",
                                    "--opt", "n=30", "--opt", "num_classes=3", "--opt", "size=24",
                                    "--exclude", str(excl), "--tta", "--out", str(out), "--device", "cpu",
                                    "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["n"] == 28 and summary["tta"] is True
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["n"] == 28 and saved["accuracy"] == pytest.approx(summary["accuracy"])
    assert saved["tta"] is True and saved["info"]["arch"] == "mini_xception"
    for name in ("report.md", "confusion.png", "predictions.csv"):
        assert (out / name).stat().st_size > 0
    ids = [row["id"] for row in csv.DictReader(open(out / "predictions.csv"))]
    assert "syn3_000000" not in ids and "syn3_000005" not in ids and len(ids) == 28


def test_cli_evaluate_safetensors_and_errors(tmp_path):
    from litefer.models.checkpoint import read_checkpoint, save_safetensors
    meta, state, _ = read_checkpoint(_save_checkpoint(tmp_path / "tiny.pt", labels=("sad", "neutral", "happy")))
    st = save_safetensors(tmp_path / "tiny.safetensors", meta, state)
    app = _app()
    r = CliRunner().invoke(app, ["evaluate", str(st), "--dataset", "synthetic", "--split", "test",
                                 "--opt", "n=12", "--opt", "num_classes=3", "--opt", "size=24"])
    assert r.exit_code == 0, r.output
    assert "matched by name" in _text(r)                  # same classes, another order
    r = CliRunner().invoke(app, ["evaluate", str(tmp_path / "missing.pt"), "--dataset", "synthetic",
                                 "--split", "test"])
    assert r.exit_code == 2 and "no such checkpoint" in _text(r)
    r = CliRunner().invoke(app, ["evaluate", str(st), "--dataset", "synthetic", "--split", "test",
                                 "--unmapped", "drop"])
    assert r.exit_code == 2 and "--unmapped" in _text(r)


def test_commands_are_registered_on_the_main_app():
    from litefer.cli import app
    names = {c.name for c in app.registered_commands}
    assert {"evaluate", "cv", "ablate"} <= names


# ------------------------------------------------------------------------------ cross-validation
def _cv_config(**data):
    from litefer.training import config_from_dict
    d = {"dataset": "synthetic", "val_split": None, "test_split": None, "num_classes": 3,
         "options": {"n_train": 64, "size": 24}}
    d.update(data)
    return config_from_dict({
        "name": "cvtest", "data": d, "model": {"arch": "mini_xception", "input_size": 24},
        "sched": {"name": "none"}, "optim": {"lr": 0.01},
        "train": {"epochs": 1, "batch_size": 16, "device": "cpu", "progress": False, "tensorboard": False,
                  "workers": 0, "autotune": False},
    })


def test_cv_mocked_training_subject_disjoint_and_mean_std(tmp_path):
    from litefer.training import config_from_dict
    # 8 subjects x 6 images, 3 classes; subjects 0-2 are "hard": the model gets their last 3 images wrong
    n_sub, per = 8, 6
    groups = np.repeat(np.arange(n_sub), per)
    y = np.tile(np.arange(per) % 3, n_sub)
    pred = y.copy()
    hard = (groups < 3) & (np.tile(np.arange(per), n_sub) >= 3)
    pred[hard] = (y[hard] + 1) % 3
    arr = arrays_of(grey_images(LEVELS3, pred), y, L3, groups=groups, name="toy", split="train")
    seen = []

    def fake_train(cfg, out_dir, data=None, max_epochs=None, quiet=False):
        seen.append((cfg, data))
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        return SimpleNamespace(model=BrightnessNet(LEVELS3), preprocess=PRE, labels=L3, best_epoch=1,
                               best_metrics={"acc": 0.5}, history=[{}], best_checkpoint=None, out_dir=out_dir)

    cfg = config_from_dict({"name": "toy", "data": {"dataset": "synthetic", "val_split": None, "test_split": None}})
    rep = cross_validate(cfg, 4, tmp_path / "cv", arrays=arr, seed=0, train_fn=fake_train)
    assert rep.by_subject and len(rep.folds) == 4 and len(seen) == 4
    expected = []
    tested = []
    for i, (c, splits) in enumerate(seen):
        assert c.name == "toy-fold%d" % i and c.data.folds == 4 and c.data.fold == i
        test_subjects = set(splits.test.groups.tolist())
        assert not test_subjects & set(splits.train.groups.tolist())
        assert not test_subjects & set(splits.val.groups.tolist())
        assert len(splits.train) + len(splits.val) + len(splits.test) == n_sub * per
        idx = [int(s[3:]) for s in splits.test.ids]                 # ids are img###
        tested += idx
        expected.append(float((pred[idx] == y[idx]).mean()))
    assert sorted(tested) == list(range(n_sub * per))               # every image tested exactly once
    acc = rep.summary["accuracy"]
    assert acc["values"] == pytest.approx(expected)
    assert acc["mean"] == pytest.approx(np.mean(expected)) and acc["std"] == pytest.approx(np.std(expected))
    assert rep.pooled["accuracy"] == pytest.approx(1 - hard.sum() / hard.size)
    md = (tmp_path / "cv" / "cv.md").read_text()
    assert format_mean_std(expected) in md and "subject-independent" in md
    rows = list(csv.reader(open(tmp_path / "cv" / "cv.csv")))
    assert len(rows) == 1 + 4 + 2 and rows[-2][0] == "mean" and rows[-1][0] == "std"
    # by default the validation hold-out is image-level (stratified) ...
    assert any(set(sp.val.groups.tolist()) & set(sp.train.groups.tolist()) for _, sp in seen)
    # ... with data.val_by_subject it holds out whole subjects, as the trainer does
    seen.clear()
    subj_cfg = copy.deepcopy(cfg)
    subj_cfg.data.val_by_subject, subj_cfg.data.val_fraction = True, 0.34   # 3 subject folds of 6 subjects
    cross_validate(subj_cfg, 4, tmp_path / "cv_subj", arrays=arr, seed=0, train_fn=fake_train)
    assert len(seen) == 4
    for _, sp in seen:
        assert len(sp.val) and not set(sp.val.groups.tolist()) & set(sp.train.groups.tolist())
        assert len(sp.train) + len(sp.val) + len(sp.test) == n_sub * per
    assert float(rows[-2][7]) == pytest.approx(np.mean(expected))
    assert (tmp_path / "cv" / "confusion.png").stat().st_size > 0
    assert (tmp_path / "cv" / "fold0" / "eval" / "report.md").is_file()
    # without subject ids: stratified folds
    arr.groups = None
    rep = cross_validate(cfg, 3, tmp_path / "cv2", arrays=arr, train_fn=fake_train)
    assert not rep.by_subject and "stratified by class (the data has no subject ids)" in \
        (tmp_path / "cv2" / "cv.md").read_text()
    with pytest.raises(CVError, match="no subject ids"):
        cross_validate(subj_cfg, 3, tmp_path / "cv3", arrays=arr, train_fn=fake_train)


def test_cv_real_trainer_one_epoch(tmp_path):
    from litefer.training import train
    calls = []

    def recording_train(cfg, out_dir, **kw):
        calls.append(kw["data"])
        return train(cfg, out_dir, **kw)

    rep = cross_validate(_cv_config(), 2, tmp_path / "cv", quiet=True, train_fn=recording_train)
    assert len(rep.folds) == 2 and rep.by_subject
    for splits in calls:
        assert not set(splits.test.groups.tolist()) & set(splits.train.groups.tolist())
    for f, splits in zip(rep.folds, calls):
        assert (f.out_dir / "best.pt").is_file() and f.n_test == len(splits.test) > 0
        # the fold's accuracy is its best checkpoint's, measured again on its test images ...
        again = evaluate(f.out_dir / "best.pt", splits.test)
        assert f.metrics["accuracy"] == pytest.approx(again.metrics["accuracy"], abs=1e-12)
        # ... and the share of correct rows in its predictions file
        rows = list(csv.DictReader(open(f.out_dir / "eval" / "predictions.csv")))
        assert sorted(r["id"] for r in rows) == sorted(splits.test.ids)
        assert f.metrics["accuracy"] == pytest.approx(sum(int(r["correct"]) for r in rows) / len(rows))
    accs = [f.metrics["accuracy"] for f in rep.folds]
    assert rep.summary["accuracy"]["mean"] == pytest.approx(np.mean(accs))
    assert format_mean_std(accs) in (tmp_path / "cv" / "cv.md").read_text()


def test_cli_cv_and_ablate(tmp_path):
    import yaml
    cfg = _cv_config().to_dict()
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    app = _app()
    r = CliRunner().invoke(app, ["cv", str(cfg_path), "--folds", "2", "--fold", "1", "--out", str(tmp_path / "cv"),
                                 "--quiet", "--set", "train.batch_size=32"])
    assert r.exit_code == 0, r.output
    assert "over 1 fold(s)" in _text(r) and (tmp_path / "cv" / "fold1" / "best.pt").is_file()
    assert not (tmp_path / "cv" / "fold0").exists()
    assert "train.batch_size=32" not in (tmp_path / "cv" / "fold1" / "config.yaml").read_text()
    assert "batch_size: 32" in (tmp_path / "cv" / "fold1" / "config.yaml").read_text()

    spec = tmp_path / "abl.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "tinyabl", "base": "tiny.yaml",
        "set": ["data.test_split=test", "data.options.n_test=24"],
        "variants": {"baseline": {}, "high_lr": ["optim.lr=0.05"], "no_flip": {"aug": {"hflip": 0.0}}},
    }))
    out = tmp_path / "abl"
    r = CliRunner().invoke(app, ["ablate", str(spec), "--out", str(out), "--quiet", "--only", "baseline",
                                 "--only", "no_flip"])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(out / "ablation.csv")))
    assert [row["variant"] for row in rows] == ["baseline", "no_flip"]
    assert rows[0]["delta_test_acc"] == "0.0" and rows[1]["overrides"] == "aug.hflip=0.0"
    for row in rows:       # each row is its run's test accuracy, as the run itself recorded it
        run = json.loads((out / row["variant"] / "result.json").read_text())
        assert float(row["test_acc"]) == pytest.approx(run["test"]["acc"])
    assert float(rows[1]["delta_test_acc"]) == pytest.approx(float(rows[1]["test_acc"]) - float(rows[0]["test_acc"]))
    md = (out / "ablation.md").read_text()
    assert "| baseline |" in md and "not run yet**: high_lr" in md and "Δ test acc" in md
    # a second run reuses the finished variants and trains only the missing one
    from litefer.evaluation.ablation import run_ablation
    trained = []

    def counting(cfg, out_dir, **kw):
        trained.append(cfg.name)
        from litefer.training import train
        return train(cfg, out_dir, **kw)

    res = run_ablation(spec, out, quiet=True, train_fn=counting)
    assert trained == ["tinyabl-high_lr"] and [r["variant"] for r in res.rows] == ["baseline", "high_lr", "no_flip"]
    # a run written by an older litefer lacks the fields added since: still reused; a run
    # whose config set a value that differs from today's is retrained
    for variant, edit in (("baseline", lambda c: c["train"].pop("ema_decay")),
                          ("no_flip", lambda c: c["train"].update(cpu_bf16="on"))):
        f = out / variant / "ablation_row.json"
        row = json.loads(f.read_text())
        c = yaml.safe_load(row["config"])
        edit(c)
        row["config"] = yaml.safe_dump(c, sort_keys=False)
        f.write_text(json.dumps(row))
    trained.clear()
    run_ablation(spec, out, quiet=True, train_fn=counting)
    assert trained == ["tinyabl-no_flip"]
    r = CliRunner().invoke(app, ["ablate", str(spec), "--only", "nope"])
    assert r.exit_code == 2 and "nope" in _text(r)


def _test_subjects(fold_dir: Path) -> set:
    """Subjects of the images a fold tested (synthetic ids -> the generator's subject ids)."""
    from litefer.training import synthetic_faces
    arr = synthetic_faces(64, 3, 24, seed=1)
    group = dict(zip(arr.ids, arr.groups.tolist()))
    return {group[r["id"]] for r in csv.DictReader(open(fold_dir / "eval" / "predictions.csv"))}


def test_cli_cv_stratified_ignores_subjects(tmp_path):
    """By default the synthetic data's subject ids make the folds subject-independent; with
    --stratified the folds are stratified by class instead and a subject may be tested twice."""
    import yaml
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(_cv_config().to_dict()))
    runs = {}
    for name, extra in (("subject", []), ("stratified", ["--stratified"])):
        r = CliRunner().invoke(_app(), ["cv", str(cfg_path), "--folds", "2", "--out", str(tmp_path / name),
                                        "--quiet", *extra])
        assert r.exit_code == 0, r.output
        runs[name] = json.loads((tmp_path / name / "cv.json").read_text())
    assert runs["subject"]["by_subject"] is True and runs["stratified"]["by_subject"] is False
    s0, s1 = (_test_subjects(tmp_path / "subject" / f"fold{i}") for i in (0, 1))
    assert s0 and s1 and not s0 & s1
    t0, t1 = (_test_subjects(tmp_path / "stratified" / f"fold{i}") for i in (0, 1))
    assert t0 & t1, "stratified folds split at least one subject across folds"
    from litefer.training import synthetic_faces
    arr = synthetic_faces(64, 3, 24, seed=1)
    total = {lab: int(c) for lab, c in zip(arr.labels, np.bincount(arr.targets, minlength=3))}
    for i in (0, 1):                    # class-stratified: each class within one image of half its count
        rows = list(csv.DictReader(open(tmp_path / "stratified" / f"fold{i}" / "eval" / "predictions.csv")))
        counts = {lab: sum(r["true"] == lab for r in rows) for lab in total}
        assert all(abs(counts[lab] - total[lab] / 2) <= 1 for lab in total), (counts, total)
    md = (tmp_path / "stratified" / "cv.md").read_text()
    assert "stratified by class (asked for; the data has subject ids" in md and "has no subject ids" not in md


def test_ablate_with_folds_and_retraining_a_changed_variant(tmp_path):
    import yaml
    from litefer.evaluation.ablation import run_ablation
    from litefer.training import train
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(_cv_config().to_dict()))
    spec = tmp_path / "abl.yaml"

    def write_spec(lr: float) -> None:
        spec.write_text(yaml.safe_dump({"name": "cvabl", "base": "tiny.yaml", "folds": 2,
                                        "variants": {"baseline": {}, "other_lr": [f"optim.lr={lr}"]}}))

    write_spec(0.05)
    out = tmp_path / "abl"
    r = CliRunner().invoke(_app(), ["ablate", str(spec), "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(out / "ablation.csv")))
    assert [row["variant"] for row in rows] == ["baseline", "other_lr"]
    for row in rows:                    # mean and std over the variant's two folds
        cv = json.loads((out / row["variant"] / "cv.json").read_text())
        vals = cv["summary"]["accuracy"]["values"]
        assert len(vals) == 2 and (out / row["variant"] / "fold1" / "best.pt").is_file()
        assert float(row["test_acc"]) == pytest.approx(np.mean(vals))
        assert float(row["test_acc_std"]) == pytest.approx(np.std(vals))
    assert "2-fold cross-validation" in (out / "ablation.md").read_text()
    # the spec changes one variant: only that variant is trained again (both of its folds)
    write_spec(0.02)
    trained = []

    def counting(cfg, out_dir, **kw):
        trained.append(cfg.name)
        return train(cfg, out_dir, **kw)

    res = run_ablation(spec, out, quiet=True, train_fn=counting)
    assert len(trained) == 2 and all("other_lr" in n for n in trained), trained
    assert [row["overrides"] for row in res.rows] == ["(base)", "optim.lr=0.02"]
    assert "optim.lr=0.02" in (out / "ablation.md").read_text()


def test_ablation_spec_errors(tmp_path):
    from litefer.evaluation.ablation import AblationError, load_spec, variant_configs
    base = tmp_path / "base.yaml"
    base.write_text("data: {dataset: synthetic, val_split: null, test_split: null}\n")
    spec = tmp_path / "s.yaml"
    spec.write_text("base: base.yaml\nvariants: {a: {}, b: [optim.lr=0.1], c: {optim: {lr: 0.2, name: sgd}}}\n")
    s = load_spec(spec)
    assert s.variants == {"a": [], "b": ["optim.lr=0.1"], "c": ["optim.lr=0.2", "optim.name=sgd"]}
    cfgs = variant_configs(s)
    assert cfgs["c"].optim.lr == 0.2 and cfgs["c"].optim.name == "sgd" and cfgs["b"].optim.lr == 0.1
    spec.write_text("base: base.yaml\nvariants: {a: [optim.lrr=0.1]}\n")
    with pytest.raises(AblationError, match="variant 'a'.*optim.lrr"):
        variant_configs(load_spec(spec))
    spec.write_text("base: nothere.yaml\nvariants: {a: {}}\n")
    with pytest.raises(AblationError, match="not found"):
        load_spec(spec)
    spec.write_text("base: base.yaml\nvariant: {a: {}}\n")
    with pytest.raises(AblationError, match="unknown key"):
        load_spec(spec)
