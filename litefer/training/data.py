"""Data for a training run: the train / validation / test splits a config describes.

- :func:`prepare_data`: train, a *validation* split for model selection (a named split
  such as FER2013/FER+ PublicTest; or a seeded hold-out of train, stratified by class, or
  by subject with ``data.val_by_subject``) and optionally a *test* split (a named split,
  or the held-out fold of subject-independent k-fold cross-validation);
- every class of the label space must have training images (an empty or missing class
  folder is refused, naming the class); a class missing from the validation or test
  split is a warning;
- :func:`synthetic_faces`: learnable stand-in images for smoke tests.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from litefer.data.base import FaceArrays
from litefer.training.config import ConfigError, TrainConfig


class DataWarning(UserWarning):
    """Something about the data is odd but training can go on (e.g. a class absent from validation)."""


@dataclass
class DataSplits:
    train: FaceArrays
    val: FaceArrays
    test: Optional[FaceArrays] = None
    #: what was loaded and how (recorded in checkpoints and result.json)
    info: dict = field(default_factory=dict)


def _src(cfg: TrainConfig) -> str:
    """Where ``cfg`` came from (its file, for error messages)."""
    return getattr(cfg, "source", None) or f"config {cfg.name!r}"


# ------------------------------------------------------------------------------ synthetic data
def synthetic_faces(n: int, num_classes: int = 7, size: int = 48, channels: int = 1, seed: int = 0,
                    noise: float = 40.0, split: str = "train") -> FaceArrays:
    """Learnable stand-in images: class ``k`` is a bright horizontal band at height ``k``.

    The pattern survives horizontal flips and small rotations/crops, so augmented training
    on it must still beat chance.  ``groups`` are 16 fake subjects (for CV smoke tests).
    """
    from litefer.labels import CANONICAL
    if not 2 <= num_classes <= len(CANONICAL):
        raise ValueError(f"synthetic data supports 2..{len(CANONICAL)} classes")
    rng = np.random.default_rng(seed)
    y = np.arange(n) % num_classes
    rng.shuffle(y)
    rows = np.arange(size, dtype=np.float32)[None, :]
    centre = (y[:, None] + 0.5) / num_classes * size + rng.normal(0, size / (8 * num_classes), (n, 1))
    band = np.exp(-0.5 * ((rows - centre) / (size / (3 * num_classes))) ** 2)          # (n, size)
    img = 60 + 150 * band[:, :, None] + rng.normal(0, noise, (n, size, size))
    img = np.clip(img, 0, 255).astype(np.uint8)
    if channels == 3:
        img = np.repeat(img[..., None], 3, axis=3)
    return FaceArrays(images=img, targets=y.astype(np.int64), labels=tuple(CANONICAL[:num_classes]),
                      ids=[f"syn{seed}_{i:06d}" for i in range(n)], groups=np.arange(n) % 16,
                      name="synthetic", split=split)


# ------------------------------------------------------------------------------ data
def read_exclude_list(path: str | Path, source: str = "config") -> set[str]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"exclude list {p} does not exist", source, "data.exclude")
    ids = set()
    for line in p.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            ids.add(line.split(",")[0].strip())
    return ids


def stratified_holdout(targets: np.ndarray, fraction: float, seed: int,
                       source: str = "config") -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx) by :func:`litefer.data.splits.stratified_holdout`."""
    from litefer.data.splits import stratified_holdout as fn
    try:
        return fn(targets, fraction, seed=seed)
    except ValueError as exc:
        raise ConfigError(str(exc), source, "data.val_fraction") from None


def subject_folds(groups: np.ndarray, k: int, seed: int, fold: int,
                  source: str = "config") -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, test_idx) of fold ``fold`` of :func:`litefer.data.splits.subject_kfold`."""
    from litefer.data.splits import subject_kfold
    try:
        return subject_kfold(groups, k, seed=seed)[fold]
    except ValueError as exc:
        raise ConfigError(str(exc), source, "data.folds") from None


def subject_holdout(groups: np.ndarray, val_fraction: float, val_seed: int,
                    source: str = "config") -> tuple[np.ndarray, np.ndarray, int]:
    """(train_idx, val_idx, k): whole subjects held out for validation, one of ``k`` subject
    folds with ``k = round(1 / val_fraction)`` (the frames of one person are near-duplicates,
    so an image-level hold-out would flatter model selection)."""
    k = max(2, int(round(1.0 / val_fraction)))
    tr, va = subject_folds(groups, k, val_seed + 7919, 0, source)
    return tr, va, k


def _load_split(cfg: TrainConfig, split: str, role: str) -> FaceArrays:
    d = cfg.data
    if d.dataset == "synthetic":
        o = dict(d.options)
        known = {"n_train", "n_val", "n_test", "size", "channels", "noise"}
        bad = set(o) - known
        if bad:
            raise ConfigError(f"unknown synthetic option(s) {sorted(bad)}; known: {sorted(known)}", _src(cfg), "data.options")
        n = int(o.get(f"n_{role}", {"train": 512, "val": 128, "test": 128}[role]))
        seeds = {"train": 1, "val": 2, "test": 3}
        return synthetic_faces(n, d.num_classes or 7, int(o.get("size", 48)), int(o.get("channels", 1)),
                               seed=seeds[role] + 10 * d.val_seed, noise=float(o.get("noise", 40.0)), split=split)
    try:
        from litefer.data import load_dataset
    except ImportError as exc:
        raise ConfigError(f"dataset readers are not available ({exc})", _src(cfg), "data.dataset") from None
    opts = dict(d.options)
    mode = d.train_label_mode if (role == "train" and d.train_label_mode is not None) else d.label_mode
    if mode is not None:
        opts["label_mode"] = mode
    if d.num_classes is not None:
        opts["num_classes"] = d.num_classes
    try:
        arrays = load_dataset(d.dataset, root=d.root, split=split, **opts)
    except (KeyError, TypeError, ImportError) as exc:
        key = "data.options" if isinstance(exc, TypeError) else "data.dataset"
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise ConfigError(f"cannot load {d.dataset!r} split {split!r}: {msg}", _src(cfg), key) from None
    if d.align:     # the crop `litefer predict` makes (litefer.data.align), cached
        from litefer.data.align import align_arrays
        from litefer.vision.detect import DetectorUnavailable
        try:
            arrays, _ = align_arrays(arrays, detector=d.align_detector, crop=cfg.model.crop,
                                     size=cfg.model.input_size, dataset=d.dataset,
                                     missing="box" if role == "test" else d.align_missing)
        except (DetectorUnavailable, KeyError) as exc:
            raise ConfigError(f"cannot align {d.dataset!r}: {exc}", _src(cfg), "data.align_detector") from None
    return arrays



#: public name (the cv runner loads its pool with it)
load_split = _load_split


def prepare_data(cfg: TrainConfig) -> DataSplits:
    """Train / validation / test arrays as the config describes them (see module docstring)."""
    d = cfg.data
    if d.val_split and d.test_split and d.val_split == d.test_split:
        raise ConfigError(f"the validation split must not be the test split ({d.val_split!r})",
                          _src(cfg), "data.val_split")
    if d.train_label_mode is not None and (not d.val_split or not d.test_split or d.folds):
        raise ConfigError("train_label_mode needs separate val_split and test_split (held-out validation "
                          "or test images would carry the training labels)", _src(cfg), "data.train_label_mode")
    train = _load_split(cfg, d.train_split, "train")
    info: dict[str, Any] = {"dataset": d.dataset, "train_split": d.train_split}
    if d.train_label_mode is not None:
        info["train_label_mode"] = d.train_label_mode
    test = None
    if d.folds:
        if train.groups is None:
            raise ConfigError(f"{d.dataset!r} has no subject ids; subject-independent folds are impossible",
                              _src(cfg), "data.folds")
        fold = d.fold or 0
        tr, te = subject_folds(train.groups, d.folds, d.val_seed, fold, _src(cfg))
        test = train.subset(te, split=f"fold{fold}")
        train = train.subset(tr)
        info.update(folds=d.folds, fold=fold, test_split=f"fold {fold} of {d.folds}")
    elif d.test_split:
        test = _load_split(cfg, d.test_split, "test")
        info["test_split"] = d.test_split
    elif d.test_holdout:
        from litefer.data.splits import stratified_holdout as frac_fn
        from litefer.data.splits import stratified_holdout_count
        th = float(d.test_holdout)
        try:
            if th >= 1:
                if th != int(th):
                    raise ValueError(f"a count must be a whole number, got {th:g}")
                tr, te = stratified_holdout_count(train.hard_targets, int(th), d.val_seed + 7919)
            else:
                tr, te = frac_fn(train.hard_targets, th, d.val_seed + 7919)
        except ValueError as exc:
            raise ConfigError(str(exc), _src(cfg), "data.test_holdout") from None
        test = train.subset(te, split="test-holdout")
        train = train.subset(tr)
        info["test_split"] = (f"image-level stratified hold-out of {len(te)} {d.train_split} images "
                              f"(seed {d.val_seed})")
    excluded = 0
    if d.exclude:
        ids = read_exclude_list(d.exclude, _src(cfg))
        n0 = len(train)
        train = train.exclude(ids)
        excluded = n0 - len(train)
    if d.val_split:
        val = _load_split(cfg, d.val_split, "val")
        if d.exclude:
            n0 = len(val)
            val = val.exclude(ids)
            excluded += n0 - len(val)
        info["val_split"] = d.val_split
    elif d.val_by_subject:
        if train.groups is None:
            raise ConfigError(f"{d.dataset!r} has no subject ids to hold out", _src(cfg), "data.val_by_subject")
        tr, va, k = subject_holdout(train.groups, d.val_fraction, d.val_seed, _src(cfg))
        val = train.subset(va, split="holdout")
        train = train.subset(tr)
        info["val_split"] = (f"subject hold-out (1 of {k} subject folds) of {d.train_split} "
                             f"(seed {d.val_seed})")
    else:
        tr, va = stratified_holdout(train.hard_targets, d.val_fraction, d.val_seed, _src(cfg))
        val = train.subset(va, split="holdout")
        train = train.subset(tr)
        info["val_split"] = f"stratified hold-out {d.val_fraction:g} of {d.train_split} (seed {d.val_seed})"
    if d.exclude:
        info["excluded"] = excluded
    if d.train_limit is not None and d.train_limit < len(train):
        from litefer.data.splits import stratified_holdout_count
        _, keep = stratified_holdout_count(train.hard_targets, int(d.train_limit), d.val_seed + 104729)
        train = train.subset(keep)
        info["train_limit"] = f"seeded stratified subset of {len(keep)} training images (seed {d.val_seed})"
    for name, arr in (("validation", val), ("test", test)):
        if arr is not None and tuple(arr.labels) != tuple(train.labels):
            raise ConfigError(f"{name} labels {arr.labels} differ from training labels {train.labels}",
                              _src(cfg), "data")
    if len(train) == 0 or len(val) == 0:
        raise ConfigError(f"empty split: {len(train)} training and {len(val)} validation images", _src(cfg), "data")
    check_class_coverage(cfg, train, val, test)
    train, teacher = apply_teacher(cfg, train)
    if teacher:
        info["teacher"] = teacher
    info.update(n_train=len(train), n_val=len(val), n_test=len(test) if test is not None else 0,
                labels=list(train.labels))
    return DataSplits(train, val, test, info)


def apply_teacher(cfg: TrainConfig, train: FaceArrays) -> tuple[FaceArrays, dict]:
    """``train`` with the targets of ``data.teacher`` mixed in (knowledge distillation,
    :func:`litefer.data.soft_targets.distill_targets`), and what was done (file, its SHA-256,
    weight, temperature, how often the teacher's top class is the image's label); unchanged
    and ``{}`` without a teacher. Only the training split is touched: selection and testing
    keep each split's own labels."""
    d = cfg.data
    if d.teacher is None:
        return train, {}
    from litefer.data.base import DatasetError
    from litefer.data.soft_targets import distill_targets
    path = Path(d.teacher).expanduser()
    if not path.is_file():
        raise ConfigError(f"teacher file {path} does not exist (write it with: litefer evaluate TEACHER "
                          f"--dataset {d.dataset} --split {d.train_split} --out DIR; it is DIR/predictions.csv)",
                          _src(cfg), "data.teacher")
    try:
        out, info = distill_targets(train, path, d.teacher_weight, d.teacher_temperature)
    except DatasetError as exc:
        raise ConfigError(str(exc), _src(cfg), "data.teacher") from None
    return out, info


def check_class_coverage(cfg: TrainConfig, train: FaceArrays, val: Optional[FaceArrays] = None,
                         test: Optional[FaceArrays] = None) -> None:
    """Refuse a label space with a class that has no training image (an empty or missing
    class folder would otherwise train a head for a class it never sees); warn when the
    validation or test split lacks a class."""
    k = len(train.labels)
    counts = np.bincount(train.hard_targets, minlength=k)
    empty = [train.labels[i] for i in range(k) if counts[i] == 0]
    if empty:
        where = f"{cfg.data.dataset!r} split {train.split or cfg.data.train_split!r}"
        raise ConfigError(f"no training images for class(es) {', '.join(map(repr, empty))} of the label space "
                          f"{list(train.labels)} in {where} (an empty or missing class folder?); add images, or "
                          f"train on a label set without them", _src(cfg), "data")
    for name, arr in (("validation", val), ("test", test)):
        if arr is None or len(arr) == 0:
            continue
        c = np.bincount(arr.hard_targets, minlength=k)
        missing = [arr.labels[i] for i in range(k) if c[i] == 0]
        if missing:
            warnings.warn(f"{_src(cfg)}: the {name} split ({arr.split}) has no images of class(es) "
                          f"{', '.join(missing)}; their recall is undefined and left out of mean class accuracy",
                          DataWarning, stacklevel=2)
