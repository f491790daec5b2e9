"""A run's record (history, best epoch so far), its resumable training state and its
output folder: ``config.yaml``, ``metrics.csv``, ``best.pt``, ``last.pt``, ``status.json``,
``result.json`` and ``tb/``.

- :class:`RunRecord`: the history and the best epoch so far.
- :func:`training_state` / :func:`restore`: everything ``last.pt`` must hold for a resumed
  run to continue exactly (optimizers, schedule, scaler, RNG streams per rank, the
  position mid-epoch and the running sums of a partial epoch) and putting it back.
- :class:`RunFiles`: the folder's files, written in an order that keeps them consistent
  (``best.pt`` before ``last.pt``; ``result.json`` last and only for a finished run).
"""
from __future__ import annotations

import csv
import hashlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn as nn

from litefer.training import distributed as D
from litefer.training import state as S
from litefer.training.build import seed_everything
from litefer.training.config import ConfigError, dump_config
from litefer.training.setup import RunParts

CSV_FIELDS = ("epoch", "lr", "train_loss", "train_acc", "train_ce", "train_center", "train_ch",
              "val_loss", "val_acc", "val_mean_class_acc", "val_macro_f1", "best", "time_s", "images_per_s")


def cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``module``'s state dict."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in module.state_dict().items()}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def improved(value: Optional[float], best: Optional[float], mode: str, min_delta: float) -> bool:
    """Whether ``value`` beats ``best`` by more than ``min_delta`` (a non-finite value never does)."""
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best + min_delta if mode == "max" else value < best - min_delta


@dataclass
class RunRecord:
    """The epochs run so far and the best of them."""

    history: list[dict] = field(default_factory=list)
    best_value: Optional[float] = None
    best_epoch: int = 0
    best_metrics: dict = field(default_factory=dict)
    best_state: Optional[dict] = None
    bad_epochs: int = 0

    def observe(self, epoch: int, value: Optional[float], val: dict, model: nn.Module, mode: str,
                min_delta: float) -> bool:
        """Account for a finished (1-based) ``epoch`` whose monitored metric is ``value``;
        True when it is the new best (its weights are then kept)."""
        better = improved(value, self.best_value, mode, min_delta)
        if better:
            self.best_value, self.best_epoch, self.bad_epochs = value, epoch, 0
            self.best_metrics = dict(val)
            self.best_state = cpu_state(model)
        else:
            self.bad_epochs += 1
        return better

    def images_per_s(self) -> list[float]:
        return [r["images_per_s"] for r in self.history if r.get("images_per_s")]


def training_state(parts: RunParts, record: RunRecord, position: dict, rngs: list,
                   partial: Optional[dict]) -> dict:
    """What ``last.pt`` holds besides the weights, for a run to resume at ``position``."""
    return {
        "criterion": cpu_state(parts.criterion), "optimizer": parts.optimizer.state_dict(),
        "center_optimizer": parts.center_opt.state_dict() if parts.center_opt is not None else None,
        "scheduler": S.plain(parts.sched.state_dict()),
        "scaler": parts.scaler.state_dict() if parts.scaler.is_enabled() else None,
        "rng_per_rank": rngs, "history": S.plain(record.history),
        "best": S.plain({"value": record.best_value, "epoch": record.best_epoch, "metrics": record.best_metrics,
                         "bad_epochs": record.bad_epochs}),
        "best_state_dict": record.best_state, "world_size": parts.dinfo.world_size, "position": position,
        "iters": parts.iters, "partial": partial, "step_options": parts.opts.to_dict(),
        "ema": parts.ema.state_dict() if parts.ema is not None else None,
    }


def restore(parts: RunParts, raw: dict, log: Callable[[str], None]) -> tuple[RunRecord, int, int, Optional[dict]]:
    """Put a ``last.pt`` (``raw``) back into ``parts``: (record, start epoch, start iteration,
    the partial epoch's running sums or None)."""
    tc, dinfo = parts.cfg.train, parts.dinfo
    ts = raw["training_state"]
    parts.model.load_state_dict(raw["state_dict"])
    parts.criterion.load_state_dict(ts["criterion"])
    parts.optimizer.load_state_dict(ts["optimizer"])
    if parts.center_opt is not None and ts.get("center_optimizer") is not None:
        parts.center_opt.load_state_dict(ts["center_optimizer"])
    parts.sched.load_state_dict(ts["scheduler"])
    if ts.get("scaler"):
        parts.scaler.load_state_dict(ts["scaler"])
    if parts.ema is not None:
        if ts.get("ema"):
            parts.ema.load_state_dict(ts["ema"])
        else:
            log("[yellow]warning:[/] the checkpoint has no weight average (train.ema_decay was off); "
                "the average starts from its weights")
            parts.ema.module.load_state_dict(raw["state_dict"])
    b = ts["best"]
    record = RunRecord(history=list(ts["history"]), best_value=b["value"], best_epoch=b["epoch"],
                       best_metrics=b["metrics"], best_state=ts.get("best_state_dict"), bad_epochs=b["bad_epochs"])
    pos = ts.get("position") or {"epoch": int(raw["epoch"]), "iter": 0}
    start_epoch, start_iter = int(pos["epoch"]), int(pos["iter"])
    partial = ts.get("partial") if start_iter else None
    if start_iter and ts.get("iters") != parts.iters:
        log(f"[yellow]warning:[/] {ts.get('iters')} iterations per epoch in the checkpoint, {parts.iters} now; "
            f"epoch {start_epoch + 1} restarts from its beginning")
        start_iter, partial = 0, None
    rngs = ts.get("rng_per_rank") or []
    if len(rngs) == dinfo.world_size:
        S.set_rng_state(rngs[dinfo.rank])
    else:
        log("[yellow]warning:[/] world size changed since the checkpoint; RNG streams re-seeded")
        seed_everything(tc.seed + 1000 * start_epoch + dinfo.rank, tc.deterministic)
    return record, start_epoch, start_iter, partial


class RunFiles:
    """The output folder of a run (rank 0 writes; other ranks' calls do nothing)."""

    def __init__(self, out: Path, parts: RunParts, base_meta: dict, main: bool):
        self.out, self.parts, self.base_meta, self.main = out, parts, base_meta, main
        self.csv = out / "metrics.csv"
        self.best = out / "best.pt"
        self.last = out / "last.pt"
        self.result = out / "result.json"
        self.tb = None
        tc = parts.cfg.train
        self.status = {"name": parts.cfg.name, "arch": parts.cfg.model.arch, "dataset": parts.cfg.data.dataset,
                       "train_split": parts.cfg.data.train_split, "out_dir": str(out), "epochs": tc.epochs,
                       "iters": parts.iters, "monitor": tc.monitor, "config": getattr(parts.cfg, "source", None),
                       "started": time.time()}
        #: evaluation time over training time of the last epoch (for the ETA)
        self.eval_frac = 0.0

    def prepare(self, record: RunRecord, resumed: bool) -> None:
        """A fresh run clears the folder's checkpoints; a resumed one makes ``best.pt`` agree
        with the best epoch ``last.pt`` names.  Then ``config.yaml``, the CSV so far, TensorBoard."""
        if not self.main:
            return
        tc = self.parts.cfg.train
        if self.result.exists():          # result.json describes a finished run only
            self.result.unlink()
        if not resumed:
            for p in (self.best, self.last):
                if p.exists():
                    p.unlink()
        elif self.best.is_file():         # best.pt must hold the best epoch last.pt names
            try:
                b_epoch = S.safe_load(self.best).get("epoch")
            except ConfigError:
                b_epoch = None
            if b_epoch != record.best_epoch:
                if record.best_state is not None:
                    self.save_best(record, {"val": record.best_metrics, "monitor": tc.monitor,
                                            "best_epoch": record.best_epoch, "best_value": record.best_value},
                                   record.best_epoch)
                else:
                    self.best.unlink()
        (self.out / "config.yaml").write_text(dump_config(self.parts.cfg), encoding="utf-8")
        with open(self.csv, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
            w.writeheader()
            for row in record.history:
                w.writerow(row)
        if tc.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(log_dir=str(self.out / "tb"))
            except Exception:  # tensorboard not installed: CSV only
                self.tb = None

    def put_status(self, record: RunRecord, state: str, epoch: int, it: int, ips: Optional[float] = None,
                   **extra: Any) -> None:
        """``status.json`` (what ``litefer runs`` reads): state, position, best so far, speed, ETA."""
        if not self.main:
            return
        p, tc = self.parts, self.parts.cfg.train
        hist = record.images_per_s()
        rate = ips or (hist[-1] if hist else None)
        done = epoch * p.iters + it
        eta = None
        if rate and state == "running":
            eta = (tc.epochs * p.iters - done) * tc.batch_size * p.dinfo.world_size / rate * (1 + self.eval_frac)
        S.write_status(self.out, **self.status, state=state, epoch=epoch, iter=it,
                       best_value=S.finite_or_none(record.best_value), best_epoch=record.best_epoch,
                       images_per_s=rate, eta_s=eta, **extra)

    def save_best(self, record: RunRecord, metrics: dict, epoch: int) -> None:
        S.save_checkpoint({**self.base_meta, "state_dict": record.best_state, "metrics": S.plain(metrics),
                           "epoch": epoch}, self.best)

    def save_last(self, record: RunRecord, epoch: int, position: dict, rngs: list, partial: Optional[dict],
                  metrics: Optional[dict]) -> None:
        """``last.pt``: the current weights and the training state at ``position``."""
        if not self.main:
            return
        S.save_checkpoint({**self.base_meta, "state_dict": cpu_state(self.parts.model), "epoch": epoch,
                           "metrics": metrics,
                           "training_state": training_state(self.parts, record, position, rngs, partial)},
                          self.last)

    def end_epoch(self, record: RunRecord, row: dict, val: dict, is_best: bool) -> None:
        """After an epoch: ``best.pt`` (when it improved) before ``last.pt``, the CSV row,
        TensorBoard, the status.  Every rank calls it (the RNG states are gathered)."""
        rngs = D.all_gather_object(S.rng_state(), self.parts.dinfo)
        if not self.main:
            return
        tc = self.parts.cfg.train
        epoch = row["epoch"]
        metrics = S.plain({"val": val, "train": {"loss": row["train_loss"], "accuracy": row["train_acc"]},
                           "monitor": tc.monitor, "best_epoch": record.best_epoch, "best_value": record.best_value})
        # best.pt first: last.pt never names a best epoch best.pt does not hold
        if is_best:
            self.save_best(record, metrics, epoch)
        self.save_last(record, epoch, {"epoch": epoch, "iter": 0}, rngs, None, metrics)
        with open(self.csv, "a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore").writerow(row)
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "epoch" and v is not None:
                    self.tb.add_scalar(k, v, epoch)
            self.tb.flush()
        self.put_status(record, "running", epoch, 0)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None
