"""The training loop: ``train(cfg) -> TrainResult``.

>>> from litefer.training import load_config, train
>>> result = train(load_config("configs/default_ferplus.yaml"))
>>> result.best_checkpoint, result.test_metrics["acc"]

What a run does:

1. loads the splits (:func:`prepare_data`): train, a *validation* split for model
   selection (a named split such as FER2013/FER+ PublicTest; or a seeded hold-out of
   train, stratified by class for RAF-DB / AffectNet, by subject for CK+, via
   :mod:`litefer.data.splits`) and optionally a *test* split (a named split, or the
   held-out fold of subject-independent k-fold cross-validation);
2. trains with seeded, resumable randomness (epoch order from ``(seed, epoch)``,
   augmentation from ``(seed, epoch, index)``, torch/numpy/python RNG saved each epoch),
   AMP and channels_last on CUDA, LR warm-up + step/cosine/plateau/... schedules;
3. after every epoch evaluates the validation split, writes ``metrics.csv`` (and
   TensorBoard when installed), ``last.pt`` (with the full training state) and, when
   the monitored metric improved, ``best.pt``; stops early after ``train.early_stopping``
   epochs without improvement;
4. only then evaluates the test split, once, with the selected (best) weights.  The
   test split never influences selection, early stopping or the LR schedule.

Output folder: ``config.yaml``, ``metrics.csv``, ``best.pt``, ``last.pt``, ``result.json``
(and ``tb/``).  Checkpoints use the format of :mod:`litefer.models.checkpoint`.
"""
from __future__ import annotations

import copy
import csv
import json
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from litefer.data.base import FaceArrays
from litefer.training import distributed as D
from litefer.training.config import ConfigError, TrainConfig, diff_configs, dump_config

EPOCH_METRICS = ("val_loss", "val_acc", "val_mean_class_acc", "val_macro_f1")
CSV_FIELDS = ("epoch", "lr", "train_loss", "train_acc", "train_ce", "train_center", "train_ch",
              "val_loss", "val_acc", "val_mean_class_acc", "val_macro_f1", "best", "time_s", "images_per_s")


# ------------------------------------------------------------------------------ results
@dataclass
class TrainResult:
    out_dir: Path
    best_checkpoint: Optional[Path]
    last_checkpoint: Optional[Path]
    #: one dict per epoch (the rows of metrics.csv)
    history: list[dict]
    best_epoch: int
    #: validation metrics of the selected epoch
    best_metrics: dict
    #: metrics of the test split with the selected weights (None without a test split)
    test_metrics: Optional[dict]
    stopped_early: bool
    labels: tuple[str, ...] = ()
    preprocess: dict = field(default_factory=dict)
    #: the trained model with the selected (best) weights, in eval mode, on the training device
    model: Optional[nn.Module] = None


@dataclass
class DataSplits:
    train: FaceArrays
    val: FaceArrays
    test: Optional[FaceArrays] = None
    #: what was loaded and how (recorded in checkpoints and result.json)
    info: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------ utilities
def _src(cfg: TrainConfig) -> str:
    """Where ``cfg`` came from (its file, for error messages)."""
    return getattr(cfg, "source", None) or f"config {cfg.name!r}"


def resolve_device(spec: str, source: str = "config") -> torch.device:
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"not a device: {spec!r} (auto, cpu, cuda, cuda:N)", source, "train.device") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("CUDA requested but not available", source, "train.device")
    return dev


def seed_everything(seed: int, deterministic: bool = True) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
        torch.backends.cudnn.deterministic = bool(deterministic)
        torch.backends.cudnn.benchmark = not deterministic


def git_hash(start: Path | None = None) -> Optional[str]:
    """The checkout's commit, read from ``.git`` files (no git process), or None."""
    p = (start or Path(__file__)).resolve()
    for d in [p, *p.parents]:
        g = d / ".git"
        if g.is_file():                                # worktree: "gitdir: <path>"
            txt = g.read_text().strip()
            if txt.startswith("gitdir:"):
                g = (d / txt.split(":", 1)[1].strip()).resolve()
        if g.is_dir():
            try:
                head = (g / "HEAD").read_text().strip()
                if not head.startswith("ref:"):
                    return head
                ref = head.split(":", 1)[1].strip()
                for root in (g, Path((g / "commondir").read_text().strip()) if (g / "commondir").is_file() else g):
                    root = root if root.is_absolute() else (g / root).resolve()
                    f = root / ref
                    if f.is_file():
                        return f.read_text().strip()
                    packed = root / "packed-refs"
                    if packed.is_file():
                        for line in packed.read_text().splitlines():
                            if line.endswith(" " + ref):
                                return line.split()[0]
            except OSError:
                return None
            return None
    return None


def code_version() -> dict:
    try:
        from litefer import __version__ as version
    except ImportError:   # e.g. a stale editable install resolving litefer as a namespace package
        try:
            from importlib.metadata import version as _v
            version = _v("litefer")
        except Exception:
            version = None
    return {"litefer": version, "git": git_hash(), "torch": torch.__version__}


def _rng_state() -> dict:
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available() and len(st["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(st["cuda"])


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in module.state_dict().items()}


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
    if d.label_mode is not None:
        opts["label_mode"] = d.label_mode
    if d.num_classes is not None:
        opts["num_classes"] = d.num_classes
    try:
        return load_dataset(d.dataset, root=d.root, split=split, **opts)
    except (KeyError, TypeError, ImportError) as exc:
        key = "data.options" if isinstance(exc, TypeError) else "data.dataset"
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise ConfigError(f"cannot load {d.dataset!r} split {split!r}: {msg}", _src(cfg), key) from None


def prepare_data(cfg: TrainConfig) -> DataSplits:
    """Train / validation / test arrays as the config describes them (see module docstring)."""
    d = cfg.data
    if d.val_split and d.test_split and d.val_split == d.test_split:
        raise ConfigError(f"the validation split must not be the test split ({d.val_split!r})",
                          _src(cfg), "data.val_split")
    train = _load_split(cfg, d.train_split, "train")
    info: dict[str, Any] = {"dataset": d.dataset, "train_split": d.train_split}
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
    for name, arr in (("validation", val), ("test", test)):
        if arr is not None and tuple(arr.labels) != tuple(train.labels):
            raise ConfigError(f"{name} labels {arr.labels} differ from training labels {train.labels}",
                              _src(cfg), "data")
    if len(train) == 0 or len(val) == 0:
        raise ConfigError(f"empty split: {len(train)} training and {len(val)} validation images", _src(cfg), "data")
    info.update(n_train=len(train), n_val=len(val), n_test=len(test) if test is not None else 0,
                labels=list(train.labels))
    return DataSplits(train, val, test, info)


# ------------------------------------------------------------------------------ schedule
class LRSchedule:
    """Per-iteration learning rates: linear warm-up, then step/multistep/cosine/exponential/
    plateau/inverse_time (see :class:`litefer.training.config.SchedConfig`)."""

    def __init__(self, cfg, epochs: int, iters_per_epoch: int, mode: str = "max"):
        self.cfg, self.epochs, self.iters = cfg, int(epochs), max(1, int(iters_per_epoch))
        self.mode = mode
        self.scale, self.best, self.bad = 1.0, None, 0

    def lr(self, base: float, epoch: int, it: int) -> float:
        c = self.cfg
        t = epoch + it / self.iters
        w = float(c.warmup_epochs)
        warm = c.warmup_start + (1.0 - c.warmup_start) * (t / w) if w > 0 and t < w else 1.0
        if c.name == "cosine":
            span = max(self.epochs - w, 1e-8)
            prog = min(max(t - w, 0.0) / span, 1.0)
            lo = min(c.min_lr, base)
            lr = lo + (base - lo) * 0.5 * (1.0 + math.cos(math.pi * prog))
        elif c.name == "step":
            lr = base * c.gamma ** (epoch // c.step_size)
        elif c.name == "multistep":
            lr = base * c.gamma ** sum(epoch >= m for m in c.milestones)
        elif c.name == "exponential":
            lr = base * c.gamma ** epoch
        elif c.name == "inverse_time":
            lr = base / (1.0 + c.decay * (epoch * self.iters + it))
        elif c.name == "plateau":
            lr = max(base * self.scale, min(c.min_lr, base))
        else:
            lr = base
        return lr * warm

    def apply(self, optimizer: torch.optim.Optimizer, epoch: int, it: int) -> float:
        for g in optimizer.param_groups:
            g["lr"] = self.lr(g["initial_lr"], epoch, it)
        return optimizer.param_groups[0]["lr"]

    def epoch_end(self, epoch: int, value: float) -> None:
        """Plateau bookkeeping after ``epoch`` (0-based) with the monitored value."""
        if self.cfg.name != "plateau" or epoch + 1 < self.cfg.warmup_epochs or not math.isfinite(value):
            return
        better = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
        if better:
            self.best, self.bad = value, 0
        else:
            self.bad += 1
            if self.bad > self.cfg.patience:
                self.scale *= self.cfg.factor
                self.bad = 0

    def state_dict(self) -> dict:
        return {"scale": self.scale, "best": self.best, "bad": self.bad}

    def load_state_dict(self, st: dict) -> None:
        self.scale, self.best, self.bad = st["scale"], st["best"], st["bad"]


# ------------------------------------------------------------------------------ metrics
def metrics_from_confusion(conf: np.ndarray) -> dict:
    """accuracy, mean per-class accuracy (recall) and macro F1 over classes present."""
    conf = np.asarray(conf, dtype=np.float64)
    n = conf.sum()
    tp = np.diag(conf)
    support, predicted = conf.sum(1), conf.sum(0)
    present = support > 0
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=present)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=(precision + recall) > 0)
    return {
        "acc": float(tp.sum() / n) if n else float("nan"),
        "mean_class_acc": float(recall[present].mean()) if present.any() else float("nan"),
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "per_class_acc": [float(r) if p else None for r, p in zip(recall, present)],
        "n": int(n),
        "confusion": conf.astype(np.int64).tolist(),
    }


@torch.no_grad()
def evaluate(model: nn.Module, loader, num_classes: int, device: torch.device, autocast=None,
             dist_info: Optional[D.DistInfo] = None, channels_last: bool = False) -> dict:
    """Loss and confusion-matrix metrics of ``model`` on ``loader`` (summed over ranks)."""
    was_training = model.training
    model.eval()
    conf = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with (autocast() if autocast else nullcontext()):
            logits = model(x)
        logits = logits.float()
        if y.ndim == 2:
            loss_sum += -(y * F.log_softmax(logits, 1)).sum().double()
            hard = y.argmax(1)
        else:
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
            hard = y
        conf += torch.bincount(hard * num_classes + logits.argmax(1), minlength=num_classes * num_classes)
    info = dist_info or D.DistInfo()
    D.all_reduce_sum(conf, info)
    D.all_reduce_sum(loss_sum, info)
    m = metrics_from_confusion(conf.view(num_classes, num_classes).cpu().numpy())
    m["loss"] = float(loss_sum.item() / max(m["n"], 1))
    model.train(was_training)
    return m


# ------------------------------------------------------------------------------ building blocks
class _Step(nn.Module):
    """Model + criterion as one module, so DDP syncs the loss's centres too."""

    def __init__(self, model: nn.Module, criterion: nn.Module):
        super().__init__()
        self.model, self.criterion = model, criterion

    def forward(self, x: torch.Tensor, y: torch.Tensor):
        if self.criterion.needs_features:
            f = self.model.forward_features(x)
            logits = self.model.forward_head(f)
        else:
            f, logits = None, self.model(x)
        with torch.autocast(x.device.type, enabled=False):
            loss, parts = self.criterion(logits.float(), y, None if f is None else f.float())
        return loss, logits.detach(), parts


def build_model(cfg: TrainConfig, num_classes: int) -> tuple[nn.Module, dict]:
    """The model and its ``preprocess`` dict (channels, size, mean, std, crop)."""
    from litefer.models import create_model, model_info
    m = cfg.model
    try:
        info = model_info(m.arch)
    except KeyError as exc:
        raise ConfigError(str(exc.args[0]), _src(cfg), "model.arch") from None
    channels = m.in_chans or info.default_input[0]
    size = m.input_size or info.default_input[1]
    mean, std = list(m.mean), list(m.std)
    for key, v in (("model.mean", mean), ("model.std", std)):
        if len(v) not in (1, channels):
            raise ConfigError(f"{len(v)} values for a {channels}-channel model", _src(cfg), key)
    if channels == 3:
        mean, std = (mean * 3)[:3] if len(mean) == 1 else mean, (std * 3)[:3] if len(std) == 1 else std
    try:
        model = create_model(m.arch, num_classes=num_classes, in_chans=channels, pretrained=m.pretrained, **m.kwargs)
    except TypeError as exc:
        raise ConfigError(f"{m.arch} does not accept these arguments: {exc}", _src(cfg), "model.kwargs") from None
    pre = {"channels": int(channels), "size": int(size), "mean": [float(v) for v in mean],
           "std": [float(v) for v in std], "crop": m.crop}
    return model, pre


def build_criterion(cfg: TrainConfig, num_classes: int, feat_dim: Optional[int], counts: np.ndarray):
    from litefer.losses import FERLoss, balanced_class_weights
    lc = cfg.loss
    weights = None
    if lc.class_weights == "balanced":
        weights = balanced_class_weights(counts.tolist())
    elif isinstance(lc.class_weights, list):
        if len(lc.class_weights) != num_classes:
            raise ConfigError(f"{len(lc.class_weights)} weights for {num_classes} classes", _src(cfg), "loss.class_weights")
        weights = torch.tensor(lc.class_weights, dtype=torch.float32)
    needs = lc.center.weight > 0 or lc.cosine_harmony.weight > 0
    if needs and not feat_dim:
        raise ConfigError(f"{cfg.model.arch} exposes no num_features; center/Cosine-Harmony loss need it",
                          _src(cfg), "loss")
    return FERLoss(num_classes, feat_dim if needs else None, label_smoothing=lc.label_smoothing,
                   class_weights=weights, center_weight=lc.center.weight, center_alpha=lc.center.alpha,
                   ch_weight=lc.cosine_harmony.weight, ch_alpha=lc.cosine_harmony.alpha,
                   ch_eps=lc.cosine_harmony.eps, ch_variance_grad=lc.cosine_harmony.variance_grad)


def build_optimizer(cfg: TrainConfig, model: nn.Module, extra: list[nn.Parameter]) -> torch.optim.Optimizer:
    o = cfg.optim
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if o.no_decay_norm_bias and p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": o.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    if extra:
        groups.append({"params": extra, "weight_decay": 0.0})
    if o.name == "sgd":
        opt = torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0,
                              weight_decay=o.weight_decay)
    elif o.name == "adam":
        opt = torch.optim.Adam(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
    else:
        opt = torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
    for g in opt.param_groups:
        g["initial_lr"] = o.lr
    return opt


def build_transforms(cfg: TrainConfig, pre: dict):
    from litefer.data.transforms import Augment, Preprocess
    a = cfg.aug
    ev = Preprocess(pre["size"], pre["channels"], pre["mean"], pre["std"])
    try:
        tr = Augment(pre["size"], pre["channels"], pre["mean"], pre["std"], hflip=a.hflip, rotation=a.rotation,
                     scale=a.scale, ratio=a.ratio, translate=a.translate, brightness=a.brightness,
                     contrast=a.contrast, erasing=a.erasing, erasing_scale=a.erasing_scale,
                     erasing_ratio=a.erasing_ratio, erasing_value=a.erasing_value, border=a.border)
    except ValueError as exc:
        raise ConfigError(str(exc), _src(cfg), "aug") from None
    return tr, ev


def _mode(monitor: str) -> str:
    return "min" if monitor == "val_loss" else "max"


def _improved(value: float, best: Optional[float], mode: str, min_delta: float) -> bool:
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best + min_delta if mode == "max" else value < best - min_delta


class _Progress:
    """Rich progress bars (rank 0, interactive terminals only): the epoch, with running
    loss/accuracy/lr and its ETA, and the whole run with its ETA."""

    def __init__(self, enabled: bool, console, total_iters: int, done_iters: int):
        self.p = None
        self.task = self.run_task = None
        if enabled and console is not None and console.is_terminal:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)
            self.p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("eta"),
                              TimeRemainingColumn(), console=console, transient=True)
            self.p.start()
            self.run_task = self.p.add_task("run", total=total_iters, completed=done_iters, stats="")

    def start(self, desc: str, total: int) -> None:
        if self.p is not None:
            if self.task is not None:
                self.p.remove_task(self.task)
            self.task = self.p.add_task(desc, total=total, stats="")

    def update(self, n: int, stats: str, advance_run: int = 0) -> None:
        if self.p is not None and self.task is not None:
            self.p.update(self.task, completed=n, stats=stats)
            if advance_run:
                self.p.advance(self.run_task, advance_run)

    def close(self) -> None:
        if self.p is not None:
            self.p.stop()


class _Log:
    def __init__(self, enabled: bool):
        self.console = None
        if enabled:
            from rich.console import Console
            self.console = Console(stderr=True, highlight=False)

    def __call__(self, msg: str) -> None:
        if self.console is not None:
            self.console.print(msg, soft_wrap=True)


# ------------------------------------------------------------------------------ train
def train(cfg: TrainConfig, out_dir: str | Path | None = None, resume: str | Path | None = None, *,
          data: Optional[DataSplits] = None, max_epochs: Optional[int] = None,
          callback: Optional[Callable[[dict], Optional[bool]]] = None, quiet: bool = False) -> TrainResult:
    """Train as ``cfg`` says; returns paths, history and metrics (no global side effects
    beyond the output folder and the RNG seeds).

    - ``out_dir``: output folder (default ``cfg.out`` with ``{name}``); created, and its
      previous checkpoints/CSV overwritten unless resuming.
    - ``resume``: a ``last.pt`` to continue from: identical to an uninterrupted run.
    - ``data``: ready-made :class:`DataSplits` (e.g. a CV runner's folds) instead of loading.
    - ``max_epochs``: stop after this many completed epochs (the schedule still spans
      ``train.epochs``) — an interruption that ``resume`` can continue.
    - ``callback(record)``: called after every epoch with its history row; return True to stop.
    - ``quiet``: no log lines or progress bars.
    """
    cfg = copy.deepcopy(cfg)
    device = resolve_device(cfg.train.device, _src(cfg))
    dinfo = D.setup(device.type)
    try:
        if dinfo.enabled and device.type == "cuda":
            device = torch.device("cuda", dinfo.local_rank)
        return _train(cfg, device, dinfo, out_dir, resume, data, max_epochs, callback, quiet)
    finally:
        D.teardown(dinfo)


def _train(cfg: TrainConfig, device: torch.device, dinfo: D.DistInfo, out_dir, resume, data, max_epochs,
           callback, quiet) -> TrainResult:
    tc = cfg.train
    main = dinfo.is_main
    log = _Log(main and not quiet)
    out = Path(out_dir) if out_dir is not None else cfg.out_dir()
    if main:
        out.mkdir(parents=True, exist_ok=True)
    cuda = device.type == "cuda"
    use_amp = bool(tc.amp and cuda)
    amp_dtype = torch.bfloat16 if tc.amp_dtype == "bfloat16" else torch.float16
    channels_last = bool(tc.channels_last and cuda)

    seed_everything(tc.seed, tc.deterministic)
    splits = data if data is not None else prepare_data(cfg)
    labels = tuple(splits.train.labels)
    num_classes = len(labels)
    if cfg.data.num_classes is not None and cfg.data.num_classes != num_classes and cfg.data.dataset != "synthetic":
        raise ConfigError(f"data.num_classes={cfg.data.num_classes} but the data has {num_classes} labels",
                          _src(cfg), "data.num_classes")
    train_counts = np.bincount(splits.train.hard_targets, minlength=num_classes)

    # model, loss, optimizers ------------------------------------------------------------
    seed_everything(tc.seed, tc.deterministic)
    model, pre = build_model(cfg, num_classes)
    feat_dim = getattr(model, "num_features", None)
    criterion = build_criterion(cfg, num_classes, feat_dim, train_counts)
    model.to(device)
    criterion.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    step = _Step(model, criterion)
    step_ddp = D.wrap(step, dinfo, device, tc.sync_bn)
    optimizer = build_optimizer(cfg, model, criterion.model_params())
    center_opt = criterion.centers_optimizer()
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and amp_dtype == torch.float16)

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp)

    # data loading -------------------------------------------------------------------------
    from litefer.data.sampling import EpochSampler
    from litefer.data.transforms import AugmentedFaces
    tr_tf, ev_tf = build_transforms(cfg, pre)
    train_ds = AugmentedFaces(splits.train, tr_tf, seed=tc.seed)
    ov = tc.oversample
    sampler = EpochSampler(splits.train.hard_targets, shuffle=True, seed=tc.seed, oversample=ov.enabled,
                           ratio=ov.ratio, max_factor=ov.max_factor, num_replicas=dinfo.world_size,
                           rank=dinfo.rank, pad=True)
    workers = tc.workers if tc.workers is not None else (0 if not cuda else max(0, min(8, (os.cpu_count() or 1) - 1)))
    loader_kw = dict(num_workers=workers, pin_memory=cuda, persistent_workers=False,
                     generator=torch.Generator().manual_seed(tc.seed))
    train_loader = torch.utils.data.DataLoader(train_ds, batch_size=tc.batch_size, sampler=sampler,
                                               drop_last=tc.drop_last and len(sampler) >= tc.batch_size,
                                               **loader_kw)
    ebs = tc.eval_batch_size or 2 * tc.batch_size

    def eval_loader(arrays: FaceArrays):
        ds = AugmentedFaces(arrays, ev_tf, seed=0)
        s = EpochSampler(len(arrays), shuffle=False, num_replicas=dinfo.world_size, rank=dinfo.rank, pad=False)
        return torch.utils.data.DataLoader(ds, batch_size=ebs, sampler=s, drop_last=False, **loader_kw)

    val_loader = eval_loader(splits.val)
    iters = len(train_loader)
    if iters == 0:
        raise ConfigError(f"batch_size {tc.batch_size} leaves no training batch for {len(splits.train)} images",
                          _src(cfg), "train.batch_size")
    mode = _mode(tc.monitor)
    sched = LRSchedule(cfg.sched, tc.epochs, iters, mode)

    # state --------------------------------------------------------------------------------
    history: list[dict] = []
    best_value: Optional[float] = None
    best_epoch, best_metrics, best_state, bad_epochs = 0, {}, None, 0
    start_epoch = 0
    if resume is not None:
        try:
            raw = torch.load(Path(resume), map_location="cpu", weights_only=False)
        except Exception as exc:  # missing file, not a torch file, truncated ...
            raise ConfigError(f"cannot read {resume}: {exc}", "--resume") from None
        ts = raw.get("training_state") if isinstance(raw, dict) else None
        if ts is None:
            raise ConfigError(f"{resume} has no training state (best.pt holds weights only); resume from last.pt",
                              "--resume")
        if raw["arch"] != cfg.model.arch or list(raw["labels"]) != list(labels):
            raise ConfigError(f"{resume} is a {raw['arch']} over {raw['labels']}, this config trains "
                              f"{cfg.model.arch} over {list(labels)}", "--resume")
        changed = [k for k in diff_configs(raw.get("config") or {}, cfg.to_dict())
                   if k not in ("out", "train.epochs", "train.workers", "train.device", "train.progress",
                                "train.tensorboard", "train.early_stopping")]
        if changed:
            log(f"[yellow]warning:[/] resuming with a config that differs from the checkpoint's in: {', '.join(changed)}")
        model.load_state_dict(raw["state_dict"])
        criterion.load_state_dict(ts["criterion"])
        optimizer.load_state_dict(ts["optimizer"])
        if center_opt is not None and ts.get("center_optimizer") is not None:
            center_opt.load_state_dict(ts["center_optimizer"])
        sched.load_state_dict(ts["scheduler"])
        if ts.get("scaler"):
            scaler.load_state_dict(ts["scaler"])
        history = list(ts["history"])
        b = ts["best"]
        best_value, best_epoch, best_metrics, bad_epochs = b["value"], b["epoch"], b["metrics"], b["bad_epochs"]
        best_state = ts.get("best_state_dict")
        start_epoch = int(raw["epoch"])
        rngs = ts.get("rng_per_rank") or []
        if len(rngs) == dinfo.world_size:
            _set_rng_state(rngs[dinfo.rank])
        else:
            log("[yellow]warning:[/] world size changed since the checkpoint; RNG streams re-seeded")
            seed_everything(tc.seed + 1000 * start_epoch + dinfo.rank, tc.deterministic)
        log(f"resumed from {resume} at epoch {start_epoch}")
    elif dinfo.enabled:
        # same init on every rank (DDP also broadcasts), distinct dropout streams per rank
        seed_everything(tc.seed + dinfo.rank, tc.deterministic)

    # outputs ------------------------------------------------------------------------------
    csv_path, best_path, last_path = out / "metrics.csv", out / "best.pt", out / "last.pt"
    tb = None
    if main:
        (out / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
        with open(csv_path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
            w.writeheader()
            for row in history:
                w.writerow(row)
        if tc.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                tb = SummaryWriter(log_dir=str(out / "tb"))
            except Exception:  # tensorboard not installed: CSV only
                tb = None

    base_meta = {"arch": cfg.model.arch, "arch_kwargs": dict(cfg.model.kwargs), "labels": list(labels),
                 "preprocess": pre, "config": cfg.to_dict(), "code_version": code_version(),
                 "data": splits.info}
    n_params = sum(p.numel() for p in model.parameters())
    log(f"[bold]{cfg.name}[/]: {cfg.model.arch} ({n_params / 1e6:.2f} M params) on {device}"
        f"{f' x{dinfo.world_size}' if dinfo.enabled else ''}; {len(splits.train)} train / {len(splits.val)} val"
        f"{f' / {len(splits.test)} test' if splits.test is not None else ''} images, {num_classes} classes; "
        f"{tc.epochs} epochs x {iters} iterations; out: {out}")

    progress = _Progress(main and tc.progress and not quiet, log.console, tc.epochs * iters, start_epoch * iters)
    stopped_early = False
    target_hard = lambda y: y.argmax(1) if y.ndim == 2 else y  # noqa: E731
    try:
        for epoch in range(start_epoch, tc.epochs):
            if max_epochs is not None and epoch >= max_epochs:
                break
            t0 = time.perf_counter()
            sampler.set_epoch(epoch)
            train_ds.set_epoch(epoch)
            step_ddp.train()
            progress.start(f"epoch {epoch + 1}/{tc.epochs}", iters)
            sums = {k: torch.zeros((), dtype=torch.float64, device=device) for k in ("loss", "ce", "center", "ch")}
            correct = torch.zeros((), dtype=torch.int64, device=device)
            seen = 0
            lr0 = sched.apply(optimizer, epoch, 0)
            for it, (x, y) in enumerate(train_loader):
                lr = sched.apply(optimizer, epoch, it)
                x = x.to(device, non_blocking=True)
                y = y.to(device, non_blocking=True)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with autocast():
                    loss, logits, parts = step_ddp(x, y)
                optimizer.zero_grad(set_to_none=True)
                if center_opt is not None:
                    center_opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if tc.grad_clip:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                scaler.step(optimizer)
                if center_opt is not None:
                    scaler.step(center_opt)
                scaler.update()
                bs = x.shape[0]
                seen += bs
                sums["loss"] += loss.detach().double() * bs
                for k, v in parts.items():
                    sums[k] += v.double() * bs
                correct += (logits.argmax(1) == target_hard(y)).sum()
                if it % 10 == 9 or it == iters - 1:
                    run_loss = sums["loss"].item() / seen
                    if not math.isfinite(run_loss) and not scaler.is_enabled():
                        raise FloatingPointError(f"loss became {run_loss} at epoch {epoch + 1}, iteration {it + 1} "
                                                 f"(lr {lr:.3g}); lower optim.lr or enable train.grad_clip")
                    progress.update(it + 1, f"loss {run_loss:.4f} acc {correct.item() / seen:.3f} lr {lr:.2e}",
                                    advance_run=(it % 10) + 1)
            # epoch totals over ranks
            tot = torch.stack([sums["loss"], sums["ce"], sums["center"], sums["ch"],
                               correct.double(), torch.tensor(float(seen), dtype=torch.float64, device=device)])
            D.all_reduce_sum(tot, dinfo)
            D.average_buffers(model, dinfo)
            n_seen = max(tot[5].item(), 1.0)
            train_time = time.perf_counter() - t0
            val = evaluate(model, val_loader, num_classes, device, autocast, dinfo, channels_last)
            record = {
                "epoch": epoch + 1, "lr": lr0,
                "train_loss": tot[0].item() / n_seen, "train_acc": tot[4].item() / n_seen,
                "train_ce": tot[1].item() / n_seen,
                "train_center": tot[2].item() / n_seen if criterion.center is not None else None,
                "train_ch": tot[3].item() / n_seen if criterion.ch is not None else None,
                "val_loss": val["loss"], "val_acc": val["acc"], "val_mean_class_acc": val["mean_class_acc"],
                "val_macro_f1": val["macro_f1"], "time_s": time.perf_counter() - t0,
                "images_per_s": n_seen / max(train_time, 1e-9),
            }
            if not math.isfinite(record["train_loss"]):
                raise FloatingPointError(f"training loss is {record['train_loss']} after epoch {epoch + 1}; "
                                         f"lower optim.lr or enable train.grad_clip")
            value = record[tc.monitor]
            improved = _improved(value, best_value, mode, tc.min_delta)
            record["best"] = improved
            sched.epoch_end(epoch, value)
            if improved:
                best_value, best_epoch, bad_epochs = value, epoch + 1, 0
                best_metrics = {k: v for k, v in val.items()}
                best_state = _cpu_state(model)
            else:
                bad_epochs += 1
            history.append(record)
            stop = bool(tc.early_stopping and bad_epochs >= tc.early_stopping)
            if callback is not None and callback(dict(record)):
                stop = True
            stop = bool(D.broadcast_object(stop, dinfo))
            rngs = D.all_gather_object(_rng_state(), dinfo)
            if main:
                metrics = {"val": val, "train": {"loss": record["train_loss"], "acc": record["train_acc"]},
                           "monitor": tc.monitor, "best_epoch": best_epoch, "best_value": best_value}
                state = {
                    "criterion": _cpu_state(criterion), "optimizer": optimizer.state_dict(),
                    "center_optimizer": center_opt.state_dict() if center_opt is not None else None,
                    "scheduler": sched.state_dict(), "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                    "rng_per_rank": rngs, "history": history,
                    "best": {"value": best_value, "epoch": best_epoch, "metrics": best_metrics, "bad_epochs": bad_epochs},
                    "best_state_dict": best_state, "world_size": dinfo.world_size,
                }
                _atomic_save({**base_meta, "state_dict": _cpu_state(model), "metrics": metrics,
                              "epoch": epoch + 1, "training_state": state}, last_path)
                if improved:
                    _atomic_save({**base_meta, "state_dict": best_state, "metrics": metrics, "epoch": epoch + 1},
                                 best_path)
                with open(csv_path, "a", newline="") as fh:
                    csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore").writerow(record)
                if tb is not None:
                    for k, v in record.items():
                        if isinstance(v, (int, float)) and k != "epoch" and v is not None:
                            tb.add_scalar(k, v, epoch + 1)
                    tb.flush()
            log(f"epoch {epoch + 1:>3}/{tc.epochs}  loss {record['train_loss']:.4f}  acc {record['train_acc']:.4f}  "
                f"val_loss {val['loss']:.4f}  val_acc {val['acc']:.4f}  val_mca {val['mean_class_acc']:.4f}  "
                f"lr {lr0:.2e}  {record['time_s']:.1f}s{'  [green]*best*[/]' if improved else ''}")
            if stop:
                stopped_early = bool(tc.early_stopping and bad_epochs >= tc.early_stopping)
                if stopped_early:
                    log(f"early stopping: no improvement of {tc.monitor} for {bad_epochs} epochs")
                break
    finally:
        progress.close()
        if tb is not None:
            tb.close()

    # test with the selected weights ----------------------------------------------------------
    if best_state is not None:
        model.load_state_dict(best_state)
    test_metrics = None
    if splits.test is not None and best_state is not None:
        test_metrics = evaluate(model, eval_loader(splits.test), num_classes, device, autocast, dinfo, channels_last)
        log(f"test ({splits.info.get('test_split', 'test')}) with epoch {best_epoch} weights: "
            f"acc {test_metrics['acc']:.4f}  mean class acc {test_metrics['mean_class_acc']:.4f}  "
            f"macro F1 {test_metrics['macro_f1']:.4f}")
    if main:
        if test_metrics is not None and best_path.is_file():
            raw = torch.load(best_path, map_location="cpu", weights_only=False)
            raw["metrics"] = {**(raw.get("metrics") or {}), "test": test_metrics}
            _atomic_save(raw, best_path)
        summary = {"name": cfg.name, "arch": cfg.model.arch, "labels": list(labels), "data": splits.info,
                   "monitor": tc.monitor, "best_epoch": best_epoch, "best_value": best_value,
                   "val": best_metrics, "test": test_metrics, "epochs_run": len(history),
                   "stopped_early": stopped_early, "best_checkpoint": str(best_path) if best_path.is_file() else None,
                   "last_checkpoint": str(last_path) if last_path.is_file() else None,
                   "code_version": base_meta["code_version"]}
        (out / "result.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    D.barrier(dinfo)
    model.eval()
    return TrainResult(out_dir=out, best_checkpoint=best_path if best_path.is_file() else None,
                       last_checkpoint=last_path if last_path.is_file() else None, history=history,
                       best_epoch=best_epoch, best_metrics=best_metrics, test_metrics=test_metrics,
                       stopped_early=stopped_early, labels=labels, preprocess=pre, model=model)


# ------------------------------------------------------------------------------ cross-validation
@dataclass
class CVResult:
    folds: list[TrainResult]
    #: mean / std of the test accuracy (and mean class accuracy) over folds
    summary: dict


def train_folds(cfg: TrainConfig, out_dir: str | Path | None = None, *, quiet: bool = False) -> CVResult:
    """Train every fold of ``data.folds``-fold subject cross-validation (``out/fold{k}``)."""
    if cfg.data.folds < 2:
        raise ConfigError("train_folds needs data.folds >= 2", _src(cfg), "data.folds")
    out = Path(out_dir) if out_dir is not None else cfg.out_dir()
    results = []
    for k in range(cfg.data.folds):
        c = copy.deepcopy(cfg)
        c.data.fold = k
        results.append(train(c, out / f"fold{k}", quiet=quiet))
    accs = [r.test_metrics["acc"] for r in results if r.test_metrics]
    mcas = [r.test_metrics["mean_class_acc"] for r in results if r.test_metrics]
    summary = {"folds": cfg.data.folds, "test_acc_mean": float(np.mean(accs)), "test_acc_std": float(np.std(accs)),
               "test_mean_class_acc_mean": float(np.mean(mcas)), "per_fold_acc": accs}
    if D.env_world_size() <= 1 or int(os.environ.get("RANK", "0")) == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "cv.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return CVResult(results, summary)
