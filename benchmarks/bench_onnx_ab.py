#!/usr/bin/env python
"""Two or more ONNX exports of litefer models, timed interleaved: latency per face.

For comparing an export before and after a change (a new graph for the same weights, an
int8 file against its fp32 one, one ONNX Runtime option against another): every file
is loaded through :class:`litefer.deploy.onnx_backend.OnnxBackend`, exactly as the
``Recognizer`` loads it, and the files take turns, round after round, so a slow spell of
a shared machine hits all of them alike. Each turn is ``--calls`` timed ``predict`` calls
on one random preprocessed face (batch 1; ``--batch`` for more) after ``--warmup``
untimed ones; the table gives the median and the fastest turn per file and, for every
file after the first, its ratio to the first file (median of the per-round ratios).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_onnx_ab.py old.onnx litefer/assets/default.onnx
    .venv/bin/python benchmarks/bench_onnx_ab.py a.onnx b.onnx --threads 2 --rounds 30 --json out/ab.json

The probabilities of every file are compared with the first file's on the same input,
and the largest difference is printed: files that disagree are not two exports of one
model, and the script says so.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import env_info  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", help="ONNX files written by `litefer export` (each with its .json sidecar)")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default 1)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--calls", type=int, default=200, help="timed calls per file per round")
    ap.add_argument("--warmup", type=int, default=100, help="untimed calls per file before the first round")
    ap.add_argument("--json", help="write the numbers as JSON here")
    args = ap.parse_args(argv)
    if len(args.files) < 2:
        ap.error("give at least two ONNX files to compare")
    for name in ("threads", "batch", "rounds", "calls"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be >= 1")

    from litefer.deploy.onnx_backend import OnnxBackend, OnnxBackendError
    backends = []
    for f in args.files:
        try:
            backends.append(OnnxBackend(f, threads=args.threads))
        except OnnxBackendError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    shapes = {(b.channels, b.input_size) for b in backends}
    if len(shapes) > 1:
        print(f"error: the files take different inputs {sorted(shapes)}; compare exports of one model", file=sys.stderr)
        return 2
    c, s = shapes.pop()
    x = np.random.default_rng(0).standard_normal((args.batch, c, s, s)).astype(np.float32)

    ref = backends[0].predict(x)
    outs = [b.predict(x) for b in backends]
    diffs = [float(np.abs(o - ref).max()) if o.shape == ref.shape else float("inf") for o in outs]
    for b in backends:
        for _ in range(args.warmup):
            b.predict(x)

    load0 = os.getloadavg()
    per_round = [[] for _ in backends]   # ms per call, one value per round
    for r in range(args.rounds):
        for i, b in enumerate(backends):
            t = time.perf_counter()
            for _ in range(args.calls):
                b.predict(x)
            per_round[i].append((time.perf_counter() - t) / args.calls * 1e3)
        print(f"round {r + 1}/{args.rounds}", file=sys.stderr, end="\r")
    print(file=sys.stderr)
    load1 = os.getloadavg()

    rows = []
    for i, (f, b) in enumerate(zip(args.files, backends)):
        ratios = [a / t for a, t in zip(per_round[0], per_round[i])]   # > 1: file i is faster than the first
        rows.append({"file": f, "arch": b.arch, "median_ms": statistics.median(per_round[i]),
                     "min_ms": min(per_round[i]), "speedup_vs_first": statistics.median(ratios),
                     "speedup_min": min(ratios), "speedup_max": max(ratios),
                     "max_abs_prob_diff_vs_first": diffs[i]})

    env = {**env_info(), "threads": args.threads, "batch": args.batch, "rounds": args.rounds, "calls": args.calls,
           "loadavg_start": load0, "loadavg_end": load1}
    cpu = env["cpu"]
    print(f"CPU: {cpu['model']} ({cpu['logical_cores']} logical cores; {' '.join(cpu.get('simd', []))}); "
          f"onnxruntime {env['onnxruntime']}; {args.threads} thread(s), batch {args.batch}; "
          f"{args.rounds} rounds of {args.calls} calls per file, interleaved; load average "
          f"{load0[0]:.2f} at start, {load1[0]:.2f} at end.\n")
    print("| file | arch | median ms per call | fastest round | speed-up vs first (min – max per round) "
          "| max prob. diff vs first |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['file']} | {row['arch']} | {row['median_ms']:.3f} | {row['min_ms']:.3f} | "
              f"{row['speedup_vs_first']:.2f}x ({row['speedup_min']:.2f}x – {row['speedup_max']:.2f}x) | "
              f"{row['max_abs_prob_diff_vs_first']:.2g} |")
    bad = [row["file"] for row in rows if not row["max_abs_prob_diff_vs_first"] <= 1e-4]
    if bad:
        print(f"\nwarning: {', '.join(bad)} disagree with {args.files[0]} (probabilities differ by more "
              "than 1e-4): not exports of one model")
    if args.json:
        Path(args.json).write_text(json.dumps({"env": env, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
