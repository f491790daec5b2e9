"""Everything a run needs before its first step, built from the config: the data as
tensors, the model, loss, optimizers, schedule and the step options (:class:`RunParts`).

:func:`build_run` is what :func:`litefer.training.trainer.train` calls between loading the
splits and restoring a checkpoint; the loop (:mod:`litefer.training.loop`) and the
checkpoints (:mod:`litefer.training.checkpoint`) only read these parts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn as nn

from litefer.training import distributed as D
from litefer.training.batches import Normalize, TensorFaces, build_batch_augment, iterate_batches, num_batches
from litefer.training.build import (_Step, build_criterion, build_model, build_optimizer, build_transforms,
                                    scaled_lr, seed_everything)
from litefer.training.config import ConfigError, TrainConfig
from litefer.training.data import DataSplits, _src
from litefer.training.ema import ModelEma
from litefer.training.metrics import evaluate
from litefer.training.schedule import LRSchedule
from litefer.training.speed import StepOptions, autotune, enable_compile_cache

#: runs shorter than this many iterations skip the per-CPU step measurement (it would cost more than it saves)
AUTOTUNE_MIN_ITERS = 1000


def monitor_mode(monitor: str) -> str:
    """``"min"`` for a loss, ``"max"`` for the accuracy-like metrics."""
    return "min" if monitor == "val_loss" else "max"


@dataclass
class RunParts:
    """The built pieces of one run (see :func:`build_run`)."""

    cfg: TrainConfig
    device: torch.device
    dinfo: D.DistInfo
    splits: DataSplits
    labels: tuple
    pre: dict
    model: nn.Module
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    center_opt: Optional[torch.optim.Optimizer]
    scaler: Any
    sched: LRSchedule
    train_data: TensorFaces
    val_data: TensorFaces
    augment: Any
    normalize: Normalize
    sampler: Any
    iters: int
    drop_last: bool
    eval_batch_size: int
    opts: StepOptions
    step_ddp: nn.Module
    step_fn: Callable
    use_amp: bool
    amp_dtype: torch.dtype
    #: the weights' moving average (``train.ema_decay``), or None
    ema: Optional[ModelEma] = None
    #: online distillation (``data.teacher_model``): labels each training batch, or None
    teacher: Optional[Any] = None

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def channels_last(self) -> bool:
        return bool(self.opts.channels_last)

    @property
    def cpu_bf16(self) -> bool:
        return (not self.cuda) and bool(self.opts.bf16)

    @property
    def eval_model(self) -> nn.Module:
        """What validation, selection and the test see: the moving average when there is one."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def mode(self) -> str:
        return monitor_mode(self.cfg.train.monitor)

    def autocast(self):
        if self.cpu_bf16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp)

    def eval_batches(self, t: TensorFaces):
        order = np.arange(len(t))[self.dinfo.rank::self.dinfo.world_size]
        return iterate_batches(t, order, self.eval_batch_size, False, None, self.normalize)

    def evaluate(self, t: TensorFaces, check: Optional[Callable[[], None]] = None, *, fp32: bool = False) -> dict:
        """Loss and metrics of the model on ``t`` (all ranks together).  ``fp32``: without the
        CPU's bf16 autocast (validation and test: the numbers are the fp32 model's, as exported)."""
        autocast = self.autocast
        if fp32 and self.cpu_bf16:
            autocast = lambda: torch.autocast("cpu", enabled=False)  # noqa: E731
        return evaluate(self.eval_model, self.eval_batches(t), self.num_classes, self.device, autocast,
                        self.dinfo, self.channels_last, check=check)


def build_run(cfg: TrainConfig, device: torch.device, dinfo: D.DistInfo, splits: DataSplits,
              checkpoint: Optional[dict], log: Callable[[str], None]) -> RunParts:
    """Model, loss, data tensors, sampler, optimizers, schedule and step options for ``cfg``
    (``checkpoint``: the raw ``last.pt`` being resumed, whose step options are kept)."""
    tc = cfg.train
    cuda = device.type == "cuda"
    labels = tuple(splits.train.labels)
    num_classes = len(labels)
    train_counts = np.bincount(splits.train.hard_targets, minlength=num_classes)

    seed_everything(tc.seed, tc.deterministic)
    if checkpoint is not None and cfg.model.init_from:
        log(f"model.init_from ({cfg.model.init_from}) not read: a resumed run's weights come from its last.pt")
    model, pre = build_model(cfg, num_classes, init_weights=checkpoint is None)
    criterion = build_criterion(cfg, num_classes, getattr(model, "num_features", None), train_counts,
                                getattr(model, "num_backbone_features", None))
    build_transforms(cfg, pre)                          # validates the aug section (named errors)

    # data: uint8 tensors in memory, batches augmented as tensors
    from litefer.data.sampling import EpochSampler
    train_data = TensorFaces(splits.train, pre["size"], pre["channels"], device)
    val_data = TensorFaces(splits.val, pre["size"], pre["channels"], device)
    ov = tc.oversample
    sampler = EpochSampler(splits.train.hard_targets, shuffle=True, seed=tc.seed, oversample=ov.enabled,
                           ratio=ov.ratio, max_factor=ov.max_factor, num_replicas=dinfo.world_size,
                           rank=dinfo.rank, pad=True, mark_copies=cfg.aug.apply_to == "oversampled")
    drop_last = tc.drop_last and len(sampler) >= tc.batch_size
    iters = num_batches(len(sampler), tc.batch_size, drop_last)
    if iters == 0:
        raise ConfigError(f"batch_size {tc.batch_size} leaves no training batch for {len(splits.train)} images",
                          _src(cfg), "train.batch_size")

    # step options: measured per CPU (or the checkpoint's, on resume)
    tune = bool(tc.autotune and tc.epochs * iters >= AUTOTUNE_MIN_ITERS and not dinfo.enabled and not cuda)
    if checkpoint is not None and checkpoint["training_state"].get("step_options"):
        opts = StepOptions.from_dict(checkpoint["training_state"]["step_options"])
        opts.compile = bool(tc.compile)          # may be switched; exactness assumes the same setting
        opts.reason = "as the checkpoint's run"
    else:
        auto_mb = tc.micro_batch == "auto"
        fixed_mb = 0 if auto_mb else int(tc.micro_batch)
        if cuda:
            opts = StepOptions(channels_last=bool(tc.channels_last), bf16=False, compile=bool(tc.compile),
                               micro_batch=fixed_mb, reason="cuda")
        else:
            opts = StepOptions(compile=bool(tc.compile), bf16=tc.cpu_bf16 == "on", micro_batch=fixed_mb,
                               reason="config")
            if tune:
                tuned = autotune(model, cfg.model.arch, (pre["channels"], pre["size"], pre["size"]), tc.batch_size,
                                 num_classes, bf16_mode=tc.cpu_bf16, micro=auto_mb, log=log)
                opts = StepOptions(tuned.channels_last, tuned.bf16, bool(tc.compile),
                                   tuned.micro_batch if auto_mb else fixed_mb, tuned.reason)
    model.to(device)
    criterion.to(device)
    if opts.channels_last:
        model.to(memory_format=torch.channels_last)
    ema = ModelEma(model, tc.ema_decay) if tc.ema_decay else None
    step_ddp = D.wrap(_Step(model, criterion), dinfo, device, tc.sync_bn)
    step_fn = step_ddp
    if opts.compile:
        if dinfo.enabled:
            log("[yellow]warning:[/] train.compile is ignored under DDP")
            opts.compile = False
        else:
            enable_compile_cache()
            step_fn = torch.compile(step_ddp)
    use_amp = bool(tc.amp and cuda)
    amp_dtype = torch.bfloat16 if tc.amp_dtype == "bfloat16" else torch.float16
    normalize = Normalize(pre["channels"], pre["mean"], pre["std"])
    teacher = _online_teacher(cfg, labels, pre, device, opts, splits, train_data, normalize, log,
                              resumed=checkpoint is not None, tune=tune)
    if tc.budget_hours and checkpoint is None:
        _size_to_budget(cfg, model, pre, splits, iters * tc.batch_size, num_classes, device, dinfo, opts, use_amp,
                        amp_dtype, log, teacher=teacher)
    optimizer = build_optimizer(cfg, model, criterion.model_params())
    if dinfo.enabled and cfg.optim.lr_base_batch:
        lr = scaled_lr(cfg, dinfo.world_size)
        for g in optimizer.param_groups:
            g["lr"] = g["initial_lr"] = lr
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and amp_dtype == torch.float16)
    return RunParts(
        cfg=cfg, device=device, dinfo=dinfo, splits=splits, labels=labels, pre=pre, model=model,
        criterion=criterion, optimizer=optimizer, center_opt=criterion.centers_optimizer(), scaler=scaler,
        sched=LRSchedule(cfg.sched, tc.epochs, iters, monitor_mode(tc.monitor)),
        train_data=train_data, val_data=val_data, augment=build_batch_augment(cfg.aug, pre),
        normalize=normalize, sampler=sampler, iters=iters,
        drop_last=drop_last, eval_batch_size=tc.eval_batch_size or 2 * tc.batch_size, opts=opts,
        step_ddp=step_ddp, step_fn=step_fn, use_amp=use_amp, amp_dtype=amp_dtype, ema=ema, teacher=teacher)


def _online_teacher(cfg: TrainConfig, labels: tuple, pre: dict, device: torch.device, opts: StepOptions,
                    splits: DataSplits, train_data: TensorFaces, normalize: Normalize, log: Callable[[str], None],
                    resumed: bool = False, tune: bool = False):
    """The :class:`~litefer.training.teacher.OnlineTeacher` of ``data.teacher_model`` (None
    without one); what it is, and how often its top class is the training images' own class,
    go into ``splits.info["teacher"]`` (and so into the run's checkpoints and result.json).
    On a CPU its precision is chosen for a new run and kept in ``opts.teacher_bf16``:
    measured where the step options are (``tune``), otherwise ``train.cpu_bf16 == "on"``, as
    for the step; a resumed run keeps its checkpoint's (None there: the step's autocast)."""
    d = cfg.data
    if d.teacher_model is None:
        return None
    from litefer.training.teacher import OnlineTeacher, TeacherError, choose_cpu_bf16
    try:
        teacher = OnlineTeacher(d.teacher_model, labels, pre, weight=d.teacher_weight,
                                temperature=d.teacher_temperature, device=device, channels_last=True)
        if device.type == "cpu" and not resumed:
            if tune:
                opts.teacher_bf16, why = choose_cpu_bf16(teacher, (pre["channels"], pre["size"], pre["size"]),
                                                         cfg.train.batch_size, cfg.train.cpu_bf16)
            else:
                opts.teacher_bf16, why = cfg.train.cpu_bf16 == "on", "train.cpu_bf16, not measured"
            log(f"online teacher: {'bf16' if opts.teacher_bf16 else 'fp32'} ({why})")
        teacher.cpu_bf16 = opts.teacher_bf16 if device.type == "cpu" else None
        cpu_bf16 = device.type != "cuda" and bool(opts.bf16)
        with torch.autocast("cpu", dtype=torch.bfloat16) if cpu_bf16 else torch.autocast(device.type, enabled=False):
            agree = teacher.agreement(train_data.images, train_data.classes, normalize)
    except TeacherError as exc:
        raise ConfigError(str(exc), _src(cfg), "data.teacher_model") from None
    teacher.info.update(agreement=agree, images=len(train_data))
    splits.info["teacher"] = dict(teacher.info)
    chance = 1.0 / max(len(labels), 1)
    if agree < 1.5 * chance:
        log(f"[yellow]warning:[/] the teacher {d.teacher_model}'s top class is the training label for only "
            f"{100 * agree:.1f} % of the training images (chance: {100 * chance:.0f} %): is it a model for "
            f"these classes and images?")
    return teacher


def _size_to_budget(cfg: TrainConfig, model: nn.Module, pre: dict, splits: DataSplits, epoch_images: int,
                    num_classes: int, device: torch.device, dinfo: D.DistInfo, opts: StepOptions, use_amp: bool,
                    amp_dtype: torch.dtype, log: Callable[[str], None], teacher=None) -> None:
    """``train.budget_hours``: measure this run's step and validation speed here, then set the
    epochs (and what counts in epochs) to what fits (:mod:`litefer.training.budget`).
    ``epoch_images``: what one epoch steps through on this rank (oversampling included);
    ``teacher``: an online teacher, whose forward pass each training batch also pays."""
    from litefer.training import budget as B
    tc = cfg.train
    if device.type == "cuda":
        autocast = lambda: torch.autocast("cuda", dtype=amp_dtype, enabled=use_amp)  # noqa: E731
    else:
        autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(opts.bf16))  # noqa: E731
    eval_batch = tc.eval_batch_size or 2 * tc.batch_size
    train_ips, eval_ips = B.measure(model, (pre["channels"], pre["size"], pre["size"]), tc.batch_size,
                                    eval_batch, num_classes, device, channels_last=bool(opts.channels_last),
                                    autocast=autocast, micro_batch=opts.micro_batch)
    if teacher is not None:
        from litefer.training.teacher import images_per_s
        t_ips = images_per_s(teacher, torch.randn(tc.batch_size, pre["channels"], pre["size"], pre["size"],
                                                  generator=torch.Generator().manual_seed(0)).to(device), autocast)
        log(f"budget: the online teacher labels {t_ips:.0f} images/s, the step trains {train_ips:.0f}")
        train_ips = 1.0 / (1.0 / train_ips + 1.0 / t_ips)
    world = max(1, dinfo.world_size)              # under DDP every rank steps through its share
    p = B.plan(float(tc.budget_hours), train_images=epoch_images,
               val_images=-(-len(splits.val) // world),
               test_images=-(-len(splits.test) // world) if splits.test is not None else 0,
               max_epochs=tc.epochs, train_images_per_s=train_ips, eval_images_per_s=eval_ips)
    p = D.broadcast_object(p, dinfo)              # every rank trains rank 0's plan
    B.apply_plan(cfg, p)
    log(f"budget: {p.describe()}")
