"""The training loop: ``train(cfg) -> TrainResult``.

>>> from litefer.training import load_config, train
>>> result = train(load_config("configs/default_ferplus.yaml"))
>>> result.best_checkpoint, result.test_metrics["accuracy"]

What a run does (the pieces live in their own modules):

1. loads the splits (:mod:`litefer.training.data`, :func:`prepare_data`): train, a
   *validation* split for model selection and optionally a *test* split;
2. holds every split in memory as one uint8 tensor at the model's input size and
   augments whole batches as tensors (:mod:`litefer.training.batches`); the epoch order is
   a function of ``(seed, epoch)``, a batch's augmentation of ``(seed, epoch, batch)``;
3. runs the step as fast as the machine allows (:mod:`litefer.training.speed`:
   channels_last / bf16 measured per CPU, optional ``torch.compile``; AMP and
   channels_last on CUDA), with LR warm-up + schedules (:mod:`litefer.training.schedule`);
4. writes a resumable ``last.pt`` after every epoch, at least every
   ``train.checkpoint_minutes`` mid-epoch, and on SIGINT / SIGTERM before exiting
   (:mod:`litefer.training.state`: atomic, loadable with ``weights_only=True``); a run
   resumed from it (``resume=``) continues mid-epoch exactly as if it had never stopped;
5. after every epoch evaluates the validation split, writes ``metrics.csv`` (and
   TensorBoard when installed) and, when the monitored metric improved, ``best.pt``
   (before ``last.pt``, so a crash between the two never leaves ``last.pt`` naming a best
   epoch that ``best.pt`` lacks); stops early after ``train.early_stopping`` epochs
   without improvement;
6. only then evaluates the test split, once, with the selected (best) weights, rewrites
   ``best.pt`` with those test metrics and writes ``result.json`` last (a run folder has
   a ``result.json`` only when the run finished; it always describes ``best.pt``).

Cross-validation has one runner, :func:`litefer.evaluation.cv.cross_validate` (``litefer cv``,
and ``litefer train`` on a config with ``data.folds``); it calls :func:`train` per fold.

Output folder: ``config.yaml``, ``metrics.csv``, ``best.pt``, ``last.pt``, ``status.json``
(what ``litefer runs`` lists), ``result.json`` (and ``tb/``).  Checkpoints use the format
of :mod:`litefer.models.checkpoint`.
"""
from __future__ import annotations

import copy
import csv
import hashlib
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn as nn

from litefer.training import distributed as D
from litefer.training import state as S
from litefer.training.batches import (Normalize, TensorFaces, build_batch_augment, iterate_batches,
                                      num_batches)
from litefer.training.build import (_Step, build_criterion, build_model, build_optimizer, build_transforms,
                                    code_version, git_hash, resolve_device, scaled_lr, seed_everything)
from litefer.training.config import ConfigError, TrainConfig, diff_configs, dump_config
from litefer.training.data import (DataSplits, _load_split, _src, check_class_coverage, load_split, prepare_data, read_exclude_list,
                                   stratified_holdout, subject_folds, subject_holdout, synthetic_faces)
from litefer.training.metrics import evaluate, metrics_from_confusion
from litefer.training.schedule import LRSchedule
from litefer.training.speed import StepOptions, autotune, enable_compile_cache

__all__ = ["TrainResult", "DataSplits", "TrainingInterrupted", "train", "prepare_data",
           "evaluate", "metrics_from_confusion", "LRSchedule", "synthetic_faces", "load_split", "read_exclude_list",
           "stratified_holdout", "subject_folds", "subject_holdout", "build_model", "build_criterion",
           "build_optimizer", "build_transforms", "resolve_device", "seed_everything", "code_version", "git_hash",
           "scaled_lr", "_Step", "_load_split"]

EPOCH_METRICS = ("val_loss", "val_acc", "val_mean_class_acc", "val_macro_f1")
CSV_FIELDS = ("epoch", "lr", "train_loss", "train_acc", "train_ce", "train_center", "train_ch",
              "val_loss", "val_acc", "val_mean_class_acc", "val_macro_f1", "best", "time_s", "images_per_s")
#: runs shorter than this many iterations skip the per-CPU step measurement (it would cost more than it saves)
AUTOTUNE_MIN_ITERS = 1000
#: how often status.json is refreshed during an epoch (seconds)
STATUS_EVERY_S = 30.0


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


class TrainingInterrupted(KeyboardInterrupt):
    """The run was stopped (SIGINT / SIGTERM) after writing a resumable checkpoint."""

    def __init__(self, signum: int, checkpoint: Optional[Path], epoch: int, iteration: int):
        self.signum, self.checkpoint, self.epoch, self.iteration = signum, checkpoint, epoch, iteration
        name = signal.Signals(signum).name if signum else "a stop request"
        super().__init__(f"stopped by {name} at epoch {epoch + 1}, iteration {iteration}; "
                         f"resumable checkpoint: {checkpoint}")


class _StopRequested(Exception):
    """Internal: unwinds from inside an epoch or an evaluation to the checkpoint writer."""


class _Signals:
    """SIGINT / SIGTERM set a flag the loop checks after every step (a second one stops at
    once).  Installed only in the main thread; handlers are restored on exit."""

    def __init__(self):
        self.signum = 0
        self._old: dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    self._old[sig] = signal.signal(sig, self._handle)
                except (ValueError, OSError):
                    pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum:                       # asked twice: stop now, no checkpoint
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, h in self._old.items():
            try:
                signal.signal(sig, h)
            except (ValueError, OSError):
                pass


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in module.state_dict().items()}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _f4(v: Optional[float]) -> str:
    return "—" if v is None else f"{v:.4f}"


def _mode(monitor: str) -> str:
    return "min" if monitor == "val_loss" else "max"


def _improved(value: Optional[float], best: Optional[float], mode: str, min_delta: float) -> bool:
    if value is None or not math.isfinite(value):
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
          callback: Optional[Callable[[dict], Optional[bool]]] = None, quiet: bool = False,
          on_step: Optional[Callable[[int, int], None]] = None) -> TrainResult:
    """Train as ``cfg`` says; returns paths, history and metrics (no global side effects
    beyond the output folder and the RNG seeds).

    - ``out_dir``: output folder (default ``cfg.out`` with ``{name}``); created, and its
      previous checkpoints/CSV/result replaced unless resuming.
    - ``resume``: a ``last.pt`` (or the run folder holding it) to continue from, mid-epoch
      included: identical to an uninterrupted run.
    - ``data``: ready-made :class:`DataSplits` (e.g. a CV runner's folds) instead of loading.
    - ``max_epochs``: stop after this many completed epochs (the schedule still spans
      ``train.epochs``) — an interruption that ``resume`` can continue.
    - ``callback(record)``: called after every epoch with its history row; return True to stop.
    - ``on_step(epoch, iteration)``: called after every training step (0-based epoch,
      1-based iteration within it).
    - ``quiet``: no log lines or progress bars.

    SIGINT / SIGTERM (in the main thread) end the run after writing ``last.pt``:
    :class:`TrainingInterrupted` (a KeyboardInterrupt) is raised naming the checkpoint.
    """
    cfg = copy.deepcopy(cfg)
    device = resolve_device(cfg.train.device, _src(cfg))
    dinfo = D.setup(device.type)
    threads0 = torch.get_num_threads()
    try:
        if dinfo.enabled and device.type == "cuda":
            device = torch.device("cuda", dinfo.local_rank)
        if cfg.train.threads:
            torch.set_num_threads(int(cfg.train.threads))
        with _Signals() as sig:
            return _train(cfg, device, dinfo, out_dir, resume, data, max_epochs, callback, quiet, on_step, sig)
    finally:
        if torch.get_num_threads() != threads0:
            torch.set_num_threads(threads0)
        D.teardown(dinfo)


def resolve_resume(resume: str | Path) -> Path:
    """``last.pt`` itself, or the run folder holding it."""
    p = Path(resume)
    if p.is_dir():
        if not (p / "last.pt").is_file():
            raise ConfigError(f"{p} holds no last.pt to resume from", "--resume")
        return p / "last.pt"
    return p


def _load_resume(path: Path, cfg: TrainConfig, labels, log) -> dict:
    raw = S.safe_load(path, "checkpoint")
    ts = raw.get("training_state") if isinstance(raw, dict) else None
    if ts is None:
        raise ConfigError(f"{path} has no training state (best.pt holds weights only); resume from last.pt",
                          "--resume")
    if raw.get("arch") != cfg.model.arch or list(raw.get("labels") or []) != list(labels):
        raise ConfigError(f"{path} is a {raw.get('arch')} over {raw.get('labels')}, this config trains "
                          f"{cfg.model.arch} over {list(labels)}", "--resume")
    changed = [k for k in diff_configs(raw.get("config") or {}, cfg.to_dict())
               if k not in ("out", "train.epochs", "train.workers", "train.device", "train.progress",
                            "train.tensorboard", "train.early_stopping", "train.checkpoint_minutes",
                            "train.threads", "train.autotune")]
    if changed:
        log(f"[yellow]warning:[/] resuming with a config that differs from the checkpoint's in: {', '.join(changed)}")
    return raw


def _train(cfg: TrainConfig, device: torch.device, dinfo: D.DistInfo, out_dir, resume, data, max_epochs,
           callback, quiet, on_step, sig: _Signals) -> TrainResult:
    tc = cfg.train
    main = dinfo.is_main
    log = _Log(main and not quiet)
    out = Path(out_dir) if out_dir is not None else cfg.out_dir()
    if tc.workers:
        log(f"note: train.workers = {tc.workers} is not used: the trainer decodes the images once and "
            "holds them in memory, with augmentation in the training process (the key is kept so older "
            "configs load)")
    if main:
        out.mkdir(parents=True, exist_ok=True)
        other = S.read_status(out)
        if (other and other.get("state") == "running" and other.get("host") == os.uname().nodename
                and other.get("pid") != os.getpid() and S.pid_alive(other.get("pid"))):
            raise ConfigError(f"{out} is in use by a running training process (pid {other.get('pid')}); "
                              f"stop it first or train into another folder", "out")
    cuda = device.type == "cuda"
    use_amp = bool(tc.amp and cuda)
    amp_dtype = torch.bfloat16 if tc.amp_dtype == "bfloat16" else torch.float16
    resume_path = resolve_resume(resume) if resume is not None else None

    seed_everything(tc.seed, tc.deterministic)
    splits = data if data is not None else prepare_data(cfg)
    if data is not None:
        check_class_coverage(cfg, splits.train, splits.val, splits.test)
    labels = tuple(splits.train.labels)
    num_classes = len(labels)
    if cfg.data.num_classes is not None and cfg.data.num_classes != num_classes and cfg.data.dataset != "synthetic":
        raise ConfigError(f"data.num_classes={cfg.data.num_classes} but the data has {num_classes} labels",
                          _src(cfg), "data.num_classes")
    train_counts = np.bincount(splits.train.hard_targets, minlength=num_classes)
    raw = _load_resume(resume_path, cfg, labels, log) if resume_path is not None else None

    # model, loss, optimizers ------------------------------------------------------------
    seed_everything(tc.seed, tc.deterministic)
    model, pre = build_model(cfg, num_classes)
    feat_dim = getattr(model, "num_features", None)
    criterion = build_criterion(cfg, num_classes, feat_dim, train_counts,
                                getattr(model, "num_backbone_features", None))
    build_transforms(cfg, pre)                          # validates the aug section (named errors)

    # data: uint8 tensors in memory, batches augmented as tensors ---------------------------
    from litefer.data.sampling import EpochSampler
    train_data = TensorFaces(splits.train, pre["size"], pre["channels"], device)
    val_data = TensorFaces(splits.val, pre["size"], pre["channels"], device)
    augment = build_batch_augment(cfg.aug, pre)
    normalize = Normalize(pre["channels"], pre["mean"], pre["std"])
    ov = tc.oversample
    sampler = EpochSampler(splits.train.hard_targets, shuffle=True, seed=tc.seed, oversample=ov.enabled,
                           ratio=ov.ratio, max_factor=ov.max_factor, num_replicas=dinfo.world_size,
                           rank=dinfo.rank, pad=True, mark_copies=cfg.aug.apply_to == "oversampled")
    drop_last = tc.drop_last and len(sampler) >= tc.batch_size
    iters = num_batches(len(sampler), tc.batch_size, drop_last)
    if iters == 0:
        raise ConfigError(f"batch_size {tc.batch_size} leaves no training batch for {len(splits.train)} images",
                          _src(cfg), "train.batch_size")
    ebs = tc.eval_batch_size or 2 * tc.batch_size

    def eval_batches(t: TensorFaces):
        order = np.arange(len(t))[dinfo.rank::dinfo.world_size]
        return iterate_batches(t, order, ebs, False, None, normalize)

    # step options: measured per CPU (or the checkpoint's, on resume) -----------------------
    if raw is not None and raw["training_state"].get("step_options"):
        opts = StepOptions.from_dict(raw["training_state"]["step_options"])
        opts.compile = bool(tc.compile)          # may be switched; exactness assumes the same setting
        opts.reason = "as the checkpoint's run"
    elif cuda:
        opts = StepOptions(channels_last=bool(tc.channels_last), bf16=False, compile=bool(tc.compile), reason="cuda")
    else:
        opts = StepOptions(compile=bool(tc.compile), bf16=tc.cpu_bf16 == "on", reason="config")
        if tc.autotune and tc.epochs * iters >= AUTOTUNE_MIN_ITERS and not dinfo.enabled:
            tuned = autotune(model, cfg.model.arch, (pre["channels"], pre["size"], pre["size"]), tc.batch_size,
                             num_classes, bf16_mode=tc.cpu_bf16, log=log)
            opts = StepOptions(tuned.channels_last, tuned.bf16, bool(tc.compile), tuned.reason)
    channels_last = opts.channels_last
    cpu_bf16 = (not cuda) and opts.bf16
    model.to(device)
    criterion.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    step = _Step(model, criterion)
    step_ddp = D.wrap(step, dinfo, device, tc.sync_bn)
    step_fn = step_ddp
    if opts.compile:
        if dinfo.enabled:
            log("[yellow]warning:[/] train.compile is ignored under DDP")
            opts.compile = False
        else:
            enable_compile_cache()
            step_fn = torch.compile(step_ddp)
    optimizer = build_optimizer(cfg, model, criterion.model_params())
    if dinfo.enabled and cfg.optim.lr_base_batch:
        lr = scaled_lr(cfg, dinfo.world_size)
        for g in optimizer.param_groups:
            g["lr"] = g["initial_lr"] = lr
    center_opt = criterion.centers_optimizer()
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and amp_dtype == torch.float16)

    def autocast():
        if cpu_bf16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp)

    mode = _mode(tc.monitor)
    sched = LRSchedule(cfg.sched, tc.epochs, iters, mode)

    # state --------------------------------------------------------------------------------
    history: list[dict] = []
    best_value: Optional[float] = None
    best_epoch, best_metrics, best_state, bad_epochs = 0, {}, None, 0
    start_epoch, start_iter, partial = 0, 0, None
    csv_path, best_path, last_path = out / "metrics.csv", out / "best.pt", out / "last.pt"
    result_path = out / "result.json"
    if raw is not None:
        ts = raw["training_state"]
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
        pos = ts.get("position") or {"epoch": int(raw["epoch"]), "iter": 0}
        start_epoch, start_iter = int(pos["epoch"]), int(pos["iter"])
        partial = ts.get("partial") if start_iter else None
        if start_iter and ts.get("iters") != iters:
            log(f"[yellow]warning:[/] {ts.get('iters')} iterations per epoch in the checkpoint, {iters} now; "
                f"epoch {start_epoch + 1} restarts from its beginning")
            start_iter, partial = 0, None
        rngs = ts.get("rng_per_rank") or []
        if len(rngs) == dinfo.world_size:
            S.set_rng_state(rngs[dinfo.rank])
        else:
            log("[yellow]warning:[/] world size changed since the checkpoint; RNG streams re-seeded")
            seed_everything(tc.seed + 1000 * start_epoch + dinfo.rank, tc.deterministic)
        where = f"epoch {start_epoch + 1}, iteration {start_iter}" if start_iter else f"epoch {start_epoch}"
        log(f"resumed from {resume_path} at {where}")
    elif dinfo.enabled:
        # same init on every rank (DDP also broadcasts), distinct dropout streams per rank
        seed_everything(tc.seed + dinfo.rank, tc.deterministic)

    # outputs ------------------------------------------------------------------------------
    tb = None
    base_meta = S.plain({"arch": cfg.model.arch, "arch_kwargs": dict(cfg.model.kwargs), "labels": list(labels),
                         "preprocess": pre, "config": cfg.to_dict(), "code_version": code_version(),
                         "data": splits.info})
    if main:
        if result_path.exists():          # result.json describes a finished run only
            result_path.unlink()
        if raw is None:
            for p in (best_path, last_path):
                if p.exists():
                    p.unlink()
        elif best_path.is_file():         # best.pt must hold the best epoch last.pt names
            try:
                b_epoch = S.safe_load(best_path).get("epoch")
            except ConfigError:
                b_epoch = None
            if b_epoch != best_epoch:
                if best_state is not None:
                    S.save_checkpoint({**base_meta, "state_dict": best_state, "epoch": best_epoch,
                                       "metrics": {"val": best_metrics, "monitor": tc.monitor,
                                                   "best_epoch": best_epoch, "best_value": best_value}}, best_path)
                else:
                    best_path.unlink()
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

    n_params = sum(p.numel() for p in model.parameters())
    cpu_opts = "" if cuda else (f"; {torch.get_num_threads()} threads, channels_last {'on' if channels_last else 'off'}, "
                                f"bf16 {'on' if cpu_bf16 else 'off'}, compile {'on' if opts.compile else 'off'} "
                                f"({opts.reason})")
    log(f"[bold]{cfg.name}[/]: {cfg.model.arch} ({n_params / 1e6:.2f} M params) on {device}"
        f"{f' x{dinfo.world_size}' if dinfo.enabled else ''}; {len(splits.train)} train / {len(splits.val)} val"
        f"{f' / {len(splits.test)} test' if splits.test is not None else ''} images, {num_classes} classes; "
        f"{tc.epochs} epochs x {iters} iterations{cpu_opts}; out: {out}")

    status = {"name": cfg.name, "arch": cfg.model.arch, "dataset": cfg.data.dataset,
              "train_split": cfg.data.train_split, "out_dir": str(out), "epochs": tc.epochs, "iters": iters,
              "monitor": tc.monitor, "config": getattr(cfg, "source", None), "started": time.time()}
    ips_hist: list[float] = [r["images_per_s"] for r in history if r.get("images_per_s")]
    eval_frac = [0.0]

    def put_status(state: str, epoch: int, it: int, ips: Optional[float] = None, **extra) -> None:
        if not main:
            return
        rate = ips or (ips_hist[-1] if ips_hist else None)
        done = epoch * iters + it
        eta = None
        if rate and state == "running":
            eta = (tc.epochs * iters - done) * tc.batch_size * dinfo.world_size / rate * (1 + eval_frac[0])
        S.write_status(out, **status, state=state, epoch=epoch, iter=it, best_value=S.finite_or_none(best_value),
                       best_epoch=best_epoch, images_per_s=rate, eta_s=eta, **extra)

    def training_state(position: dict, rngs: list, partial_state: Optional[dict]) -> dict:
        return {
            "criterion": _cpu_state(criterion), "optimizer": optimizer.state_dict(),
            "center_optimizer": center_opt.state_dict() if center_opt is not None else None,
            "scheduler": S.plain(sched.state_dict()),
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "rng_per_rank": rngs, "history": S.plain(history),
            "best": S.plain({"value": best_value, "epoch": best_epoch, "metrics": best_metrics,
                             "bad_epochs": bad_epochs}),
            "best_state_dict": best_state, "world_size": dinfo.world_size, "position": position,
            "iters": iters, "partial": partial_state, "step_options": opts.to_dict(),
        }

    progress = _Progress(main and tc.progress and not quiet, log.console, tc.epochs * iters,
                         start_epoch * iters + start_iter)
    stopped_early = False
    target_hard = lambda y: y.argmax(1) if y.ndim == 2 else y  # noqa: E731
    ckpt_every = tc.checkpoint_minutes * 60.0
    last_ckpt = last_status = time.monotonic()
    put_status("running", start_epoch, start_iter)

    def want_checkpoint(it: int) -> tuple[bool, int]:
        """(write a mid-epoch checkpoint now?, stop signal) — agreed on by all ranks."""
        due = bool(ckpt_every) and time.monotonic() - last_ckpt >= ckpt_every
        signum = sig.signum
        if dinfo.enabled:                # every rank joins the same collectives at the same iterations
            if it % 20 != 0 and it != iters:
                return False, 0
            due, signum = agreed(due, signum)
        return due or bool(signum), signum

    def agreed(due: bool, signum: int) -> tuple[bool, int]:
        """(any rank due, a stop signal any rank received) — the same answer on every rank."""
        if not dinfo.enabled:
            return due, signum
        t = torch.tensor([float(due), float(signum > 0), float(signum)], dtype=torch.float64, device=device)
        D.all_reduce_sum(t, dinfo)
        n_sig = int(t[1].item())
        return bool(t[0].item()), (int(round(t[2].item() / n_sig)) if n_sig else 0)

    epoch, it = start_epoch, start_iter
    if sig.signum:                       # stopped while loading data / measuring: nothing new to save
        put_status("stopped", start_epoch, start_iter, signal=signal.Signals(sig.signum).name)
        progress.close()
        raise TrainingInterrupted(sig.signum, last_path if last_path.is_file() else None, start_epoch, start_iter)
    try:
        for epoch in range(start_epoch, tc.epochs):
            if max_epochs is not None and epoch >= max_epochs:
                break
            t0 = time.perf_counter()
            sampler.set_epoch(epoch)
            step_ddp.train()
            progress.start(f"epoch {epoch + 1}/{tc.epochs}", iters)
            first = start_iter if epoch == start_epoch else 0
            sums = {k: torch.zeros((), dtype=torch.float64, device=device) for k in ("loss", "ce", "center", "ch")}
            correct = torch.zeros((), dtype=torch.int64, device=device)
            seen, train_time0 = 0, 0.0
            lr0 = sched.lr(optimizer.param_groups[0]["initial_lr"], epoch, 0)
            if first and partial:
                for k in sums:
                    sums[k] = partial["sums"][k].to(device)
                correct = partial["correct"].to(device)
                seen, train_time0 = int(partial["seen"]), float(partial["train_time"])
            order = np.fromiter(iter(sampler), dtype=np.int64)
            it = first

            def snapshot(position_iter: int) -> dict:
                return {"sums": {k: v.detach().cpu() for k, v in sums.items()}, "correct": correct.detach().cpu(),
                        "seen": seen, "train_time": train_time0 + time.perf_counter() - t0,
                        "iter": position_iter}

            def write_mid(position_iter: int) -> None:
                rngs = D.all_gather_object(S.rng_state(), dinfo)
                if main:
                    st = training_state({"epoch": epoch, "iter": position_iter}, rngs, snapshot(position_iter))
                    S.save_checkpoint({**base_meta, "state_dict": _cpu_state(model), "epoch": epoch,
                                       "metrics": None, "training_state": st}, last_path)

            batches = iterate_batches(train_data, order, tc.batch_size, drop_last, augment, normalize,
                                      seed=tc.seed, epoch=epoch, rank=dinfo.rank, start=first,
                                      copies_only=sampler.mark_copies)
            for x, y in batches:
                lr = sched.apply(optimizer, epoch, it)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with autocast():
                    loss, logits, parts = step_fn(x, y)
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
                it += 1
                if it % 10 == 0 or it == iters:
                    run_loss = sums["loss"].item() / seen
                    if not math.isfinite(run_loss) and not scaler.is_enabled():
                        raise FloatingPointError(f"loss became {run_loss} at epoch {epoch + 1}, iteration {it} "
                                                 f"(lr {lr:.3g}); lower optim.lr or enable train.grad_clip")
                    progress.update(it, f"loss {run_loss:.4f} acc {correct.item() / seen:.3f} lr {lr:.2e}",
                                    advance_run=(it - 1) % 10 + 1)
                if on_step is not None:
                    on_step(epoch, it)
                write_now, signum = want_checkpoint(it)
                if write_now:
                    write_mid(it)
                    last_ckpt = time.monotonic()
                    if signum:
                        raise _StopRequested(signum, epoch, it)
                if main and time.monotonic() - last_status >= STATUS_EVERY_S:
                    el = train_time0 + time.perf_counter() - t0
                    put_status("running", epoch, it, ips=seen * dinfo.world_size / max(el, 1e-9))
                    last_status = time.monotonic()
            # epoch totals over ranks
            tot = torch.stack([sums["loss"], sums["ce"], sums["center"], sums["ch"],
                               correct.double(), torch.tensor(float(seen), dtype=torch.float64, device=device)])
            D.all_reduce_sum(tot, dinfo)
            D.average_buffers(model, dinfo)
            n_seen = max(tot[5].item(), 1.0)
            train_time = train_time0 + time.perf_counter() - t0
            te0 = time.perf_counter()

            def check() -> None:
                if sig.signum:                   # all steps of the epoch done: resume evaluates it
                    write_mid(iters)
                    raise _StopRequested(sig.signum, epoch, iters)
            val = evaluate(model, eval_batches(val_data), num_classes, device, autocast, dinfo, channels_last,
                           check=None if dinfo.enabled else check)
            eval_frac[0] = (time.perf_counter() - te0) / max(train_time, 1e-9)
            record = {
                "epoch": epoch + 1, "lr": lr0,
                "train_loss": tot[0].item() / n_seen, "train_acc": tot[4].item() / n_seen,
                "train_ce": tot[1].item() / n_seen,
                "train_center": tot[2].item() / n_seen if criterion.center is not None else None,
                "train_ch": tot[3].item() / n_seen if criterion.ch is not None else None,
                "val_loss": val["loss"], "val_acc": val["accuracy"], "val_mean_class_acc": val["mean_class_acc"],
                "val_macro_f1": val["macro_f1"], "time_s": train_time + time.perf_counter() - te0,
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
            ips_hist.append(record["images_per_s"])
            stop = bool(tc.early_stopping and bad_epochs >= tc.early_stopping)
            if callback is not None and callback(dict(record)):
                stop = True
            stop = bool(D.broadcast_object(stop, dinfo))
            rngs = D.all_gather_object(S.rng_state(), dinfo)
            if main:
                metrics = S.plain({"val": val, "train": {"loss": record["train_loss"], "accuracy": record["train_acc"]},
                                   "monitor": tc.monitor, "best_epoch": best_epoch, "best_value": best_value})
                # best.pt first: last.pt never names a best epoch best.pt does not hold
                if improved:
                    S.save_checkpoint({**base_meta, "state_dict": best_state, "metrics": metrics,
                                       "epoch": epoch + 1}, best_path)
                S.save_checkpoint({**base_meta, "state_dict": _cpu_state(model), "metrics": metrics,
                                   "epoch": epoch + 1,
                                   "training_state": training_state({"epoch": epoch + 1, "iter": 0}, rngs, None)},
                                  last_path)
                last_ckpt = time.monotonic()
                with open(csv_path, "a", newline="") as fh:
                    csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore").writerow(record)
                if tb is not None:
                    for k, v in record.items():
                        if isinstance(v, (int, float)) and k != "epoch" and v is not None:
                            tb.add_scalar(k, v, epoch + 1)
                    tb.flush()
                put_status("running", epoch + 1, 0)
            log(f"epoch {epoch + 1:>3}/{tc.epochs}  loss {record['train_loss']:.4f}  acc {record['train_acc']:.4f}  "
                f"val_loss {val['loss']:.4f}  val_acc {_f4(val['accuracy'])}  val_mca {_f4(val['mean_class_acc'])}  "
                f"lr {lr0:.2e}  {record['time_s']:.1f}s  {record['images_per_s']:.0f} img/s"
                f"{'  [green]*best*[/]' if improved else ''}")
            _, end_sig = agreed(False, sig.signum)
            if end_sig:
                raise _StopRequested(end_sig, epoch + 1, 0)
            if stop:
                stopped_early = bool(tc.early_stopping and bad_epochs >= tc.early_stopping)
                if stopped_early:
                    log(f"early stopping: no improvement of {tc.monitor} for {bad_epochs} epochs")
                break
    except _StopRequested as req:
        signum, pos_e, pos_i = req.args
        progress.close()
        put_status("stopped", pos_e, pos_i, signal=signal.Signals(signum).name)
        log(f"[yellow]stopped by {signal.Signals(signum).name}[/] at epoch {pos_e + 1}, iteration {pos_i}; "
            f"resumable checkpoint written: {last_path}")
        raise TrainingInterrupted(signum, last_path if last_path.is_file() else None, pos_e, pos_i) from None
    except KeyboardInterrupt:
        put_status("stopped", epoch, it, signal="SIGINT (no checkpoint)")
        raise
    except BaseException as exc:
        put_status("failed", epoch, it, error=f"{type(exc).__name__}: {str(exc)[:300]}")
        raise
    finally:
        progress.close()
        if tb is not None:
            tb.close()

    # test with the selected weights ----------------------------------------------------------
    if best_state is not None:
        model.load_state_dict(best_state)
    test_metrics = None
    if splits.test is not None and best_state is not None:
        test_data = TensorFaces(splits.test, pre["size"], pre["channels"], device)
        test_metrics = evaluate(model, eval_batches(test_data), num_classes, device, autocast, dinfo, channels_last)
        log(f"test ({splits.info.get('test_split', 'test')}) with epoch {best_epoch} weights: "
            f"acc {_f4(test_metrics['accuracy'])}  mean class acc {_f4(test_metrics['mean_class_acc'])}  "
            f"macro F1 {_f4(test_metrics['macro_f1'])}")
    finished = stopped_early or bool(history and history[-1]["epoch"] >= tc.epochs)
    if main:
        if best_state is not None:
            # best.pt from the weights in memory (never a load-modify of the file), then result.json last
            metrics = S.plain({"val": best_metrics, "monitor": tc.monitor, "best_epoch": best_epoch,
                               "best_value": best_value, **({"test": test_metrics} if test_metrics else {})})
            S.save_checkpoint({**base_meta, "state_dict": best_state, "metrics": metrics, "epoch": best_epoch},
                              best_path)
        summary = {"name": cfg.name, "arch": cfg.model.arch, "labels": list(labels), "data": splits.info,
                   "monitor": tc.monitor, "best_epoch": best_epoch, "best_value": best_value,
                   "val": best_metrics, "test": test_metrics, "epochs_run": len(history),
                   "stopped_early": stopped_early, "best_checkpoint": str(best_path) if best_path.is_file() else None,
                   "best_sha256": _sha256(best_path) if best_path.is_file() else None,
                   "last_checkpoint": str(last_path) if last_path.is_file() else None,
                   "step_options": opts.to_dict(), "code_version": base_meta["code_version"]}
        S.write_json(result_path, S.plain(summary))
        put_status("finished" if finished else "stopped", len(history), 0)
    D.barrier(dinfo)
    model.eval()
    return TrainResult(out_dir=out, best_checkpoint=best_path if best_path.is_file() else None,
                       last_checkpoint=last_path if last_path.is_file() else None, history=history,
                       best_epoch=best_epoch, best_metrics=best_metrics, test_metrics=test_metrics,
                       stopped_early=stopped_early, labels=labels, preprocess=pre, model=model)
