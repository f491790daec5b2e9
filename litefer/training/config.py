"""Training configuration: YAML files mapped onto nested dataclasses.

>>> cfg = load_config("configs/default_ferplus.yaml", overrides=["optim.lr=0.01", "train.epochs=5"])

Every key is checked: an unknown key, a wrong type or a value outside its choices
raises :class:`ConfigError` naming the file (or the ``--set`` override) and the dotted
key, with close matches as suggestions.  Values are coerced to the field's type
(``"1e-4"`` -> float, ``"true"`` -> bool, ``"0.1,0.2"`` -> list), so YAML 1.1 quirks such
as ``lr: 1e-4`` loading as a string do not matter.

Sections (see each dataclass for the fields): ``data``, ``model``, ``optim``, ``sched``,
``loss`` (with ``loss.center`` and ``loss.cosine_harmony``), ``train`` (with
``train.oversample``), ``aug``; top level ``name``, ``out``, ``notes``.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml


class ConfigError(ValueError):
    """A bad configuration: the message names the source (file or override) and the key."""

    def __init__(self, message: str, source: str | None = None, key: str | None = None):
        self.source, self.key = source, key
        where = ", ".join(x for x in (source, f"key {key!r}" if key else None) if x)
        super().__init__(f"{where}: {message}" if where else message)


def _choices(*values: Any) -> dict:
    return {"choices": values}


# ----------------------------------------------------------------------------------- sections
@dataclass
class DataConfig:
    #: reader name for ``litefer.data.load_dataset`` (fer2013, ferplus, rafdb, affectnet, ckplus, ...)
    #: or ``synthetic`` (generated learnable images, for smoke tests)
    dataset: str = "ferplus"
    #: dataset folder; null: the reader's default under $LITEFER_DATA
    root: Optional[str] = None
    train_split: str = "train"
    #: named split used for model selection (FER2013/FER+: publictest); null: a seeded,
    #: stratified hold-out of ``val_fraction`` of the training split
    val_split: Optional[str] = "publictest"
    #: split reported after training with the selected weights; null: none (or the CV fold)
    test_split: Optional[str] = "privatetest"
    val_fraction: float = field(default=0.1, metadata={"range": (0.0, 0.9)})
    #: seed of the hold-out and of the cross-validation folds (independent of train.seed)
    val_seed: int = 0
    #: hold out whole subjects (the data's groups) instead of images: one fold of a
    #: round(1 / val_fraction)-fold subject split (CK+: frames of one sequence are near-duplicates)
    val_by_subject: bool = False
    #: reader options (passed only when set)
    label_mode: Optional[str] = None
    #: label mode of the training split only (validation and test keep ``label_mode``): e.g.
    #: FER+ ``probability`` (train on the vote distribution, Barsoum et al. 2016) while
    #: selecting and reporting on the official ``majority`` labels; null: ``label_mode``
    train_label_mode: Optional[str] = None
    #: knowledge distillation: a teacher's ``predictions.csv`` over the training split
    #: (``litefer evaluate TEACHER --dataset D --split <train_split> --out DIR``); its
    #: ``p_<label>`` columns become the training targets (validation and test keep their
    #: own labels). null: no teacher
    teacher: Optional[str] = None
    #: online distillation: a teacher model (bundled name or checkpoint) that labels every
    #: training batch as the student sees it, augmentation included
    #: (:mod:`litefer.training.teacher`); exclusive with ``teacher``. null: none
    teacher_model: Optional[str] = None
    #: target = teacher_weight * teacher + (1 - teacher_weight) * the image's own label
    teacher_weight: float = field(default=1.0, metadata={"range": (0.0, 1.0)})
    #: the teacher's probabilities softened (> 1) or sharpened (< 1): softmax(log p / T)
    teacher_temperature: float = field(default=1.0, metadata={"range": (0.05, 20.0)})
    num_classes: Optional[int] = None
    #: text file of image ids (one per line, '#' comments) removed from train and val, never from test
    exclude: Optional[str] = None
    #: train on a seeded, class-stratified subset of this many training images (quick
    #: runs and ablations at a CPU budget); null: all.  Taken after the test / validation
    #: hold-outs, so those do not change with it
    train_limit: Optional[int] = None
    #: image-level test hold-out of train_split when there is no test_split: a count (>= 1,
    #: e.g. 99 for I-MobileNetV2's CK+ 882 / 99 split) or a fraction (< 1), stratified,
    #: seeded by val_seed; the validation hold-out is then taken from the rest
    test_holdout: Optional[float] = None
    #: subject-independent k-fold cross-validation: folds > 1 splits train_split by subject;
    #: fold k is the test set, the other folds train (with a hold-out for selection)
    folds: int = 0
    fold: Optional[int] = None
    #: any further keyword arguments for the reader
    options: dict = field(default_factory=dict)
    #: detect and 5-point-align every image with model.crop at the model's input size, as
    #: ``litefer predict`` crops photos (cached once; ``litefer data align`` does it ahead)
    align: bool = False
    #: face detector for align (litefer.vision.detect names; auto = the best installed)
    align_detector: str = "auto"
    #: images without a detected face: box (crop the whole image as the face) | drop (train/val only)
    align_missing: str = field(default="box", metadata=_choices("box", "drop"))


@dataclass
class ModelConfig:
    arch: str = "se_sepnet"
    #: keyword arguments for ``create_model`` (e.g. dropout)
    kwargs: dict = field(default_factory=dict)
    #: input channels / size; null: the architecture's default_input
    in_chans: Optional[int] = field(default=None, metadata=_choices(None, 1, 3))
    input_size: Optional[int] = None
    #: normalisation ``(pixel/255 - mean) / std``, one value or one per channel
    mean: list[float] = field(default_factory=lambda: [0.5])
    std: list[float] = field(default_factory=lambda: [0.5])
    #: face crop the model expects: fer (48x48-style loose crop) or aligned112 (5-point aligned)
    crop: str = field(default="fer", metadata=_choices("fer", "aligned112"))
    pretrained: bool = False
    #: initialise from a weight file (safetensors, or a weights-only PyTorch state_dict)
    #: in litefer's parameter names, e.g. ImageNet or MS-Celeb-1M weights a user has;
    #: litefer's own runs start from scratch (nothing is downloaded)
    init_from: Optional[str] = None
    #: glob patterns of model keys that keep their initialisation (e.g. ["classifier.*"])
    init_exclude: list[str] = field(default_factory=list)
    #: accept missing / unexpected / shape-mismatched keys (listed in the log) instead of failing
    init_partial: bool = False


@dataclass
class OptimConfig:
    name: str = field(default="adamw", metadata=_choices("sgd", "adam", "adamw"))
    lr: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    #: no weight decay on normalisation weights and biases
    no_decay_norm_bias: bool = False
    #: batch size ``lr`` is stated for; null: no scaling.  Set, the learning rate becomes
    #: lr * (global batch / lr_base_batch) (linear) or its square root (sqrt)
    lr_base_batch: Optional[int] = None
    lr_scaling: str = field(default="linear", metadata=_choices("linear", "sqrt"))


@dataclass
class SchedConfig:
    #: none | step (gamma every step_size epochs) | multistep (gamma at milestones) |
    #: cosine (to min_lr at the last epoch, per iteration) | exponential (gamma per epoch) |
    #: plateau (factor after `patience` epochs without improvement of train.monitor) |
    #: inverse_time (Keras `decay`: lr / (1 + decay * iteration))
    name: str = field(default="cosine", metadata=_choices(
        "none", "step", "multistep", "cosine", "exponential", "plateau", "inverse_time"))
    warmup_epochs: float = 0.0
    #: warm-up starts at lr * warmup_start and rises linearly (per iteration)
    warmup_start: float = 0.1
    step_size: int = 30
    gamma: float = 0.1
    milestones: list[int] = field(default_factory=list)
    min_lr: float = 0.0
    patience: int = 5
    factor: float = 0.1
    decay: float = 0.0


@dataclass
class CenterLossConfig:
    #: lambda; 0 disables center loss
    weight: float = 0.0
    #: the centres' own SGD learning rate (Wen et al.'s alpha)
    alpha: float = 0.5


@dataclass
class CosineHarmonyConfig:
    #: weight of the Cosine-Harmony loss next to CE; 0 disables it
    weight: float = 0.0
    #: alpha of the paper's loss = alpha * intra / class_variance + (1 - alpha) * inter (LFNSB: 0.1)
    alpha: float = 0.1
    eps: float = 1e-6
    #: let the gradient flow through class_variance (the formula as printed)
    variance_grad: bool = True
    #: paper: the formula as printed (+ inter); corrected: (1 - alpha) * (2 - inter), the stated intent
    variant: str = field(default="paper", metadata=_choices("paper", "corrected"))
    #: embedding: the model's forward_features output; backbone: its pooled backbone map (released code)
    input: str = field(default="embedding", metadata=_choices("embedding", "backbone"))


@dataclass
class LossConfig:
    label_smoothing: float = field(default=0.0, metadata={"range": (0.0, 0.99)})
    #: null | "balanced" (N / (C * n_c) from the training split) | one weight per class
    class_weights: Union[None, str, list[float]] = field(default=None, metadata={"str_choices": ("balanced",)})
    center: CenterLossConfig = field(default_factory=CenterLossConfig)
    cosine_harmony: CosineHarmonyConfig = field(default_factory=CosineHarmonyConfig)


@dataclass
class OversampleConfig:
    enabled: bool = False
    #: bring every class up to ratio * (largest class count)
    ratio: float = 1.0
    #: but repeat no class more than this many times (null: no cap)
    max_factor: Optional[float] = None


@dataclass
class TrainSection:
    epochs: int = 30
    batch_size: int = 64
    #: null: 2 * batch_size
    eval_batch_size: Optional[int] = None
    #: unused since the trainer holds the data in memory as tensors (kept so older configs load)
    workers: Optional[int] = None
    seed: int = 0
    #: deterministic cuDNN / algorithms (slower on GPU)
    deterministic: bool = True
    #: mixed precision (CUDA; on CPU see cpu_bf16)
    amp: bool = True
    amp_dtype: str = field(default="float16", metadata=_choices("float16", "bfloat16"))
    #: channels_last on CUDA; on CPU the trainer measures it (autotune) and keeps it only when it wins
    channels_last: bool = True
    #: auto | cpu | cuda | cuda:N
    device: str = "auto"
    #: stop after this many epochs without improvement of `monitor` (0: never)
    early_stopping: int = 0
    #: wall-clock budget in hours (null: none).  Before the first step the trainer measures
    #: this run's step and validation speed here and sets `epochs` to as many as fit (never
    #: more than `epochs`), scaling warm-up, milestones and early stopping in proportion; the
    #: run folder's config.yaml holds the sized schedule (see litefer.training.budget)
    budget_hours: Optional[float] = None
    min_delta: float = 0.0
    monitor: str = field(default="val_acc", metadata=_choices(
        "val_acc", "val_loss", "val_mean_class_acc", "val_macro_f1"))
    grad_clip: Optional[float] = None
    #: exponential moving average of the weights (e.g. 0.999; null: off): validation, the
    #: selected best.pt and the test use the averaged weights; the decay ramps up over the
    #: first steps as min(ema_decay, (1 + n) / (10 + n)) after n updates
    ema_decay: Optional[float] = None
    drop_last: bool = True
    oversample: OversampleConfig = field(default_factory=OversampleConfig)
    #: SyncBatchNorm under DDP
    sync_bn: bool = False
    #: rich progress bars (rank 0, interactive terminals)
    progress: bool = True
    tensorboard: bool = True
    #: write a resumable last.pt at least this often, mid-epoch included (0: epoch ends only);
    #: also written on SIGINT / SIGTERM before the process exits
    checkpoint_minutes: float = 10.0
    #: intra-op threads on CPU; null: torch's default (the physical cores)
    threads: Optional[int] = None
    #: CPU step options measured at start and kept when they win (channels_last, bf16 with
    #: cpu_bf16: auto); the choice is cached per CPU/model/batch and reused on resume
    autotune: bool = True
    #: torch.compile the training step (inductor cache under $LITEFER_CACHE: warm-up paid once)
    compile: bool = False
    #: bf16 autocast on CPU: off | auto (only when the CPU has AVX512-BF16/AMX, the step is
    #: measurably faster and the logits agree with fp32; accuracy parity was checked on real
    #: runs, docs/benchmarks.md) | on
    cpu_bf16: str = field(default="auto", metadata=_choices("off", "auto", "on"))
    #: run each batch as slices of this many samples, gradients accumulated: the same batch,
    #: learning rate and gradient of the mean loss, but BatchNorm (and Cosine-Harmony)
    #: batch statistics per slice.
    #: 0: the whole batch at once | N | auto (CPU: measured at start with the other step
    #: options, kept only when faster; cached and reused on resume like them)
    micro_batch: Union[int, str] = field(default=0, metadata={"str_choices": ("auto",)})


@dataclass
class AugConfig:
    hflip: float = 0.5
    #: max rotation in degrees
    rotation: float = 0.0
    #: random resized crop: area fraction (min, max) and aspect ratio (min, max)
    scale: list[float] = field(default_factory=lambda: [1.0, 1.0])
    ratio: list[float] = field(default_factory=lambda: [1.0, 1.0])
    #: max shift as a fraction of the input size
    translate: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    #: random-erasing probability, area fraction, aspect ratio, fill (number or "random")
    erasing: float = 0.0
    erasing_scale: list[float] = field(default_factory=lambda: [0.02, 0.33])
    erasing_ratio: list[float] = field(default_factory=lambda: [0.3, 3.3])
    erasing_value: Union[float, str] = field(default=0.0, metadata={"str_choices": ("random",)})
    border: str = field(default="reflect", metadata=_choices("reflect", "constant", "replicate"))
    #: which training images are augmented: all | oversampled (only the copies that
    #: train.oversample adds to minority classes; the originals are left as they are —
    #: A-MobileNet's recipe)
    apply_to: str = field(default="all", metadata=_choices("all", "oversampled"))


@dataclass
class TrainConfig:
    #: experiment name (default: the config file's stem)
    name: str = "run"
    #: output folder; "{name}" is replaced by the name
    out: str = "runs/{name}"
    notes: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainSection = field(default_factory=TrainSection)
    aug: AugConfig = field(default_factory=AugConfig)

    #: where the config came from (not a field: set by load_config, used in error messages)
    source = None          # (no annotation: a plain attribute, not a dataclass field)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def out_dir(self) -> Path:
        return Path(self.out.replace("{name}", self.name))


# ------------------------------------------------------------------------------ coercion
_TRUE = {"true", "yes", "on", "1", "y"}
_FALSE = {"false", "no", "off", "0", "n"}
_NONE = {"null", "none", "~", ""}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Union:
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"list of {_type_name(args[0])}" if args else "list"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, meta: dict, where: str, key: str) -> Any:
    def bad(msg: str | None = None):
        return ConfigError(msg or f"expected {_type_name(tp)}, got {value!r}", where, key)

    origin = typing.get_origin(tp)
    if origin is Union:
        args = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.strip().lower() in _NONE):
            if type(None) in args:
                return None
            raise bad()
        str_choices = meta.get("str_choices")
        errors = []
        # strings first only when they are an allowed word; then numbers / lists
        if str in args and isinstance(value, str) and str_choices and value in str_choices:
            return value
        for a in args:
            if a is type(None) or a is str:
                continue
            try:
                return _coerce(value, a, {}, where, key)
            except ConfigError as exc:
                errors.append(exc)
        if str in args and isinstance(value, str):
            if str_choices and value not in str_choices:
                close = difflib.get_close_matches(value, str_choices, n=1)
                raise bad(f"expected {_type_name(tp)}; the allowed word is "
                          f"{', '.join(map(repr, str_choices))}, got {value!r}"
                          + (f" (did you mean {close[0]!r}?)" if close else ""))
            return value
        raise bad()
    if origin in (list, tuple) or tp in (list, tuple):
        (inner,) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):
            s = value.strip()
            if s.startswith("[") and s.endswith("]"):
                s = s[1:-1]
            value = [] if not s.strip() else [p.strip() for p in s.split(",")]
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise bad()
        return [_coerce(v, inner, {}, where, key) if inner is not Any else v for v in value]
    if tp is dict or origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise bad()
        return dict(value)
    if value is None or (isinstance(value, str) and value.strip().lower() in _NONE and tp is not str):
        raise bad(f"expected {_type_name(tp)}, got null")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise bad()
    if tp is int:
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value.strip())
            except ValueError:
                raise bad() from None
            if f.is_integer():
                return int(f)
        raise bad()
    if tp is float:
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                raise bad() from None
        raise bad()
    if tp is str:
        if isinstance(value, bool) and {"on", "off"} <= set(meta.get("choices") or ()):
            return "on" if value else "off"     # YAML 1.1 reads an unquoted on / off as a boolean
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad()
    return value


def _check_choices(value: Any, meta: dict, where: str, key: str) -> None:
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        shown = ", ".join("null" if c is None else str(c) for c in choices)
        close = difflib.get_close_matches(str(value), [str(c) for c in choices if c is not None], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{value!r} is not one of: {shown}{hint}", where, key)
    rng = meta.get("range")
    if rng is not None and value is not None and not (rng[0] <= value <= rng[1]):
        raise ConfigError(f"{value!r} is outside [{rng[0]}, {rng[1]}]", where, key)


def _fields(cls) -> dict[str, tuple[Any, dict]]:
    hints = typing.get_type_hints(cls)
    return {f.name: (hints[f.name], dict(f.metadata)) for f in dataclasses.fields(cls)}


def _unknown(key: str, known: list[str], prefix: str, where: str) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
    full = [f"{prefix}{c}" for c in close]
    hint = f" Did you mean: {', '.join(full)}?" if full else ""
    return ConfigError(f"unknown key.{hint} Valid keys here: {', '.join(known)}", where, f"{prefix}{key}")


def _update(obj: Any, d: dict, where: str, prefix: str = "") -> None:
    """Set the fields of dataclass ``obj`` from mapping ``d`` (recursively), checking every key."""
    if not isinstance(d, dict):
        raise ConfigError(f"expected a mapping of keys, got {type(d).__name__}", where, prefix.rstrip(".") or None)
    fields = _fields(type(obj))
    for k, v in d.items():
        k = str(k)
        if k not in fields:
            raise _unknown(k, list(fields), prefix, where)
        tp, meta = fields[k]
        key = f"{prefix}{k}"
        if dataclasses.is_dataclass(tp):
            if v is None:
                continue
            _update(getattr(obj, k), v, where, f"{key}.")
            continue
        val = _coerce(v, tp, meta, where, key)
        _check_choices(val, meta, where, key)
        setattr(obj, k, val)


def validate(cfg: TrainConfig, where: str = "config") -> TrainConfig:
    """Cross-field checks that single keys cannot express."""
    def err(msg: str, key: str) -> ConfigError:
        return ConfigError(msg, where, key)

    # every number finite (nan / inf never make sense in a config)
    def walk(obj, prefix=""):
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            key = f"{prefix}{f.name}"
            if dataclasses.is_dataclass(v):
                yield from walk(v, key + ".")
            elif isinstance(v, (list, tuple)):
                for i, x in enumerate(v):
                    yield f"{key}[{i}]", x
            elif not isinstance(v, dict):
                yield key, v
    for key, v in walk(cfg):
        if isinstance(v, float) and not math.isfinite(v):
            raise err(f"must be a finite number, got {v}", key.split("[")[0])

    positive = [("optim.lr", cfg.optim.lr), ("train.epochs", cfg.train.epochs),
                ("train.batch_size", cfg.train.batch_size), ("optim.eps", cfg.optim.eps)]
    for key, v in positive:
        if v <= 0:
            raise err(f"must be positive, got {v}", key)
    for key, v in (("model.input_size", cfg.model.input_size), ("train.threads", cfg.train.threads),
                   ("optim.lr_base_batch", cfg.optim.lr_base_batch), ("train.grad_clip", cfg.train.grad_clip),
                   ("train.budget_hours", cfg.train.budget_hours),
                   ("data.num_classes", cfg.data.num_classes)):
        if v is not None and v <= 0:
            raise err(f"must be positive (or null), got {v}", key)
    if cfg.train.ema_decay is not None and not 0.0 < cfg.train.ema_decay < 1.0:
        raise err(f"must be in (0, 1) (or null: off), got {cfg.train.ema_decay}", "train.ema_decay")
    reserved = sorted({"num_classes", "in_chans", "pretrained"} & set(cfg.model.kwargs))
    if reserved:
        raise err(f"{', '.join(reserved)} cannot be set here (the data's label set and model.in_chans / "
                  f"model.pretrained decide them)", "model.kwargs")
    if cfg.model.input_size is not None and cfg.model.input_size < 8:
        raise err(f"is too small for a face ({cfg.model.input_size} px; at least 8)", "model.input_size")
    non_negative = [("optim.weight_decay", cfg.optim.weight_decay), ("sched.min_lr", cfg.sched.min_lr),
                    ("sched.decay", cfg.sched.decay), ("train.min_delta", cfg.train.min_delta),
                    ("train.checkpoint_minutes", cfg.train.checkpoint_minutes),
                    ("sched.patience", cfg.sched.patience), ("loss.center.alpha", cfg.loss.center.alpha),
                    ("loss.cosine_harmony.alpha", cfg.loss.cosine_harmony.alpha),
                    ("loss.cosine_harmony.eps", cfg.loss.cosine_harmony.eps), ("aug.rotation", cfg.aug.rotation),
                    ("data.val_seed", cfg.data.val_seed), ("train.seed", cfg.train.seed)]
    for key, v in non_negative:
        if v < 0:
            raise err(f"must be >= 0, got {v}", key)
    for key, v, lo, hi in (("optim.momentum", cfg.optim.momentum, 0.0, 1.0),
                           ("sched.warmup_start", cfg.sched.warmup_start, 0.0, 1.0),
                           ("sched.factor", cfg.sched.factor, 0.0, 1.0),
                           ("aug.translate", cfg.aug.translate, 0.0, 0.99),
                           ("aug.brightness", cfg.aug.brightness, 0.0, 0.99),
                           ("aug.contrast", cfg.aug.contrast, 0.0, 0.99),
                           ("train.oversample.ratio", cfg.train.oversample.ratio, 0.0, 100.0)):
        if not lo <= v <= hi:
            raise err(f"must be in [{lo:g}, {hi:g}], got {v}", key)
    if any(not 0 <= b < 1 for b in cfg.optim.betas):
        raise err(f"each beta must be in [0, 1), got {cfg.optim.betas}", "optim.betas")
    if cfg.sched.gamma <= 0:
        raise err(f"must be positive, got {cfg.sched.gamma}", "sched.gamma")
    if any(m <= 0 for m in cfg.sched.milestones):
        raise err(f"milestones are epochs >= 1, got {cfg.sched.milestones}", "sched.milestones")
    if isinstance(cfg.aug.erasing_value, float) and not math.isfinite(cfg.aug.erasing_value):
        raise err("must be a finite number or 'random'", "aug.erasing_value")
    if cfg.train.eval_batch_size is not None and cfg.train.eval_batch_size <= 0:
        raise err("must be positive", "train.eval_batch_size")
    if cfg.train.workers is not None and cfg.train.workers < 0:
        raise err("must be >= 0", "train.workers")
    if cfg.train.early_stopping < 0:
        raise err("must be >= 0 (0 disables early stopping)", "train.early_stopping")
    if cfg.data.teacher is not None and cfg.data.teacher_model is not None:
        raise err("give one teacher: data.teacher (a predictions.csv, fixed targets) or data.teacher_model "
                  "(a model that labels every augmented batch), not both", "data.teacher_model")
    if cfg.data.teacher is None and cfg.data.teacher_model is None:
        for key, v in (("data.teacher_weight", cfg.data.teacher_weight),
                       ("data.teacher_temperature", cfg.data.teacher_temperature)):
            if v != 1.0:
                raise err("has no effect without data.teacher (a teacher's predictions.csv) or "
                          "data.teacher_model", key)
    mb = cfg.train.micro_batch
    if not isinstance(mb, str) and (isinstance(mb, bool) or mb < 0 or mb == 1):
        raise err(f"must be 0 (the whole batch), 'auto' or a slice of >= 2 samples "
                  f"(BatchNorm needs two), got {mb!r}", "train.micro_batch")
    if len(cfg.optim.betas) != 2:
        raise err("needs two values [beta1, beta2]", "optim.betas")
    if len(cfg.model.mean) not in (1, 3) or len(cfg.model.std) not in (1, 3):
        raise err("needs 1 value or 3 (one per channel)", "model.mean" if len(cfg.model.mean) not in (1, 3) else "model.std")
    if any(s <= 0 for s in cfg.model.std):
        raise err("must be positive", "model.std")
    if cfg.sched.warmup_epochs < 0 or cfg.sched.warmup_epochs >= cfg.train.epochs:
        raise err(f"must be in [0, train.epochs={cfg.train.epochs})", "sched.warmup_epochs")
    if cfg.sched.name == "step" and cfg.sched.step_size <= 0:
        raise err("must be positive", "sched.step_size")
    if cfg.sched.name == "multistep" and not cfg.sched.milestones:
        raise err("multistep needs milestones (epochs)", "sched.milestones")
    if cfg.data.folds == 1 or cfg.data.folds < 0:
        raise err("must be 0 (no cross-validation) or >= 2", "data.folds")
    if cfg.data.fold is not None and not (0 <= cfg.data.fold < max(cfg.data.folds, 1)):
        raise err(f"must be in [0, data.folds={cfg.data.folds})", "data.fold")
    if cfg.data.folds and cfg.data.test_split:
        raise err("cross-validation takes its test set from the folds; set data.test_split: null",
                  "data.test_split")
    if cfg.data.train_limit is not None and cfg.data.train_limit < 1:
        raise err(f"must be a positive number of images, got {cfg.data.train_limit}", "data.train_limit")
    if cfg.aug.apply_to == "oversampled" and not cfg.train.oversample.enabled:
        raise err("'oversampled' augments the copies train.oversample adds; enable train.oversample",
                  "aug.apply_to")
    if cfg.data.test_holdout is not None:
        th = cfg.data.test_holdout
        if not (th > 0 and (th < 1 or float(th).is_integer())):
            raise err(f"must be a fraction in (0, 1) or a whole count >= 1, got {th}", "data.test_holdout")
        if cfg.data.test_split or cfg.data.folds:
            raise err("a test hold-out replaces data.test_split and data.folds; set those to null / 0",
                      "data.test_holdout")
    if cfg.data.val_split is None and not 0 < cfg.data.val_fraction < 1:
        raise err("a hold-out validation set needs 0 < val_fraction < 1", "data.val_fraction")
    for key, pair in (("aug.scale", cfg.aug.scale), ("aug.ratio", cfg.aug.ratio),
                      ("aug.erasing_scale", cfg.aug.erasing_scale), ("aug.erasing_ratio", cfg.aug.erasing_ratio)):
        if len(pair) != 2 or not 0 < pair[0] <= pair[1]:
            raise err(f"needs [min, max] with 0 < min <= max, got {pair}", key)
    for key, p in (("aug.hflip", cfg.aug.hflip), ("aug.erasing", cfg.aug.erasing)):
        if not 0 <= p <= 1:
            raise err(f"is a probability, got {p}", key)
    if isinstance(cfg.loss.class_weights, list) and any(w < 0 for w in cfg.loss.class_weights):
        raise err("weights must be >= 0", "loss.class_weights")
    if cfg.loss.center.weight < 0 or cfg.loss.cosine_harmony.weight < 0:
        raise err("must be >= 0", "loss.center.weight" if cfg.loss.center.weight < 0 else "loss.cosine_harmony.weight")
    if cfg.train.oversample.ratio <= 0:
        raise err("must be positive", "train.oversample.ratio")
    if cfg.train.oversample.max_factor is not None and cfg.train.oversample.max_factor < 1:
        raise err("must be >= 1", "train.oversample.max_factor")
    return cfg


# ------------------------------------------------------------------------------ loading
def config_from_dict(d: dict, source: str = "<dict>", name: str | None = None) -> TrainConfig:
    """A validated :class:`TrainConfig` from a (possibly partial) nested mapping."""
    cfg = TrainConfig()
    if name:
        cfg.name = name
    if source != "<dict>":
        cfg.source = source
    if d is None:
        d = {}
    _update(cfg, d, source)
    return validate(cfg, source)


def _parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError("expected key=value", f"--set {text}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError("expected key=value", f"--set {text}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def apply_overrides(cfg: TrainConfig, overrides: list[str] | tuple[str, ...] | None,
                    validate_after: bool = True) -> TrainConfig:
    """Apply ``key=value`` overrides (dotted keys; values parsed as YAML then coerced).

    ``model.kwargs.dropout=0.3`` sets one entry of a dict field.
    """
    for text in overrides or ():
        key, value = _parse_override(text)
        where = f"--set {text}"
        parts = key.split(".")
        obj, prefix = cfg, ""
        for i, p in enumerate(parts):
            fields = _fields(type(obj))
            if p not in fields:
                raise _unknown(p, list(fields), prefix, where)
            tp, meta = fields[p]
            full = f"{prefix}{p}"
            last = i == len(parts) - 1
            if dataclasses.is_dataclass(tp):
                if last:
                    _update(getattr(obj, p), value if value is not None else {}, where, f"{full}.")
                    break
                obj, prefix = getattr(obj, p), f"{full}."
                continue
            if tp is dict and not last:
                sub = dict(getattr(obj, p))
                sub[".".join(parts[i + 1:])] = value
                setattr(obj, p, sub)
                break
            if not last:
                raise ConfigError(f"{full!r} is a value, not a section", where, key)
            val = _coerce(value, tp, meta, where, full)
            _check_choices(val, meta, where, full)
            setattr(obj, p, val)
    return validate(cfg, "overrides") if validate_after else cfg


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] | None = None) -> TrainConfig:
    """Read a YAML config, apply ``overrides`` and validate.  ``name`` defaults to the file stem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("no such config file", str(path))
    try:
        d = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"invalid YAML{line}: {getattr(exc, 'problem', exc)}", str(path)) from None
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise ConfigError(f"the top level must be a mapping of sections, got {type(d).__name__}", str(path))
    cfg = TrainConfig(name=path.stem)
    cfg.source = str(path)
    _update(cfg, d, str(path))
    validate(cfg, str(path))
    if overrides:
        apply_overrides(cfg, overrides, validate_after=False)
        validate(cfg, f"{path} with --set {' '.join(overrides)}")
    return cfg


def dump_config(cfg: TrainConfig) -> str:
    """The config as YAML (loadable by :func:`load_config`)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)


def diff_configs(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict) and k not in ("kwargs", "options"):
            out += diff_configs(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}")
    return out
