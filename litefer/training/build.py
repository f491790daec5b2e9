"""Building blocks of a run: device, seeding, model, loss, optimizer, transforms, provenance."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn as nn

from litefer.training.config import ConfigError, TrainConfig
from litefer.training.data import _src


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
    return {"litefer": None if version is None else str(version), "git": git_hash(), "torch": str(torch.__version__)}



class _Step(nn.Module):
    """Model + criterion as one module, so DDP syncs the loss's centres too."""

    def __init__(self, model: nn.Module, criterion: nn.Module):
        super().__init__()
        self.model, self.criterion = model, criterion

    def forward(self, x: torch.Tensor, y: torch.Tensor, batch_y: Optional[torch.Tensor] = None):
        """(loss, detached logits, loss parts); ``batch_y``: the whole batch's targets when
        (x, y) is one slice of it (``train.micro_batch``)."""
        b = None
        if getattr(self.criterion, "needs_backbone", False):   # Cosine-Harmony on the pooled backbone map
            f, b = self.model.forward_features(x, return_backbone=True)
            logits = self.model.forward_head(f)
        elif self.criterion.needs_features:
            f = self.model.forward_features(x)
            logits = self.model.forward_head(f)
        else:
            f, logits = None, self.model(x)
        with torch.autocast(x.device.type, enabled=False):
            kw = {} if b is None else {"backbone": b.float()}
            if batch_y is not None:
                kw["batch_targets"] = batch_y
            loss, parts = self.criterion(logits.float(), y, None if f is None else f.float(), **kw)
        return loss, logits.detach(), parts


def init_path(cfg: TrainConfig) -> Optional[Path]:
    """The weight file ``model.init_from`` names (a relative path that does not exist from
    the working folder is taken relative to the config file), or None."""
    if not cfg.model.init_from:
        return None
    path = Path(cfg.model.init_from).expanduser()
    if not path.is_absolute() and cfg.source and not path.exists():
        path = Path(cfg.source).parent / path
    return path


def build_model(cfg: TrainConfig, num_classes: int, init_weights: bool = True) -> tuple[nn.Module, dict]:
    """The model and its ``preprocess`` dict (channels, size, mean, std, crop).  ``init_weights``
    False: ``model.init_from`` is not read (a resumed run's weights come from its ``last.pt``)."""
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
    path = init_path(cfg) if init_weights else None
    if path is not None:
        from litefer.models.pretrained import InitError, init_from
        if not path.is_file():
            given = Path(m.init_from).expanduser()
            where = f" or {path}" if path != given else ""
            raise ConfigError(f"{m.init_from}: no such weight file (looked for {given} "
                              f"from the working folder {Path.cwd()}{where})", _src(cfg), "model.init_from")
        try:
            report = init_from(model, path, exclude=m.init_exclude, partial=m.init_partial)
        except InitError as exc:
            raise ConfigError(str(exc), _src(cfg), "model.init_from") from None
        print(f"model.init_from: {report.summary()}", flush=True)
    pre = {"channels": int(channels), "size": int(size), "mean": [float(v) for v in mean],
           "std": [float(v) for v in std], "crop": m.crop}
    return model, pre


def build_criterion(cfg: TrainConfig, num_classes: int, feat_dim: Optional[int], counts: np.ndarray,
                    backbone_dim: Optional[int] = None):
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
    ch_on_backbone = lc.cosine_harmony.weight > 0 and lc.cosine_harmony.input == "backbone"
    if ch_on_backbone and not backbone_dim:
        raise ConfigError(f"{cfg.model.arch} has no forward_backbone; use input: embedding",
                          _src(cfg), "loss.cosine_harmony.input")
    return FERLoss(num_classes, feat_dim if needs else None, label_smoothing=lc.label_smoothing,
                   class_weights=weights, center_weight=lc.center.weight, center_alpha=lc.center.alpha,
                   ch_weight=lc.cosine_harmony.weight, ch_alpha=lc.cosine_harmony.alpha,
                   ch_eps=lc.cosine_harmony.eps, ch_variance_grad=lc.cosine_harmony.variance_grad,
                   ch_variant=lc.cosine_harmony.variant, ch_input=lc.cosine_harmony.input,
                   ch_feat_dim=backbone_dim if ch_on_backbone else None)


def build_optimizer(cfg: TrainConfig, model: nn.Module, extra: list[nn.Parameter]) -> torch.optim.Optimizer:
    o = cfg.optim
    lr = scaled_lr(cfg)
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
        opt = torch.optim.SGD(groups, lr=lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0,
                              weight_decay=o.weight_decay)
    elif o.name == "adam":
        opt = torch.optim.Adam(groups, lr=lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
    else:
        opt = torch.optim.AdamW(groups, lr=lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
    for g in opt.param_groups:
        g["initial_lr"] = lr
    return opt


def scaled_lr(cfg: TrainConfig, world_size: int = 1) -> float:
    """``optim.lr``, scaled to the batch when ``optim.lr_base_batch`` is set:
    ``lr * (batch / lr_base_batch)`` (``optim.lr_scaling: linear``) or its square root
    (``sqrt``, for Adam-type optimizers).  The batch is the global one (all ranks)."""
    o = cfg.optim
    if not o.lr_base_batch:
        return o.lr
    r = cfg.train.batch_size * world_size / o.lr_base_batch
    return o.lr * (r if o.lr_scaling == "linear" else r ** 0.5)


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

