"""The training loop: ``train(cfg) -> TrainResult``.

>>> from litefer.training import load_config, train
>>> result = train(load_config("configs/default_ferplus.yaml"))
>>> result.best_checkpoint, result.test_metrics["accuracy"]

What a run does (the pieces live in their own modules; this one only orders them):

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
5. after every epoch evaluates the validation split (in fp32, like the test split, even
   when the steps run with bf16 autocast: selection and test numbers are the exported
   model's), writes ``metrics.csv`` (and
   TensorBoard when installed) and, when the monitored metric improved, ``best.pt``
   (before ``last.pt``, so a crash between the two never leaves ``last.pt`` naming a best
   epoch that ``best.pt`` lacks); stops early after ``train.early_stopping`` epochs
   without improvement;
6. only then evaluates the test split, once, with the selected (best) weights, rewrites
   ``best.pt`` with those test metrics and writes ``result.json`` last (a run folder has
   a ``result.json`` only when the run finished; it always describes ``best.pt``).

The run is built by :func:`litefer.training.setup.build_run` (model, loss, data tensors,
optimizers, schedule, step options), its epochs are :func:`litefer.training.loop.train_one_epoch`,
and :mod:`litefer.training.checkpoint` holds its record (history, best epoch), the resumable
training state and the output folder's files.

Cross-validation has one runner, :func:`litefer.evaluation.cv.cross_validate` (``litefer cv``,
and ``litefer train`` on a config with ``data.folds``); it calls :func:`train` per fold.

Output folder: ``config.yaml``, ``metrics.csv``, ``best.pt``, ``last.pt``, ``status.json``
(what ``litefer runs`` lists), ``result.json`` (and ``tb/``).  Checkpoints use the format
of :mod:`litefer.models.checkpoint`.
"""
from __future__ import annotations

import copy
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn as nn

from litefer.training import distributed as D
from litefer.training import state as S
from litefer.training.batches import TensorFaces
from litefer.training.build import (_Step, build_criterion, build_model, build_optimizer, build_transforms,
                                    code_version, git_hash, init_path, resolve_device, scaled_lr,
                                    seed_everything)
from litefer.training.checkpoint import CSV_FIELDS, RunFiles, RunRecord, restore, sha256_file
from litefer.training.config import ConfigError, TrainConfig, diff_configs
from litefer.training.data import (DataSplits, _load_split, _src, check_class_coverage, load_split, prepare_data,
                                   read_exclude_list, stratified_holdout, subject_folds, subject_holdout,
                                   synthetic_faces)
from litefer.training.loop import Checkpointer, StopRequested, epoch_record, train_one_epoch
from litefer.training.metrics import evaluate, metrics_from_confusion
from litefer.training.schedule import LRSchedule
from litefer.training.setup import RunParts, build_run

__all__ = ["TrainResult", "DataSplits", "TrainingInterrupted", "train", "prepare_data",
           "evaluate", "metrics_from_confusion", "LRSchedule", "synthetic_faces", "load_split", "read_exclude_list",
           "stratified_holdout", "subject_folds", "subject_holdout", "build_model", "build_criterion",
           "build_optimizer", "build_transforms", "resolve_device", "seed_everything", "code_version", "git_hash",
           "scaled_lr", "_Step", "_load_split", "CSV_FIELDS"]

_sha256 = sha256_file


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


def _f4(v: Optional[float]) -> str:
    return "—" if v is None else f"{v:.4f}"


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
    if cfg.train.budget_hours is not None:
        _keep_sized_schedule(cfg, raw.get("config") or {}, log)
    changed = [k for k in diff_configs(raw.get("config") or {}, cfg.to_dict())
               if k not in ("out", "train.epochs", "train.workers", "train.device", "train.progress",
                            "train.tensorboard", "train.early_stopping", "train.checkpoint_minutes",
                            "train.threads", "train.autotune")]
    if changed:
        log(f"[yellow]warning:[/] resuming with a config that differs from the checkpoint's in: {', '.join(changed)}")
    return raw


def _keep_sized_schedule(cfg: TrainConfig, saved: dict, log) -> None:
    """Resuming with ``train.budget_hours`` set: the run keeps the schedule it was sized to
    when it started (its checkpoint's config), whatever this machine's speed now."""
    from litefer.training.config import config_from_dict
    try:
        old = config_from_dict(saved)
    except ConfigError:
        return                                        # the config diff below names what differs
    cfg.train.epochs, cfg.train.early_stopping, cfg.sched = old.train.epochs, old.train.early_stopping, old.sched
    cfg.train.budget_hours = None
    cfg.notes = old.notes
    log(f"resuming: the run keeps its schedule of {cfg.train.epochs} epochs (train.budget_hours applies when "
        "a run starts)")


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
    resume_path = resolve_resume(resume) if resume is not None else None

    # data, model, loss, optimizers, step options --------------------------------------------
    seed_everything(tc.seed, tc.deterministic)
    splits = data if data is not None else prepare_data(cfg)
    if data is not None:
        check_class_coverage(cfg, splits.train, splits.val, splits.test)
    labels = tuple(splits.train.labels)
    if cfg.data.num_classes is not None and cfg.data.num_classes != len(labels) and cfg.data.dataset != "synthetic":
        raise ConfigError(f"data.num_classes={cfg.data.num_classes} but the data has {len(labels)} labels",
                          _src(cfg), "data.num_classes")
    raw = _load_resume(resume_path, cfg, labels, log) if resume_path is not None else None
    if raw is None and cfg.model.init_from:
        used = init_path(cfg)
        if str(used) != cfg.model.init_from:
            # the run folder's config.yaml names the file actually loaded (a path relative to the
            # original config's folder would not resolve from the run folder: resume, curves --stages)
            cfg = copy.deepcopy(cfg)
            cfg.model.init_from = str(used)
    parts = build_run(cfg, device, dinfo, splits, raw, log)
    model, iters, pre = parts.model, parts.iters, parts.pre

    # where the run starts: a checkpoint's position, or the beginning ---------------------------
    record, start_epoch, start_iter, partial = RunRecord(), 0, 0, None
    if raw is not None:
        record, start_epoch, start_iter, partial = restore(parts, raw, log)
        where = f"epoch {start_epoch + 1}, iteration {start_iter}" if start_iter else f"epoch {start_epoch}"
        log(f"resumed from {resume_path} at {where}")
    elif dinfo.enabled:
        # same init on every rank (DDP also broadcasts), distinct dropout streams per rank
        seed_everything(tc.seed + dinfo.rank, tc.deterministic)

    base_meta = S.plain({"arch": cfg.model.arch, "arch_kwargs": dict(cfg.model.kwargs), "labels": list(labels),
                         "preprocess": pre, "config": cfg.to_dict(), "code_version": code_version(),
                         "data": splits.info})
    files = RunFiles(out, parts, base_meta, main)
    files.prepare(record, resumed=raw is not None)
    n_params = sum(p.numel() for p in model.parameters())
    opts = parts.opts
    cpu_opts = "" if parts.cuda else (
        f"; {torch.get_num_threads()} threads, channels_last {'on' if parts.channels_last else 'off'}, "
        f"bf16 {'on' if parts.cpu_bf16 else 'off'}, compile {'on' if opts.compile else 'off'}"
        f"{f', batches in slices of {opts.micro_batch}' if opts.micro_batch else ''} ({opts.reason})")
    log(f"[bold]{cfg.name}[/]: {cfg.model.arch} ({n_params / 1e6:.2f} M params) on {device}"
        f"{f' x{dinfo.world_size}' if dinfo.enabled else ''}; {len(splits.train)} train / {len(splits.val)} val"
        f"{f' / {len(splits.test)} test' if splits.test is not None else ''} images, {len(labels)} classes; "
        f"{tc.epochs} epochs x {iters} iterations{cpu_opts}; out: {out}")
    teacher = splits.info.get("teacher")
    if teacher and teacher.get("online"):
        log(f"distillation (online): training targets {teacher['weight']:g} x {teacher['model']} "
            f"(T={teacher['temperature']:g}) on each augmented batch + {1 - teacher['weight']:g} x own label; "
            f"its top class is the training label for {100 * teacher['agreement']:.1f} % of the "
            f"{teacher['images']} un-augmented training images"
            + ("" if parts.cuda else "; the teacher runs " + {True: "bf16", False: "fp32"}.get(
                opts.teacher_bf16, "under the step's precision")))
    elif teacher:
        log(f"distillation: training targets {teacher['weight']:g} x teacher (T={teacher['temperature']:g}) + "
            f"{1 - teacher['weight']:g} x own label, from {teacher['file']} ({teacher['used']} of its "
            f"{teacher['rows']} rows; its top class is the training label for {100 * teacher['agreement']:.1f} %)")

    # the loop ---------------------------------------------------------------------------------
    progress = _Progress(main and tc.progress and not quiet, log.console, tc.epochs * iters,
                         start_epoch * iters + start_iter)
    ckpt = Checkpointer(tc.checkpoint_minutes, sig, parts)
    stopped_early = False
    files.put_status(record, "running", start_epoch, start_iter)
    epoch, it = start_epoch, start_iter
    if sig.signum:                       # stopped while loading data / measuring: nothing new to save
        files.put_status(record, "stopped", start_epoch, start_iter, signal=signal.Signals(sig.signum).name)
        progress.close()
        raise TrainingInterrupted(sig.signum, files.last if files.last.is_file() else None, start_epoch, start_iter)
    try:
        for epoch in range(start_epoch, tc.epochs):
            if max_epochs is not None and epoch >= max_epochs:
                break
            first = start_iter if epoch == start_epoch else 0
            it = first
            progress.start(f"epoch {epoch + 1}/{tc.epochs}", iters)
            lr0 = parts.sched.lr(parts.optimizer.param_groups[0]["initial_lr"], epoch, 0)
            totals = train_one_epoch(parts, files, record, ckpt, epoch, first, partial if first else None,
                                     progress=progress, on_step=on_step)
            it = iters
            te0 = time.perf_counter()

            def check() -> None:
                if sig.signum:                   # all steps of the epoch done: resume evaluates it
                    totals.save_partial(iters)
                    raise StopRequested(sig.signum, epoch, iters)
            val = parts.evaluate(parts.val_data, check=None if dinfo.enabled else check, fp32=True)
            files.eval_frac = (time.perf_counter() - te0) / max(totals.train_time, 1e-9)
            row = epoch_record(parts, epoch, lr0, totals, val, time.perf_counter() - te0)
            row["best"] = is_best = record.observe(epoch + 1, row[tc.monitor], val, parts.eval_model, parts.mode,
                                                  tc.min_delta)
            parts.sched.epoch_end(epoch, row[tc.monitor])
            record.history.append(row)
            stop = bool(tc.early_stopping and record.bad_epochs >= tc.early_stopping)
            if callback is not None and callback(dict(row)):
                stop = True
            stop = bool(D.broadcast_object(stop, dinfo))
            files.end_epoch(record, row, val, is_best)
            ckpt.written()
            log(f"epoch {epoch + 1:>3}/{tc.epochs}  loss {row['train_loss']:.4f}  acc {row['train_acc']:.4f}  "
                f"val_loss {val['loss']:.4f}  val_acc {_f4(val['accuracy'])}  val_mca {_f4(val['mean_class_acc'])}  "
                f"lr {lr0:.2e}  {row['time_s']:.1f}s  {row['images_per_s']:.0f} img/s"
                f"{'  [green]*best*[/]' if is_best else ''}")
            _, end_sig = ckpt.agreed(False, sig.signum)
            if end_sig:
                raise StopRequested(end_sig, epoch + 1, 0)
            if stop:
                # patience running out at the last epoch is not an early stop: the run is complete
                stopped_early = bool(tc.early_stopping and record.bad_epochs >= tc.early_stopping
                                     and epoch + 1 < tc.epochs)
                if stopped_early:
                    log(f"early stopping: no improvement of {tc.monitor} for {record.bad_epochs} epochs")
                break
    except StopRequested as req:
        signum, pos_e, pos_i = req.args
        progress.close()
        files.put_status(record, "stopped", pos_e, pos_i, signal=signal.Signals(signum).name)
        log(f"[yellow]stopped by {signal.Signals(signum).name}[/] at epoch {pos_e + 1}, iteration {pos_i}; "
            f"resumable checkpoint written: {files.last}")
        raise TrainingInterrupted(signum, files.last if files.last.is_file() else None, pos_e, pos_i) from None
    except KeyboardInterrupt:
        files.put_status(record, "stopped", epoch, it, signal="SIGINT (no checkpoint)")
        raise
    except BaseException as exc:
        files.put_status(record, "failed", epoch, it, error=f"{type(exc).__name__}: {str(exc)[:300]}")
        raise
    finally:
        progress.close()
        files.close()
    return _finish(parts, files, record, stopped_early, log)


def _finish(parts: RunParts, files: RunFiles, record: RunRecord, stopped_early: bool, log) -> TrainResult:
    """Test once with the selected weights, rewrite ``best.pt`` with the test metrics, then
    ``result.json`` (last: a folder has one only when the run finished)."""
    cfg, tc, splits, model = parts.cfg, parts.cfg.train, parts.splits, parts.model
    if record.best_state is not None:
        model.load_state_dict(record.best_state)
        if parts.ema is not None:        # the test sees what validation saw (parts.eval_model)
            parts.ema.module.load_state_dict(record.best_state)
    test_metrics = None
    if splits.test is not None and record.best_state is not None:
        test_data = TensorFaces(splits.test, parts.pre["size"], parts.pre["channels"], parts.device)
        test_metrics = parts.evaluate(test_data, fp32=True)
        log(f"test ({splits.info.get('test_split', 'test')}) with epoch {record.best_epoch} weights: "
            f"acc {_f4(test_metrics['accuracy'])}  mean class acc {_f4(test_metrics['mean_class_acc'])}  "
            f"macro F1 {_f4(test_metrics['macro_f1'])}")
    history = record.history
    finished = stopped_early or bool(history and history[-1]["epoch"] >= tc.epochs)
    best_path, last_path = files.best, files.last
    if files.main:
        if record.best_state is not None:
            # best.pt from the weights in memory (never a load-modify of the file), then result.json last
            files.save_best(record, {"val": record.best_metrics, "monitor": tc.monitor,
                                     "best_epoch": record.best_epoch, "best_value": record.best_value,
                                     **({"test": test_metrics} if test_metrics else {})}, record.best_epoch)
        init = init_path(cfg)                  # the weights the run started from, if any (provenance)
        summary = {"name": cfg.name, "arch": cfg.model.arch, "labels": list(parts.labels), "data": splits.info,
                   **({"init_from": {"file": str(init), "sha256": sha256_file(init) if init.is_file() else None}}
                      if init is not None else {}),
                   "monitor": tc.monitor, "best_epoch": record.best_epoch, "best_value": record.best_value,
                   "val": record.best_metrics, "test": test_metrics, "epochs_run": len(history),
                   "stopped_early": stopped_early, "best_checkpoint": str(best_path) if best_path.is_file() else None,
                   "best_sha256": sha256_file(best_path) if best_path.is_file() else None,
                   "last_checkpoint": str(last_path) if last_path.is_file() else None,
                   "step_options": parts.opts.to_dict(), "code_version": files.base_meta["code_version"]}
        S.write_json(files.result, S.plain(summary))
        files.put_status(record, "finished" if finished else "stopped", len(history), 0)
    D.barrier(parts.dinfo)
    model.eval()
    return TrainResult(out_dir=files.out, best_checkpoint=best_path if best_path.is_file() else None,
                       last_checkpoint=last_path if last_path.is_file() else None, history=history,
                       best_epoch=record.best_epoch, best_metrics=record.best_metrics, test_metrics=test_metrics,
                       stopped_early=stopped_early, labels=parts.labels, preprocess=parts.pre, model=model)
