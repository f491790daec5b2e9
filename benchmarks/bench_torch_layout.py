#!/usr/bin/env python
"""The PyTorch backend's memory layout: per model, latency per face at batch 1 on one
thread with contiguous tensors, with channels-last, and what ``memory_format="auto"``
chose (litefer.evaluation.layout), interleaved in one run so the ratios share the machine's load.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_torch_layout.py --models default,fer2013 \\
        --archs mini_xception,i_mobilenetv2,se_sepnet --json out/bench_torch_layout.json

Bundled names / checkpoints (``--models``) run with their weights; ``--archs`` are zoo
architectures with random weights at their native input (speed does not depend on the values).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _time(fn, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="default,fer2013", help="bundled names or checkpoints, comma-separated")
    ap.add_argument("--archs", default="", help="zoo architectures (random weights), comma-separated")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds (the median is reported)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    torch.set_num_threads(1)
    from litefer.deploy.backends import TorchBackend
    from litefer.models import create_model
    from litefer.models.checkpoint import load_model

    formats = ("contiguous", "channels_last", "auto")

    def backends(source, arch):
        """One backend per layout, each with its own copy of the same weights."""
        out = {}
        if not arch:
            for fmt in formats:
                m, meta = load_model(source)
                out[fmt] = TorchBackend(m, meta=meta, memory_format=fmt)
            return out
        sd = create_model(source, num_classes=7).state_dict()
        for fmt in formats:
            m = create_model(source, num_classes=7)
            m.load_state_dict(sd)
            c, s = m.default_input
            pre = {"channels": c, "size": s, "mean": [0.5] * c, "std": [0.5] * c, "crop": "fer"}
            out[fmt] = TorchBackend(m.eval(), [str(i) for i in range(7)], pre, memory_format=fmt)
        return out

    rows = []
    load0 = os.getloadavg()
    for source, arch in [(m, False) for m in args.models.split(",") if m] + \
                        [(a, True) for a in args.archs.split(",") if a]:
        print(f"{source} …", file=sys.stderr, flush=True)
        bes = backends(source, arch)
        pre = bes["contiguous"].preprocess
        x = np.random.default_rng(0).standard_normal((1, pre["channels"], pre["size"], pre["size"])).astype(np.float32)
        ref = bes["contiguous"].predict(x)
        diff = max(float(np.abs(bes[k].predict(x) - ref).max()) for k in ("channels_last", "auto"))
        times = {k: [] for k in ("contiguous", "channels_last")}
        for _ in range(args.rounds):
            for k in times:
                times[k].append(_time(lambda: bes[k].predict(x), args.repeats, args.warmup))
        med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
        rows.append({"model": source, "weights": "random" if arch else "trained",
                     "input": f"{pre['channels']}x{pre['size']}", "contiguous_ms": med["contiguous"],
                     "channels_last_ms": med["channels_last"], "speedup": med["contiguous"] / med["channels_last"],
                     "auto_chose": "channels_last" if bes["auto"].channels_last else "contiguous",
                     "auto_reason": bes["auto"].layout_reason, "max_prob_diff": diff})
    load1 = os.getloadavg()
    print(f"CPU: {platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread, "
          f"load average {load0[0]:.2f} at start, {load1[0]:.2f} at end; median of {args.rounds} interleaved rounds\n")
    print("| model | weights | input | contiguous (ms) | channels-last (ms) | speed-up | `auto` chose | max prob. diff |")
    print("|---|---|---|---:|---:|---:|---|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['weights']} | {r['input']} | {r['contiguous_ms']:.2f} | {r['channels_last_ms']:.2f} "
              f"| {r['speedup']:.2f}x | {r['auto_chose']} | {r['max_prob_diff']:.1e} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": {"torch": torch.__version__, "threads": 1, "load_start": load0,
                                                  "load_end": load1, "rounds": args.rounds}, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
