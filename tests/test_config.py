"""Training configs: loading, coercion, overrides, clear errors, the shipped experiment configs."""
from __future__ import annotations

from pathlib import Path

import pytest

from litefer.training.config import (ConfigError, TrainConfig, apply_overrides, config_from_dict, dump_config,
                                     load_config)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
#: every training config shipped in configs/ (the mood-player example is not one)
TRAIN_CONFIGS = sorted(p.stem for p in CONFIGS.glob("*.yaml") if not p.name.startswith("moods"))


def _write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ------------------------------------------------------------------------------ loading
def test_defaults_and_name_from_file(tmp_path):
    cfg = load_config(_write(tmp_path, "optim: {lr: 0.1}\n", "my_run.yaml"))
    assert isinstance(cfg, TrainConfig)
    assert cfg.name == "my_run" and cfg.out_dir() == Path("runs/my_run")
    assert cfg.optim.lr == 0.1 and cfg.optim.name == "adamw"          # rest from defaults
    assert cfg.loss.center.weight == 0.0


def test_yaml_quirks_are_coerced(tmp_path):
    p = _write(tmp_path, """
optim: {lr: 1e-4, weight_decay: 5e-4, betas: "0.8, 0.99"}
train: {epochs: 10.0, amp: "no", grad_clip: "2"}
aug: {scale: "0.9, 1.0", erasing_value: random}
loss: {class_weights: "1, 2, 3"}
""")
    cfg = load_config(p)
    assert cfg.optim.lr == 1e-4 and isinstance(cfg.optim.lr, float)    # PyYAML reads 1e-4 as a string
    assert cfg.optim.weight_decay == 5e-4
    assert cfg.optim.betas == [0.8, 0.99]
    assert cfg.train.epochs == 10 and isinstance(cfg.train.epochs, int)
    assert cfg.train.amp is False and cfg.train.grad_clip == 2.0
    assert cfg.aug.scale == [0.9, 1.0]
    assert cfg.aug.erasing_value == "random"
    assert cfg.loss.class_weights == [1.0, 2.0, 3.0]


def test_overrides_with_type_coercion(tmp_path):
    p = _write(tmp_path, "optim: {name: sgd, lr: 0.01}\n")
    cfg = load_config(p, overrides=["optim.lr=1e-3", "train.amp=false", "aug.scale=0.8,1.0",
                                    "model.kwargs.drop_rate=0.3", "data.val_split=null", "data.val_fraction=0.2",
                                    "loss.class_weights=balanced", "loss.center.weight=0.01", "train.workers=2",
                                    "name=other"])
    assert cfg.optim.lr == 1e-3 and cfg.optim.name == "sgd"
    assert cfg.train.amp is False
    assert cfg.aug.scale == [0.8, 1.0]
    assert cfg.model.kwargs == {"drop_rate": 0.3}
    assert cfg.data.val_split is None and cfg.data.val_fraction == 0.2
    assert cfg.loss.class_weights == "balanced" and cfg.loss.center.weight == 0.01
    assert cfg.train.workers == 2 and cfg.name == "other"
    # a whole section as YAML
    apply_overrides(cfg, ["sched={name: step, step_size: 5, gamma: 0.5}"])
    assert (cfg.sched.name, cfg.sched.step_size, cfg.sched.gamma) == ("step", 5, 0.5)


def test_unquoted_on_off_reach_a_word_field(tmp_path):
    # YAML 1.1 reads an unquoted on / off as true / false: a field whose words are on / off
    # takes them as meant, in a file and in --set, and other string fields still refuse booleans
    cfg = load_config(_write(tmp_path, "train: {cpu_bf16: off}\n"))
    assert cfg.train.cpu_bf16 == "off"
    assert load_config(_write(tmp_path, "{}\n"), overrides=["train.cpu_bf16=on"]).train.cpu_bf16 == "on"
    with pytest.raises(ConfigError, match="optim.name"):
        load_config(_write(tmp_path, "optim: {name: off}\n"))


def test_dump_and_reload_roundtrip(tmp_path):
    cfg = config_from_dict({"optim": {"name": "sgd", "lr": 0.05}, "loss": {"cosine_harmony": {"weight": 1.0}},
                            "model": {"kwargs": {"drop_rate": 0.5}}}, name="rt")
    p = _write(tmp_path, dump_config(cfg))
    again = load_config(p)
    assert again.to_dict() == {**cfg.to_dict(), "name": "rt"}


# ------------------------------------------------------------------------------ errors
def test_unknown_key_names_file_key_and_suggestion(tmp_path):
    p = _write(tmp_path, "optim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    msg = str(ei.value)
    assert str(p) in msg and "optim.lrr" in msg and "optim.lr" in msg and "Did you mean" in msg
    assert ei.value.key == "optim.lrr" and ei.value.source == str(p)


def test_unknown_section_and_override_errors(tmp_path):
    p = _write(tmp_path, "optimizer: {lr: 0.1}\n")
    with pytest.raises(ConfigError, match=r"unknown key.*optim"):
        load_config(p)
    good = _write(tmp_path, "{}\n", "good.yaml")
    with pytest.raises(ConfigError) as ei:
        load_config(good, overrides=["train.epoch=3"])
    assert "--set train.epoch=3" in str(ei.value) and "train.epochs" in str(ei.value)
    with pytest.raises(ConfigError, match="key=value"):
        load_config(good, overrides=["train.epochs"])
    with pytest.raises(ConfigError, match="not a section"):
        load_config(good, overrides=["optim.lr.x=1"])


def test_wrong_types_and_choices(tmp_path):
    good = _write(tmp_path, "{}\n")
    with pytest.raises(ConfigError, match=r"'train\.epochs'.*expected int, got 'abc'"):
        load_config(good, ["train.epochs=abc"])
    with pytest.raises(ConfigError, match=r"'train\.epochs'.*expected int"):
        load_config(good, ["train.epochs=2.5"])
    with pytest.raises(ConfigError, match=r"'optim\.name'.*not one of.*did you mean 'sgd'"):
        load_config(good, ["optim.name=sgdd"])
    with pytest.raises(ConfigError, match=r"'train\.amp'.*expected bool"):
        load_config(good, ["train.amp=maybe"])
    with pytest.raises(ConfigError, match=r"'loss\.class_weights'.*did you mean 'balanced'"):
        load_config(good, ["loss.class_weights=balancd"])
    with pytest.raises(ConfigError, match=r"'model\.in_chans'"):
        load_config(good, ["model.in_chans=2"])
    bad = _write(tmp_path, "train:\n  epochs: [1, 2]\n", "bad.yaml")
    with pytest.raises(ConfigError) as ei:
        load_config(bad)
    assert str(bad) in str(ei.value) and "train.epochs" in str(ei.value)
    notmap = _write(tmp_path, "train: 5\n", "notmap.yaml")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(notmap)


def test_cross_field_validation(tmp_path):
    good = _write(tmp_path, "{}\n")
    cases = {
        "optim.lr=0": "optim.lr",
        "sched.warmup_epochs=40": "sched.warmup_epochs",
        "data.folds=1": "data.folds",
        "aug.scale=1.0,0.5": "aug.scale",
        "aug.hflip=1.5": "aug.hflip",
        "optim.betas=0.9": "optim.betas",
        "train.oversample.max_factor=0.5": "train.oversample.max_factor",
        "sched.name=multistep": "sched.milestones",
    }
    for override, key in cases.items():
        with pytest.raises(ConfigError) as ei:
            load_config(good, [override])
        assert ei.value.key == key, (override, str(ei.value))
    with pytest.raises(ConfigError, match="test_split"):
        load_config(good, ["data.folds=5"])           # CV takes the test set from the folds
    with pytest.raises(ConfigError, match="val_fraction"):
        load_config(good, ["data.val_split=null", "data.val_fraction=0"])


def test_invalid_yaml_and_missing_file(tmp_path):
    p = _write(tmp_path, "optim: {lr: 0.1\ntrain: [\n")
    with pytest.raises(ConfigError, match=r"invalid YAML \(line"):
        load_config(p)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")


# ------------------------------------------------------------------------------ shipped configs
@pytest.mark.parametrize("name", TRAIN_CONFIGS)
def test_shipped_configs_load(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg.name == name
    # model selection never on the test split
    assert cfg.data.val_split is None or cfg.data.val_split != cfg.data.test_split


def test_shipped_configs_are_all_tested():
    assert len(TRAIN_CONFIGS) >= 25 and "i_mobilenetv2_fer2013" in TRAIN_CONFIGS


def test_shipped_configs_state_the_papers_settings():
    c = load_config(CONFIGS / "i_mobilenetv2_fer2013.yaml")
    assert (c.optim.name, c.optim.lr, c.optim.momentum, c.optim.weight_decay) == ("sgd", 0.01, 0.9, 5e-4)
    assert (c.train.batch_size, c.train.epochs) == (32, 350)
    assert (c.data.val_split, c.data.test_split) == ("publictest", "privatetest")
    c = load_config(CONFIGS / "i_mobilenetv2_ckplus.yaml")
    assert c.data.folds == 10 and c.data.val_split is None and c.data.test_split is None and c.data.val_by_subject
    for n in ("a_mobilenet_ferplus", "a_mobilenet_rafdb"):
        c = load_config(CONFIGS / f"{n}.yaml")
        assert (c.optim.name, c.optim.lr, c.train.batch_size, c.train.epochs) == ("adam", 1e-4, 64, 100)
        assert c.sched.name == "inverse_time" and c.sched.decay == 1e-5
        assert c.model.kwargs["drop_rate"] == 0.5 and c.loss.center.weight > 0
        assert c.train.oversample.enabled and c.aug.rotation > 0 and c.aug.translate > 0 and c.aug.scale[0] < 1
    assert load_config(CONFIGS / "a_mobilenet_rafdb.yaml").data.val_split is None
    for n, lr in (("lfnsb_rafdb", 0.01), ("lfnsb_affectnet7", 1e-4), ("lfnsb_affectnet8", 1e-4)):
        c = load_config(CONFIGS / f"{n}.yaml")
        assert (c.optim.lr, c.train.batch_size, c.train.epochs) == (lr, 256, 40)
        assert c.loss.cosine_harmony.weight > 0 and c.loss.cosine_harmony.alpha == 0.1
        assert c.aug.hflip > 0 and c.aug.rotation > 0 and c.aug.scale[0] < 1 and c.aug.erasing > 0
        assert c.data.val_split is None                  # hold-out of train, not the test split
    assert load_config(CONFIGS / "lfnsb_affectnet7.yaml").data.num_classes == 7
    assert load_config(CONFIGS / "lfnsb_affectnet8.yaml").data.num_classes == 8
    c = load_config(CONFIGS / "se_sepnet_fer2013.yaml")
    assert (c.optim.name, c.train.epochs) == ("adam", 50) and c.train.early_stopping > 0
    c = load_config(CONFIGS / "default_ferplus.yaml")
    assert (c.model.in_chans, c.model.input_size, c.data.num_classes, c.data.label_mode) == (1, 48, 8, "majority")
    assert c.train.epochs <= 40


def test_shipped_configs_name_registered_models():
    """Each config's arch must exist in the model zoo."""
    from litefer.models import list_models
    known = set(list_models())
    for name in TRAIN_CONFIGS:
        arch = load_config(CONFIGS / f"{name}.yaml").model.arch
        if arch not in known:
            pytest.fail(f"configs/{name}.yaml names model {arch!r}, not in the zoo: {sorted(known)}")


@pytest.mark.parametrize("name", TRAIN_CONFIGS)
def test_shipped_configs_build_model_loss_and_transforms(name):
    """Model kwargs, input, loss and augmentation of every config fit together (one step)."""
    import numpy as np
    import torch
    from litefer.models import list_models
    from litefer.training.trainer import _Step, build_criterion, build_model, build_optimizer, build_transforms
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg.model.arch in list_models()
    torch.manual_seed(0)
    n_cls = cfg.data.num_classes or 7
    from litefer.training.build import init_path
    if cfg.model.init_from and not init_path(cfg).is_file():
        # a later stage names an earlier run's best.pt (runs/ is not in the repository): a clean
        # clone gets a clear error naming the key and the file; the rest of the config is checked
        with pytest.raises(ConfigError, match=r"model\.init_from.*no such weight file"):
            build_model(cfg, n_cls)
        cfg.model.init_from = None
    model, pre = build_model(cfg, n_cls)
    crit = build_criterion(cfg, n_cls, model.num_features, np.full(n_cls, 10))
    opt = build_optimizer(cfg, model, crit.model_params())
    tr, ev = build_transforms(cfg, pre)
    rng = np.random.default_rng(0)
    src = rng.integers(0, 256, (2, 48, 48), dtype=np.uint8)          # FER-style source images
    x = torch.stack([tr(im, np.random.default_rng(i)) for i, im in enumerate(src)])
    assert x.shape == (2, pre["channels"], pre["size"], pre["size"])
    assert ev(src[0]).shape == x.shape[1:]
    y = torch.tensor([0, 1])
    loss, logits, parts = _Step(model.train(), crit)(x, y)
    loss.backward()
    opt.step()
    assert logits.shape == (2, n_cls) and torch.isfinite(loss)
    assert ("center" in parts) == (cfg.loss.center.weight > 0) and ("ch" in parts) == (cfg.loss.cosine_harmony.weight > 0)
