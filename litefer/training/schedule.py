"""Learning-rate schedules, per iteration (see :class:`litefer.training.config.SchedConfig`)."""
from __future__ import annotations

import math

import torch


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

