"""Epoch samplers: seeded shuffling, minority-class oversampling, sharding across ranks.

Each epoch's order is a pure function of ``(seed, epoch)``, never of a global RNG, so an
interrupted run resumed at epoch ``e`` draws the same batches an uninterrupted one
would, and every DDP rank agrees on the epoch's order before taking its shard.

Minority oversampling (A-MobileNet's remedy for FER+/RAF-DB imbalance): each class ``c``
with ``n_c`` training images is brought up to ``round(ratio * max_c n_c)`` images by
repeating its images (all of them ``k`` times, then a random subset without
replacement for the remainder), capped at ``max_factor * n_c``.  The repeats differ
through the training augmentation (rotation, crop, translation).  The repeated
indices are re-drawn every epoch.  With ``mark_copies=True`` the added copies are
returned as ``index + N`` (``N`` = dataset length), so the data path can tell an original
from a copy: A-MobileNet augments only the copies ("operations ... on the category
pictures with few samples to expand the samples"), see ``aug.apply_to``.
"""
from __future__ import annotations

from typing import Iterator, Optional, Sequence

import numpy as np


def oversample_indices(targets: Sequence[int] | np.ndarray, rng: np.random.Generator, ratio: float = 1.0,
                       max_factor: Optional[float] = None, mark_copies: bool = False) -> np.ndarray:
    """All indices of ``targets`` plus the extra copies that bring minority classes up.

    ``targets`` are hard class indices.  Returns an unshuffled int64 array; with
    ``mark_copies`` the extra copies are offset by ``len(targets)``.
    """
    y = np.asarray(targets, dtype=np.int64)
    if y.ndim != 1:
        raise ValueError("oversample_indices needs hard class indices (N,)")
    if ratio <= 0:
        raise ValueError(f"oversampling ratio must be positive, got {ratio}")
    if max_factor is not None and max_factor < 1:
        raise ValueError(f"oversampling max_factor must be >= 1, got {max_factor}")
    if len(y) == 0:
        return y.copy()
    counts = np.bincount(y)
    goal_all = int(round(ratio * counts.max()))
    out = [np.arange(len(y), dtype=np.int64)]
    for c, n in enumerate(counts):
        if n == 0:
            continue
        goal = max(n, goal_all)
        if max_factor is not None:
            goal = min(goal, int(np.floor(max_factor * n)))
        extra = goal - n
        if extra <= 0:
            continue
        members = np.flatnonzero(y == c) + (len(y) if mark_copies else 0)
        full, rest = divmod(extra, n)
        if full:
            out.append(np.tile(members, full))
        if rest:
            out.append(rng.choice(members, size=rest, replace=False))
    return np.concatenate(out)


def class_counts_after(targets: Sequence[int] | np.ndarray, ratio: float = 1.0,
                       max_factor: Optional[float] = None) -> np.ndarray:
    """Per-class counts one oversampled epoch will have (for reports)."""
    idx = oversample_indices(targets, np.random.default_rng(0), ratio, max_factor)
    y = np.asarray(targets, dtype=np.int64)
    return np.bincount(y[idx], minlength=int(y.max()) + 1 if len(y) else 0)


class EpochSampler:
    """Indices of one epoch: optionally oversampled, optionally shuffled, one rank's shard.

    - ``n_or_targets``: dataset length, or hard targets (needed for ``oversample``).
    - ``shuffle``: a permutation seeded by ``(seed, epoch)``; else the natural order.
    - ``oversample``: minority-class oversampling with ``ratio`` / ``max_factor``.
    - ``num_replicas`` / ``rank``: the shard ``order[rank::num_replicas]``; with
      ``pad=True`` the order is first padded (by wrapping) to a multiple of
      ``num_replicas`` so every rank gets the same count (training); with ``pad=False``
      the shards partition the data exactly (evaluation).
    """

    def __init__(self, n_or_targets: int | Sequence[int] | np.ndarray, *, shuffle: bool = True, seed: int = 0,
                 oversample: bool = False, ratio: float = 1.0, max_factor: Optional[float] = None,
                 num_replicas: int = 1, rank: int = 0, pad: bool = True, mark_copies: bool = False):
        if isinstance(n_or_targets, (int, np.integer)):
            if oversample:
                raise ValueError("oversampling needs the targets, not just the dataset length")
            self.n, self.targets = int(n_or_targets), None
        else:
            self.targets = np.asarray(n_or_targets, dtype=np.int64)
            self.n = len(self.targets)
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} out of range for {num_replicas} replicas")
        self.shuffle, self.seed, self.epoch = bool(shuffle), int(seed), 0
        self.oversample, self.ratio, self.max_factor = bool(oversample), float(ratio), max_factor
        self.num_replicas, self.rank, self.pad = int(num_replicas), int(rank), bool(pad)
        #: oversampled copies come back as ``index + n`` (see the module docstring)
        self.mark_copies = bool(mark_copies) and self.oversample
        if self.oversample:   # validate now, not at the first epoch
            oversample_indices(self.targets, np.random.default_rng(0), self.ratio, self.max_factor)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def epoch_indices(self) -> np.ndarray:
        """The whole epoch's order (all ranks), before sharding."""
        rng = np.random.default_rng([self.seed, self.epoch, 0x5A3])
        if self.oversample:
            idx = oversample_indices(self.targets, rng, self.ratio, self.max_factor, self.mark_copies)
        else:
            idx = np.arange(self.n, dtype=np.int64)
        if self.shuffle:
            idx = idx[rng.permutation(len(idx))]
        if self.pad and self.num_replicas > 1 and len(idx) % self.num_replicas:
            extra = self.num_replicas - len(idx) % self.num_replicas
            idx = np.concatenate([idx, np.resize(idx, extra)])
        return idx

    def __iter__(self) -> Iterator[int]:
        idx = self.epoch_indices()[self.rank::self.num_replicas]
        return iter(idx.tolist())

    def __len__(self) -> int:
        total = len(self.epoch_indices()) if self.oversample else self.n
        if self.pad and self.num_replicas > 1:
            total = -(-total // self.num_replicas) * self.num_replicas
            return total // self.num_replicas
        return len(range(self.rank, total, self.num_replicas))


class OversamplingSampler(EpochSampler):
    """:class:`EpochSampler` with minority-class oversampling switched on."""

    def __init__(self, targets: Sequence[int] | np.ndarray, *, ratio: float = 1.0,
                 max_factor: Optional[float] = None, **kw):
        super().__init__(targets, oversample=True, ratio=ratio, max_factor=max_factor, **kw)
