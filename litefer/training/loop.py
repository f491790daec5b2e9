"""One training epoch (:func:`train_one_epoch`) and the epoch's row of metrics
(:func:`epoch_record`): the short loop the trainer repeats.

A mid-epoch stop (a signal, or the checkpoint timer) is handled by :class:`Checkpointer`:
all ranks agree on it at the same iterations, ``last.pt`` is written with the running sums
of the partial epoch, and :class:`StopRequested` carries the position to the trainer.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from litefer.training import distributed as D
from litefer.training import state as S
from litefer.training.batches import iterate_batches
from litefer.training.checkpoint import RunFiles, RunRecord
from litefer.training.setup import RunParts
from litefer.training.speed import batch_slices

#: how often status.json is refreshed during an epoch (seconds)
STATUS_EVERY_S = 30.0
_SUMS = ("loss", "ce", "center", "ch")


class StopRequested(Exception):
    """A stop signal was received: args (signal number, epoch, iteration) of the position saved."""


class Checkpointer:
    """When to write a mid-epoch ``last.pt``: every ``minutes`` (0: never) and on a stop
    signal (``signals.signum``) — the same decision on every rank."""

    def __init__(self, minutes: float, signals, parts: RunParts):
        self.every = float(minutes) * 60.0
        self.signals, self.dinfo, self.device, self.iters = signals, parts.dinfo, parts.device, parts.iters
        self.last = time.monotonic()

    def written(self) -> None:
        self.last = time.monotonic()

    def due(self, it: int) -> tuple[bool, int]:
        """(write a mid-epoch checkpoint now?, stop signal)."""
        due = bool(self.every) and time.monotonic() - self.last >= self.every
        signum = self.signals.signum
        if self.dinfo.enabled:                # every rank joins the same collectives at the same iterations
            if it % 20 != 0 and it != self.iters:
                return False, 0
            due, signum = self.agreed(due, signum)
        return due or bool(signum), signum

    def agreed(self, due: bool, signum: int) -> tuple[bool, int]:
        """(any rank due, a stop signal any rank received) — the same answer on every rank."""
        if not self.dinfo.enabled:
            return due, signum
        t = torch.tensor([float(due), float(signum > 0), float(signum)], dtype=torch.float64, device=self.device)
        D.all_reduce_sum(t, self.dinfo)
        n_sig = int(t[1].item())
        return bool(t[0].item()), (int(round(t[2].item() / n_sig)) if n_sig else 0)


@dataclass
class EpochTotals:
    """An epoch's training sums over all ranks, its training time, and ``save_partial(it)``
    (writes ``last.pt`` at iteration ``it`` of this epoch with its running sums: a stop
    during the evaluation resumes at the evaluation)."""

    loss: float
    ce: float
    center: float
    ch: float
    correct: float
    seen: float
    train_time: float
    save_partial: Callable[[int], None]


def forward_backward(p: RunParts, x: torch.Tensor, y: torch.Tensor):
    """Forward and backward of one batch, gradients added to the parameters' ``.grad``:
    (loss, detached logits, loss terms), each the batch mean.  With ``opts.micro_batch`` (n > 0,
    smaller than the batch) the batch runs as consecutive slices of n samples, each slice's
    loss weighted by its share of the batch: the gradient of the batch-mean loss, as one pass
    would give it (centre-loss updates count the batch's classes), except that BatchNorm
    normalises each slice with its own statistics (and Cosine-Harmony's batch terms are per
    slice).  Why: where memory bandwidth limits the step (large early feature maps on a CPU),
    slices whose activations fit in the caches train faster (:func:`speed.autotune` measures it)."""
    n = x.shape[0]
    parts = batch_slices(n, int(p.opts.micro_batch or 0))
    if len(parts) == 1:
        with p.autocast():
            loss, logits, terms = p.step_fn(x, y)
        p.scaler.scale(loss).backward()
        return loss, logits, terms
    loss_sum, logit_parts, term_sums = None, [], {}
    for k, s in enumerate(parts):
        xs, ys = x[s], y[s]
        w = xs.shape[0] / n
        sync = p.dinfo.enabled and k < len(parts) - 1      # DDP: all-reduce the gradient once, after the last slice
        with p.step_ddp.no_sync() if sync else contextlib.nullcontext():
            with p.autocast():
                loss, logits, terms = p.step_fn(xs, ys, y)
            p.scaler.scale(loss * w).backward()
        part = loss.detach() * w
        loss_sum = part if loss_sum is None else loss_sum + part
        logit_parts.append(logits)
        for key, v in terms.items():
            term_sums[key] = term_sums.get(key, 0.0) + v * w
    return loss_sum, torch.cat(logit_parts), term_sums


def train_one_epoch(parts: RunParts, files: RunFiles, record: RunRecord, ckpt: Checkpointer, epoch: int,
                    first: int = 0, partial: Optional[dict] = None, *, progress=None,
                    on_step: Optional[Callable[[int, int], None]] = None) -> EpochTotals:
    """Train epoch ``epoch`` (0-based) from iteration ``first`` (``partial``: the running sums
    saved with a mid-epoch checkpoint).  Raises :class:`StopRequested` after writing
    ``last.pt`` when a stop signal arrives."""
    p, tc = parts, parts.cfg.train
    device, dinfo, sched, optimizer, scaler = p.device, p.dinfo, p.sched, p.optimizer, p.scaler
    t0 = time.perf_counter()
    p.sampler.set_epoch(epoch)
    p.step_ddp.train()
    sums = {k: torch.zeros((), dtype=torch.float64, device=device) for k in _SUMS}
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen, train_time0 = 0, 0.0
    if first and partial:
        for k in sums:
            sums[k] = partial["sums"][k].to(device)
        correct = partial["correct"].to(device)
        seen, train_time0 = int(partial["seen"]), float(partial["train_time"])
    order = np.fromiter(iter(p.sampler), dtype=np.int64)
    # each sample's own class, in batch order (oversampled copies are marked index + N): training
    # accuracy is measured against it, not against the top class of soft (e.g. distilled) targets
    own = p.train_data.classes.index_select(
        0, torch.from_numpy(order % len(p.train_data)).to(p.train_data.classes.device))

    def write_mid(position_iter: int) -> None:
        rngs = D.all_gather_object(S.rng_state(), dinfo)
        snap = {"sums": {k: v.detach().cpu() for k, v in sums.items()}, "correct": correct.detach().cpu(),
                "seen": seen, "train_time": train_time0 + time.perf_counter() - t0, "iter": position_iter}
        files.save_last(record, epoch, {"epoch": epoch, "iter": position_iter}, rngs, snap, None)

    it, last_status = first, time.monotonic()
    batches = iterate_batches(p.train_data, order, tc.batch_size, p.drop_last, p.augment, p.normalize,
                              seed=tc.seed, epoch=epoch, rank=dinfo.rank, start=first,
                              copies_only=p.sampler.mark_copies)
    for x, y in batches:
        lr = sched.apply(optimizer, epoch, it)
        if p.teacher is not None:           # online distillation: the teacher labels this very view
            with p.autocast():
                y = p.teacher(x, y)
        if p.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        optimizer.zero_grad(set_to_none=True)
        if p.center_opt is not None:
            p.center_opt.zero_grad(set_to_none=True)
        loss, logits, terms = forward_backward(p, x, y)
        if tc.grad_clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(p.model.parameters(), tc.grad_clip)
        scaler.step(optimizer)
        if p.center_opt is not None:
            scaler.step(p.center_opt)
        scaler.update()
        if p.ema is not None:
            p.ema.update(p.model)
        bs = x.shape[0]
        seen += bs
        sums["loss"] += loss.detach().double() * bs
        for k, v in terms.items():
            sums[k] += v.double() * bs
        correct += (logits.argmax(1) == own[it * tc.batch_size:it * tc.batch_size + bs]).sum()
        it += 1
        if it % 10 == 0 or it == p.iters:
            run_loss = sums["loss"].item() / seen
            if not math.isfinite(run_loss) and not scaler.is_enabled():
                raise FloatingPointError(f"loss became {run_loss} at epoch {epoch + 1}, iteration {it} "
                                         f"(lr {lr:.3g}); lower optim.lr or enable train.grad_clip")
            if progress is not None:
                progress.update(it, f"loss {run_loss:.4f} acc {correct.item() / seen:.3f} lr {lr:.2e}",
                                advance_run=(it - 1) % 10 + 1)
        if on_step is not None:
            on_step(epoch, it)
        write_now, signum = ckpt.due(it)
        if write_now:
            write_mid(it)
            ckpt.written()
            if signum:
                raise StopRequested(signum, epoch, it)
        if files.main and time.monotonic() - last_status >= STATUS_EVERY_S:
            el = train_time0 + time.perf_counter() - t0
            files.put_status(record, "running", epoch, it, ips=seen * dinfo.world_size / max(el, 1e-9))
            last_status = time.monotonic()
    # epoch totals over ranks
    tot = torch.stack([sums["loss"], sums["ce"], sums["center"], sums["ch"],
                       correct.double(), torch.tensor(float(seen), dtype=torch.float64, device=device)])
    D.all_reduce_sum(tot, dinfo)
    D.average_buffers(p.model, dinfo)
    if p.ema is not None:
        D.average_buffers(p.ema.module, dinfo)
    return EpochTotals(*tot.tolist(), train_time=train_time0 + time.perf_counter() - t0, save_partial=write_mid)


def epoch_record(parts: RunParts, epoch: int, lr0: float, totals: EpochTotals, val: dict,
                 eval_seconds: float) -> dict:
    """The epoch's row of ``metrics.csv`` (``best`` is added by the caller)."""
    n = max(totals.seen, 1.0)
    row = {
        "epoch": epoch + 1, "lr": lr0,
        "train_loss": totals.loss / n, "train_acc": totals.correct / n, "train_ce": totals.ce / n,
        "train_center": totals.center / n if parts.criterion.center is not None else None,
        "train_ch": totals.ch / n if parts.criterion.ch is not None else None,
        "val_loss": val["loss"], "val_acc": val["accuracy"], "val_mean_class_acc": val["mean_class_acc"],
        "val_macro_f1": val["macro_f1"], "time_s": totals.train_time + eval_seconds,
        "images_per_s": n / max(totals.train_time, 1e-9),
    }
    if not math.isfinite(row["train_loss"]):
        raise FloatingPointError(f"training loss is {row['train_loss']} after epoch {epoch + 1}; "
                                 f"lower optim.lr or enable train.grad_clip")
    return row
