"""Training to a wall-clock budget: ``train.budget_hours`` (``litefer train --budget 2h``).

A paper's schedule often does not fit the time a machine has (350 epochs of FER2013 on a
2-core CPU are days).  With a budget, the trainer measures, before the first step, how fast
this run's training step and its validation pass go on this machine (the step options it
chose, the batch sizes it uses), and sets ``train.epochs`` to as many epochs as fit, never
more than the config's.  Everything that counts in epochs is scaled in proportion
(:func:`scale_schedule`): warm-up, step size and milestones, early-stopping patience, so a
cosine schedule still reaches its end and a step schedule still makes its cuts.

The sized config, not the budget, is what the run writes to its ``config.yaml`` and
checkpoints (``budget_hours`` cleared, a note saying how it was sized): resuming continues the
same schedule wherever and however fast it resumes, and the folder reproduces the run.

The budget is an estimate from a measurement at the start: a machine that becomes busier
during the run takes longer (the run is never cut short: it completes its schedule and its
test).  It covers the training steps, the validation after every epoch and the one test
pass; loading the data before the measurement is not counted.
"""
from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from litefer.training.speed import batch_slices, time_steps

#: the measured step is a bare forward + backward + optimizer step; the trainer's batches
#: (augmentation, bookkeeping, checkpoints) cost a little more: plan with this share of it
STEP_EFFICIENCY = 0.9

_UNITS = {"s": 1 / 3600, "sec": 1 / 3600, "m": 1 / 60, "min": 1 / 60, "h": 1.0, "hr": 1.0, "d": 24.0}


def parse_duration(text: str | float) -> float:
    """Hours in ``text``: ``"2h"``, ``"90m"``, ``"1h30m"``, ``"45min"``, ``"3600s"``, or a bare
    number of hours (``"1.5"``).  Raises ValueError naming the text otherwise."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        hours = float(text)
    else:
        s = str(text).strip().lower().replace(" ", "")
        try:
            hours = float(s)
        except ValueError:
            parts = re.findall(r"(\d+(?:\.\d*)?|\.\d+)(min|sec|hr|[smhd])", s)
            if not parts or "".join(n + u for n, u in parts) != s:
                raise ValueError(f"not a duration: {text!r} (e.g. 2h, 90m, 1h30m, or hours as a number)") from None
            hours = sum(float(n) * _UNITS[u] for n, u in parts)
    if not math.isfinite(hours) or hours <= 0:
        raise ValueError(f"a duration must be positive, got {text!r}")
    return hours


def scale_schedule(cfg, epochs: int):
    """A copy of ``cfg`` training ``epochs`` epochs, with what counts in epochs scaled by
    ``epochs / cfg.train.epochs``: warm-up, step size, milestones, early-stopping patience."""
    c = copy.deepcopy(cfg)
    f = epochs / c.train.epochs
    c.train.epochs = int(epochs)
    if c.sched.warmup_epochs:
        c.sched.warmup_epochs = min(c.sched.warmup_epochs * f, max(c.train.epochs - 1, 0))
    if c.sched.name == "step":
        c.sched.step_size = max(1, round(c.sched.step_size * f))
    if c.sched.milestones:
        c.sched.milestones = sorted({max(1, round(m * f)) for m in c.sched.milestones})
    if c.train.early_stopping:
        c.train.early_stopping = max(2, round(c.train.early_stopping * f))
    return c


@dataclass
class BudgetPlan:
    """How a budget was turned into epochs (logged, and written into the run's config note)."""

    budget_hours: float
    #: training images per second of the step as measured (before STEP_EFFICIENCY)
    train_images_per_s: float
    #: validation / test images per second (fp32 forward, no gradient)
    eval_images_per_s: float
    epoch_s: float
    test_s: float
    epochs: int
    #: the config's epochs: the most the budget may give
    max_epochs: int

    @property
    def planned_s(self) -> float:
        return self.epochs * self.epoch_s + self.test_s

    def describe(self) -> str:
        cap = " (the config's maximum)" if self.epochs == self.max_epochs else f" of the config's {self.max_epochs}"
        return (f"{self.epochs} epoch{'' if self.epochs == 1 else 's'}{cap} to fit {format_hours(self.budget_hours)}: "
                f"{self.train_images_per_s:.0f} training images/s measured here, "
                f"~{self.epoch_s / 60:.1f} min an epoch with validation, ~{self.planned_s / 60:.0f} min planned")


def format_hours(h: float) -> str:
    m = round(h * 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{max(m, 1)} min" if h * 3600 >= 60 else f"{h * 3600:.0f} s"


def fit_epochs(budget_s: float, *, train_images: int, val_images: int, test_images: int,
               train_images_per_s: float, eval_images_per_s: float, max_epochs: int,
               efficiency: float = STEP_EFFICIENCY) -> tuple[int, float, float]:
    """``(epochs, epoch_s, test_s)``: the most epochs (1 .. ``max_epochs``) whose training,
    validation after each, and the one test pass fit ``budget_s`` seconds."""
    if train_images_per_s <= 0 or eval_images_per_s <= 0:
        raise ValueError("images/s must be positive")
    epoch_s = train_images / (train_images_per_s * efficiency) + val_images / eval_images_per_s
    test_s = test_images / eval_images_per_s
    n = math.floor((budget_s - test_s) / epoch_s) if epoch_s > 0 else max_epochs
    return max(1, min(int(max_epochs), n)), epoch_s, test_s


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model: nn.Module, in_shape: tuple[int, int, int], batch: int,
            eval_batch: int, num_classes: int, device: torch.device, *, channels_last: bool,
            autocast: Callable[[], object], steps: int = 8, budget_s: float = 20.0,
            micro_batch: int = 0) -> tuple[float, float]:
    """(training images/s, evaluation images/s) of a copy of ``model`` on random tensors with
    the run's step options: forward + loss + backward + SGD step under ``autocast`` at
    ``batch``, and an fp32 forward without gradient at ``eval_batch`` (validation and test run
    in fp32).  The run's model, optimizer and RNG are not touched.  Eager, even when the run
    compiles its step (``train.compile``): the plan is then on the safe side."""
    rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    try:
        m = copy.deepcopy(model).to(device)
        if channels_last:
            m = m.to(memory_format=torch.channels_last)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(batch, *in_shape, generator=g).to(device)
        y = torch.randint(0, num_classes, (batch,), generator=g).to(device)
        xe = torch.randn(eval_batch, *in_shape, generator=g).to(device)
        if channels_last:
            x, xe = x.contiguous(memory_format=torch.channels_last), xe.contiguous(memory_format=torch.channels_last)
        opt = torch.optim.SGD(m.parameters(), lr=1e-6)

        parts = batch_slices(batch, micro_batch)          # the trainer's slices (train.micro_batch)

        def train_step() -> None:
            m.train()
            opt.zero_grad(set_to_none=True)
            for s in parts:
                with autocast():
                    out = m(x[s])
                logits = out[0] if isinstance(out, (tuple, list)) else out
                loss = nn.functional.cross_entropy(logits.float(), y[s]) * (len(y[s]) / batch)
                loss.backward()
            opt.step()
            _sync(device)

        def eval_step() -> None:
            m.eval()
            with torch.no_grad():
                m(xe)
            _sync(device)
        t_train = time_steps(train_step, steps, warmup=3, budget_s=budget_s)
        t_eval = time_steps(eval_step, steps, warmup=1, budget_s=budget_s / 3)
        return batch / t_train, eval_batch / t_eval
    finally:
        torch.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state(cuda_rng, device)


def plan(budget_hours: float, *, train_images: int, val_images: int, test_images: int, max_epochs: int,
         train_images_per_s: float, eval_images_per_s: float) -> BudgetPlan:
    epochs, epoch_s, test_s = fit_epochs(budget_hours * 3600, train_images=train_images, val_images=val_images,
                                         test_images=test_images, train_images_per_s=train_images_per_s,
                                         eval_images_per_s=eval_images_per_s, max_epochs=max_epochs)
    return BudgetPlan(budget_hours=budget_hours, train_images_per_s=train_images_per_s,
                      eval_images_per_s=eval_images_per_s, epoch_s=epoch_s, test_s=test_s, epochs=epochs,
                      max_epochs=max_epochs)


def apply_plan(cfg, p: BudgetPlan) -> None:
    """Set ``cfg`` (in place) to the plan's epochs, scaled (:func:`scale_schedule`), with the
    budget cleared and a note of how the epochs were chosen."""
    sized = scale_schedule(cfg, p.epochs)
    cfg.train.epochs = sized.train.epochs
    cfg.train.early_stopping = sized.train.early_stopping
    cfg.sched = sized.sched
    cfg.train.budget_hours = None
    note = f"sized to a budget of {format_hours(p.budget_hours)}: {p.describe()}"
    cfg.notes = f"{cfg.notes}; {note}" if cfg.notes else note
