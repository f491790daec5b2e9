"""The trainer's data path: faces decoded once into one uint8 tensor, augmented a whole batch
at a time.

- :class:`TensorFaces`: a split as a uint8 tensor ``(N, c, S, S)`` at the model's input
  size (colour handling and the resize are done once, with the same code as
  :class:`litefer.data.transforms.Preprocess`; grey faces stay one channel and are repeated
  for 3-channel models only when a batch is made), on the training device (FER2013 is
  66 MB), with its targets.
- :class:`BatchAugment`: the augmentations of :class:`litefer.data.transforms.Augment` on a
  batch tensor: one affine warp per image (random resized crop, rotation, translation,
  horizontal flip) through ``affine_grid`` / ``grid_sample``, brightness / contrast,
  normalisation and random erasing, all vectorised over the batch.
- :func:`iterate_batches`: the batches of one epoch in the sampler's order.  Batch ``b``
  of epoch ``e`` is augmented with a generator seeded by ``(seed, e, b, rank)`` and by
  nothing else, so a run resumed at batch ``b`` sees exactly the batches an uninterrupted
  one would (no hidden RNG state, any batch can be produced first).

Evaluation batches are the ``Preprocess`` output exactly (uint8 resized once, then
``(x / 255 - mean) / std`` in float32), so the validation metrics a run logs are the ones
``litefer evaluate`` computes.  The work per batch is a few vectorised tensor operations,
small next to a training step, done in the training process on one thread (no worker
processes or threads competing with the step for the cores; the step keeps all its threads).
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from litefer.data.base import FaceArrays

def _to_model_pixels(images: np.ndarray, size: int, channels: int) -> np.ndarray:
    """uint8 (N,H,W[,3]) -> uint8 (N,c,S,S) with c = 1 (grey) or 3; as ``Preprocess`` does it
    (the same :mod:`litefer.preprocess` functions, applied to the whole split)."""
    from litefer.preprocess import resize, to_grey
    imgs = np.asarray(images)
    if imgs.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {imgs.dtype}")
    if imgs.ndim == 4 and imgs.shape[3] == 1:
        imgs = imgs[..., 0]
    if imgs.ndim == 4 and channels == 1:                         # RGB -> luma, in chunks
        imgs = np.concatenate([to_grey(imgs[s:s + 4096]) for s in range(0, len(imgs), 4096)]) \
            if len(imgs) else imgs[..., 0]
    if imgs.shape[1:3] != (size, size):
        imgs = np.stack([resize(im, size) for im in imgs]) if len(imgs) else \
            np.zeros((0, size, size) + imgs.shape[3:], np.uint8)
    if imgs.ndim == 3:
        return np.ascontiguousarray(imgs[:, None])
    return np.ascontiguousarray(imgs.transpose(0, 3, 1, 2))


class TensorFaces:
    """One split as tensors on ``device``: ``images`` uint8 (N, c, S, S), ``targets``
    int64 (N,) or float32 (N, C) soft targets, ``classes`` int64 (N,): each image's own class
    (:attr:`FaceArrays.hard_targets`; what training accuracy is measured against)."""

    def __init__(self, arrays: FaceArrays, size: int, channels: int, device: torch.device | str = "cpu"):
        self.size, self.channels = int(size), int(channels)
        self.images = torch.from_numpy(_to_model_pixels(arrays.images, self.size, self.channels)).to(device)
        t = np.asarray(arrays.targets)
        self.soft = t.ndim == 2
        self.targets = torch.from_numpy(t.astype(np.float32 if self.soft else np.int64)).to(device)
        self.classes = (torch.from_numpy(np.asarray(arrays.hard_targets, dtype=np.int64)).to(device)
                        if self.soft else self.targets)
        self.device = torch.device(device)

    def __len__(self) -> int:
        return int(self.images.shape[0])


class Normalize:
    """uint8 batch (B, c, S, S) -> float32 ``(x / 255 - mean) / std`` with ``channels`` channels."""

    def __init__(self, channels: int, mean: Sequence[float], std: Sequence[float]):
        self.channels = int(channels)
        m = np.atleast_1d(np.asarray(mean, np.float32))
        s = np.atleast_1d(np.asarray(std, np.float32))
        self.mean = torch.from_numpy(np.resize(m, self.channels).astype(np.float32)).view(1, -1, 1, 1)
        self.std = torch.from_numpy(np.resize(s, self.channels).astype(np.float32)).view(1, -1, 1, 1)

    def to_float(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 or float pixels (0..255) -> float pixels / 255 with ``channels`` channels."""
        x = x.float() * (1.0 / 255.0) if x.dtype == torch.uint8 else x * (1.0 / 255.0)
        if x.shape[1] == 1 and self.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        return x

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = self.to_float(x)
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        return ((x - mean) / std).contiguous()


def batch_generator(seed: int, epoch: int, batch: int, rank: int = 0) -> torch.Generator:
    """The CPU generator of one batch's augmentation: a function of its coordinates only."""
    s = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(batch), int(rank), 0xA06]).generate_state(2)
    return torch.Generator().manual_seed(int(s[0]) << 31 ^ int(s[1]))


class BatchAugment:
    """Training augmentation of a uint8 batch; parameters as :class:`litefer.data.transforms.Augment`."""

    def __init__(self, channels: int, mean, std, *, hflip: float = 0.5, rotation: float = 0.0,
                 scale: Sequence[float] = (1.0, 1.0), ratio: Sequence[float] = (1.0, 1.0), translate: float = 0.0,
                 brightness: float = 0.0, contrast: float = 0.0, erasing: float = 0.0,
                 erasing_scale: Sequence[float] = (0.02, 0.33), erasing_ratio: Sequence[float] = (0.3, 3.3),
                 erasing_value: float | str = 0.0, border: str = "reflect"):
        self.norm = Normalize(channels, mean, std)
        self.hflip, self.rotation, self.translate = float(hflip), float(rotation), float(translate)
        self.scale, self.ratio = tuple(map(float, scale)), tuple(map(float, ratio))
        self.brightness, self.contrast, self.erasing = float(brightness), float(contrast), float(erasing)
        self.erasing_scale, self.erasing_ratio = tuple(map(float, erasing_scale)), tuple(map(float, erasing_ratio))
        self.erasing_value = erasing_value
        if border not in ("reflect", "constant", "replicate"):
            raise ValueError("border must be reflect, constant or replicate")
        self.padding = {"reflect": "reflection", "constant": "zeros", "replicate": "border"}[border]
        self.geometric = (self.rotation > 0 or self.translate > 0 or self.scale != (1.0, 1.0)
                          or self.ratio != (1.0, 1.0))

    @staticmethod
    def _u(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
        return torch.rand(n, generator=g, dtype=torch.float64) * (hi - lo) + lo

    def theta(self, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(theta (n, 2, 3) for ``affine_grid``, flip mask (n,)): output -> input coordinates
        (normalised to [-1, 1]); input = c + S_crop . F . R(-a) . (u - t)."""
        u = self._u
        flip = torch.rand(n, generator=g, dtype=torch.float64) < self.hflip if self.hflip > 0 else \
            torch.zeros(n, dtype=torch.bool)
        sx = sy = torch.ones(n, dtype=torch.float64)
        cx = cy = torch.zeros(n, dtype=torch.float64)
        if self.scale != (1.0, 1.0) or self.ratio != (1.0, 1.0):
            area = u(g, n, *self.scale)
            r = torch.exp(u(g, n, math.log(self.ratio[0]), math.log(self.ratio[1])))
            sx, sy = torch.sqrt(area * r), torch.sqrt(area / r)          # crop size / image size
            cx = u(g, n, -1, 1) * (1 - sx).clamp(min=0)
            cy = u(g, n, -1, 1) * (1 - sy).clamp(min=0)
        a = torch.deg2rad(u(g, n, -self.rotation, self.rotation)) if self.rotation else torch.zeros(n, dtype=torch.float64)
        if self.translate:
            tx, ty = 2 * u(g, n, -self.translate, self.translate), 2 * u(g, n, -self.translate, self.translate)
        else:
            tx = ty = torch.zeros(n, dtype=torch.float64)
        ca, sa = torch.cos(a), torch.sin(a)
        fx = torch.where(flip, -1.0, 1.0).double()
        # M = S . F . R(-a);  R(-a) = [[c, s], [-s, c]]
        m00, m01 = sx * fx * ca, sx * fx * sa
        m10, m11 = -sy * sa, sy * ca
        t0 = cx - (m00 * tx + m01 * ty)
        t1 = cy - (m10 * tx + m11 * ty)
        th = torch.stack([torch.stack([m00, m01, t0], 1), torch.stack([m10, m11, t1], 1)], 1)
        return th.float(), flip

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """uint8 (B, c, S, S) on any device -> normalised float32 (B, channels, S, S)."""
        n = x.shape[0]
        dev = x.device
        th, flip = self.theta(n, g)
        if self.geometric:
            xf = x.float()
            grid = F.affine_grid(th.to(dev), list(xf.shape), align_corners=False)
            xf = F.grid_sample(xf, grid, mode="bilinear", padding_mode=self.padding, align_corners=False)
        else:                                              # flips only: exact
            xf = x.float()
            if flip.any():
                f = flip.to(dev).view(-1, 1, 1, 1)
                xf = torch.where(f, xf.flip(-1), xf)
        if self.contrast or self.brightness:
            if self.contrast:
                c = self._u(g, n, 1 - self.contrast, 1 + self.contrast).float().to(dev).view(-1, 1, 1, 1)
                m = xf.mean(dim=(1, 2, 3), keepdim=True)
                xf = (xf - m) * c + m
            if self.brightness:
                b = self._u(g, n, 1 - self.brightness, 1 + self.brightness).float().to(dev).view(-1, 1, 1, 1)
                xf = xf * b
            xf = xf.clamp(0, 255)
        out = self.norm(xf)
        if self.erasing:
            out = self._erase(out, g)
        return out

    def _erase(self, t: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n, c, h, w = t.shape
        u = self._u
        on = torch.rand(n, generator=g, dtype=torch.float64) < self.erasing
        area = h * w * u(g, n, *self.erasing_scale)
        r = torch.exp(u(g, n, math.log(self.erasing_ratio[0]), math.log(self.erasing_ratio[1])))
        eh = torch.sqrt(area * r).round().clamp(1, h - 1).long()
        ew = torch.sqrt(area / r).round().clamp(1, w - 1).long()
        y0 = (torch.rand(n, generator=g, dtype=torch.float64) * (h - eh + 1)).long()
        x0 = (torch.rand(n, generator=g, dtype=torch.float64) * (w - ew + 1)).long()
        rows, cols = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
        mask = ((rows >= y0.view(-1, 1, 1)) & (rows < (y0 + eh).view(-1, 1, 1)) &
                (cols >= x0.view(-1, 1, 1)) & (cols < (x0 + ew).view(-1, 1, 1)) & on.view(-1, 1, 1))
        mask = mask.unsqueeze(1).to(t.device)
        if self.erasing_value == "random":
            fill = torch.randn(t.shape, generator=g).to(t.device)
        else:
            fill = torch.full((), float(self.erasing_value), device=t.device)
        return torch.where(mask, fill, t)


def build_batch_augment(aug_cfg, pre: dict) -> BatchAugment:
    a = aug_cfg
    return BatchAugment(pre["channels"], pre["mean"], pre["std"], hflip=a.hflip, rotation=a.rotation, scale=a.scale,
                        ratio=a.ratio, translate=a.translate, brightness=a.brightness, contrast=a.contrast,
                        erasing=a.erasing, erasing_scale=a.erasing_scale, erasing_ratio=a.erasing_ratio,
                        erasing_value=a.erasing_value, border=a.border)


def num_batches(n: int, batch_size: int, drop_last: bool) -> int:
    return n // batch_size if drop_last and n >= batch_size else -(-n // batch_size)


class _OneThread:
    """Run a batch's small tensor operations on one thread: with several, each tiny parallel
    region waits for every thread of the team, which costs more than the work (5-7x slower
    measured on a loaded 2-core machine); the training step keeps all its threads."""

    def __enter__(self):
        self.n = torch.get_num_threads()
        if self.n != 1:
            torch.set_num_threads(1)

    def __exit__(self, *exc):
        if self.n != 1:
            torch.set_num_threads(self.n)


def iterate_batches(data: TensorFaces, order: np.ndarray, batch_size: int, drop_last: bool,
                    augment: Optional[BatchAugment], normalize: Optional[Normalize] = None, *, seed: int = 0,
                    epoch: int = 0, rank: int = 0, start: int = 0,
                    copies_only: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(x, y) batches of ``data`` in ``order`` (this rank's indices), from batch ``start``.

    ``copies_only``: ``order`` marks oversampled copies as ``index + len(data)``
    (:class:`litefer.data.sampling.EpochSampler` with ``mark_copies``); only those are
    augmented, the originals are just normalised (needs ``normalize``)."""
    order_t = torch.as_tensor(np.asarray(order, dtype=np.int64))
    nb = num_batches(len(order_t), batch_size, drop_last)
    dev = data.images.device
    n = len(data)
    if copies_only and (augment is None or normalize is None):
        raise ValueError("copies_only needs both augment and normalize")
    for b in range(start, nb):
        with _OneThread() if dev.type == "cpu" else nullcontext():
            idx = order_t[b * batch_size:(b + 1) * batch_size].to(dev)
            is_copy = idx >= n if copies_only else None
            if copies_only:
                idx = idx % n
            xb = data.images.index_select(0, idx)
            yb = data.targets.index_select(0, idx)
            if augment is not None:
                x = augment(xb, batch_generator(seed, epoch, b, rank))
                if copies_only:
                    x = torch.where(is_copy.view(-1, 1, 1, 1), x, normalize(xb))
            else:
                x = normalize(xb)
        yield x, yb
