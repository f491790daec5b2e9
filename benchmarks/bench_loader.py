"""Data loading vs. training step throughput (images/s), to choose ``train.workers``.

    python benchmarks/bench_loader.py                      # CPU, both pipelines, brief
    python benchmarks/bench_loader.py --device cuda --batches 50

For each pipeline (the bundled model's 48x48 grey light augmentation, and LFNSB's
112x112 RGB flip/rotation/crop/erasing) it times:

- the loader alone: ``DataLoader(AugmentedFaces(...))`` exactly as the trainer builds it,
  with 0, 1 and 2 worker processes, iterating ``--batches`` batches;
- the training step alone: forward + backward + optimizer step of the model on a fixed
  batch already in memory (``--device``), with AMP + channels_last on CUDA (on CPU with
  at most 32 images per step, to keep the run short; images/s barely depends on it).

The arrays are synthetic (same shapes as FER+ / RAF-DB aligned faces): decoding is not
part of training, since litefer's readers return decoded in-memory arrays.
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch


def bench_loader(arrays, transform, batch: int, workers: int, batches: int) -> float:
    from litefer.data.sampling import EpochSampler
    from litefer.data.transforms import AugmentedFaces
    ds = AugmentedFaces(arrays, transform, seed=0)
    sampler = EpochSampler(arrays.hard_targets, seed=0)
    dl = torch.utils.data.DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers, drop_last=True,
                                     persistent_workers=False, generator=torch.Generator().manual_seed(0))
    it = iter(dl)
    next(it)                                   # worker start-up and first batch excluded
    t = time.perf_counter()
    n = 0
    for _ in range(batches):
        x, _ = next(it)
        n += x.shape[0]
    dt = time.perf_counter() - t
    del it
    return n / dt


def bench_step(arch: str, num_classes: int, channels: int, size: int, batch: int, batches: int,
               device: torch.device) -> float:
    from litefer.models import create_model
    model = create_model(arch, num_classes=num_classes, in_chans=channels).to(device).train()
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device.type, enabled=cuda)
    x = torch.randn(batch, channels, size, size, device=device)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (batch,), device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.float16, enabled=cuda):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    step()                                      # warm-up
    if cuda:
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(batches):
        step()
    if cuda:
        torch.cuda.synchronize()
    return batch * batches / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=10, help="timed batches per measurement")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads in the main process")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--pipelines", default="default_ferplus,lfnsb")
    ap.add_argument("--step-batch", type=int, default=None,
                    help="batch of the timed training step (default: the pipeline's batch on CUDA, <= 32 on CPU)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    from litefer.data.base import FaceArrays
    from litefer.data.transforms import Augment

    rng = np.random.default_rng(0)
    pipelines = {
        # name: (arch, channels, size, batch, source image shape, augmentation, mean, std)
        "default_ferplus": ("mini_xception", 1, 48, 64, (48, 48),
                            dict(hflip=0.5, rotation=10, scale=(0.85, 1.0), translate=0.05), [0.5], [0.5]),
        "lfnsb": ("lfnsb", 3, 112, 256, (112, 112, 3),
                  dict(hflip=0.5, rotation=10, scale=(0.8, 1.0), erasing=0.25, erasing_scale=(0.02, 0.25)),
                  [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    }
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), device {device}, {args.batches} timed batches")
    print("| pipeline | batch | loader w=0 | " + " | ".join(f"loader w={w}" for w in args.workers.split(",")[1:])
          + " | train step | step / loader(w=0) |")
    print("|---" * (4 + len(args.workers.split(",")[1:])) + "|---|")
    for name in args.pipelines.split(","):
        arch, ch, size, batch, shape, aug, mean, std = pipelines[name]
        n = batch * (args.batches + 2)
        arrays = FaceArrays(images=rng.integers(0, 256, (n, *shape), dtype=np.uint8),
                            targets=rng.integers(0, 7, n).astype(np.int64), labels=tuple("abcdefg"),
                            ids=[str(i) for i in range(n)])
        tf = Augment(size, ch, mean, std, **aug)
        loader = {int(w): bench_loader(arrays, tf, batch, int(w), args.batches) for w in args.workers.split(",")}
        sb = args.step_batch or (batch if device.type == "cuda" else min(batch, 32))
        step = bench_step(arch, 7, ch, size, sb, max(2, args.batches // 2), device)
        cols = " | ".join(f"{loader[w]:,.0f}" for w in loader)
        print(f"| {name} ({arch} {ch}x{size}) | {batch} | {cols} | {step:,.0f} | {step / loader[0]:.2f} |")


if __name__ == "__main__":
    main()
