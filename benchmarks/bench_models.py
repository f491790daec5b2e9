#!/usr/bin/env python
"""Per-model size, compute and CPU speed: eager PyTorch, fused PyTorch, ONNX fp32, ONNX int8.

For each model at its native input (``default_input``): parameters and FLOPs
(:mod:`litefer.deploy.profile`: 2 FLOPs per multiply-accumulate), latency per face at
batch 1 with 1 thread and with all cores, and throughput at batch 64 with all cores.
Each number is the median of ``--repeats`` timed calls after ``--warmup`` untimed
ones (p90 is kept in the JSON).  The int8 model is calibrated on real FER2013
training faces when the dataset is present (else on random faces, which is noted:
latency does not depend on the calibration, accuracy does).

    .venv/bin/python benchmarks/bench_models.py                         # every registered model
    .venv/bin/python benchmarks/bench_models.py --models i_mobilenetv2,mini_xception --repeats 20
    .venv/bin/python benchmarks/bench_models.py --json out/bench_models.json --md out/bench_models.md

Weights are random (speed does not depend on them) unless ``--checkpoint`` names a
checkpoint, whose architecture is then benchmarked with its weights.  Run it on an
otherwise idle machine: the load average at the start and end is recorded.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

VARIANTS = ("eager", "fused", "onnx", "int8")


# --------------------------------------------------------------------------- shared helpers


def cpu_info() -> dict:
    """CPU model, logical cores and SIMD flags from /proc/cpuinfo (Linux), else platform."""
    info = {"model": platform.processor() or platform.machine(), "logical_cores": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        if line.startswith("model name") and "model" not in info.get("_seen", ""):
            info["model"] = line.split(":", 1)[1].strip()
            info["_seen"] = "model"
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            info["simd"] = sorted(f for f in flags if f.startswith(("avx", "amx")) or "vnni" in f or f == "fma")
            break
    info.pop("_seen", None)
    try:
        import re
        lscpu = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq")
        if lscpu.is_file():
            info["max_mhz"] = int(lscpu.read_text()) // 1000
        fam = re.search(r"cpu family\s*:\s*(\d+)", text)
        mod = re.search(r"\nmodel\s*:\s*(\d+)", text)
        if fam and mod:
            info["family_model"] = f"{fam.group(1)}/{mod.group(1)}"
    except Exception:
        pass
    return info


def env_info() -> dict:
    import onnxruntime
    import torch
    return {"cpu": cpu_info(), "python": platform.python_version(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
            "os": platform.platform(), "loadavg_start": os.getloadavg(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def timeit(fn: Callable[[], object], warmup: int, repeats: int) -> dict:
    """Median/p90/min seconds of ``repeats`` calls of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return {"median": statistics.median(ts), "p90": ts[min(len(ts) - 1, int(0.9 * len(ts)))],
            "min": ts[0], "n": len(ts)}


def thread_settings(spec: str) -> list[int]:
    out = []
    for s in spec.split(","):
        s = s.strip()
        out.append(os.cpu_count() or 1 if s == "all" else int(s))
    return sorted(set(out), key=out.index)


def write_outputs(md: str, result, json_path: Path | None = None, md_path: Path | None = None) -> None:
    """Print the markdown; also write it to ``md_path`` and ``result`` as JSON to ``json_path``."""
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    if md_path:
        md_path.parent.mkdir(parents=True, exist_ok=True)
        md_path.write_text(md)
    sys.stdout.write(md)


def fmt_ms(s: float | None) -> str:
    return "—" if s is None else (f"{s * 1e3:.2f}" if s < 1 else f"{s * 1e3:.0f}")


# --------------------------------------------------------------------------- the benchmark


def calib_faces(count: int) -> tuple[np.ndarray, dict]:
    try:
        from litefer.deploy.quantize import calibration_faces
        return calibration_faces("fer2013", count)
    except Exception as exc:
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, (count, 48, 48), dtype=np.uint8), {
            "dataset": "random uint8 faces (FER2013 unavailable: latency only)", "error": str(exc)[:200]}


def bench_model(name: str, args, threads: list[int], workdir: Path, faces: np.ndarray, calib: dict) -> dict:
    import torch
    from litefer.deploy.fuse import fuse  # the function (the package attribute may be the module)
    from litefer.deploy.profile import count_flops, count_params
    from litefer.deploy.export import export_model
    from litefer.deploy.onnx_backend import OnnxBackend
    from litefer.deploy.quantize import quantize_onnx
    from litefer.models import create_model

    if args.checkpoint:
        from litefer.models.checkpoint import load_model
        model, mmeta = load_model(args.checkpoint)
        meta = {"arch": mmeta.arch, "labels": mmeta.labels, "preprocess": mmeta.preprocess}
        c, s = int(mmeta.preprocess["channels"]), int(mmeta.preprocess["size"])
    else:
        torch.manual_seed(0)
        model = create_model(name).eval()
        c, s = model.default_input
        meta = {"arch": name, "labels": [f"c{i}" for i in range(7)],
                "preprocess": {"channels": c, "size": s, "mean": [0.5] * c, "std": [0.5] * c, "crop": "fer"}}
    row: dict = {"model": name, "input": [c, s, s], "params": count_params(model),
                 "flops": count_flops(model, (c, s)), "latency_b1": {}, "throughput": {}}
    fused = fuse(model)
    x1 = torch.randn(1, c, s, s)
    xb = torch.randn(args.batch, c, s, s)
    runners: dict[str, Callable[[int], tuple[Callable, Callable]]] = {}

    def torch_runner(net):
        def make(t):
            def setup():
                torch.set_num_threads(t)
            return setup, (lambda x: net(x))
        return make

    if "eager" in args.variants:
        runners["eager"] = torch_runner(model)
    if "fused" in args.variants:
        runners["fused"] = torch_runner(fused)
    paths = {}
    if "onnx" in args.variants or "int8" in args.variants:
        t0 = time.perf_counter()
        res = export_model(model, meta, workdir / f"{name}.onnx", exporter=args.exporter, force=True)
        row["export_s"] = round(time.perf_counter() - t0, 1)
        row["exporter"] = res.exporter
        paths["onnx"] = res.path
        if "int8" in args.variants:
            t0 = time.perf_counter()
            paths["int8"] = quantize_onnx(res.path, workdir / f"{name}.int8.onnx", faces=faces, force=True)
            row["quantize_s"] = round(time.perf_counter() - t0, 1)
            row["int8_calibration"] = calib
        row["onnx_bytes"] = {k: p.stat().st_size for k, p in paths.items()}
    for kind in ("onnx", "int8"):
        if kind in args.variants:
            def make(t, p=paths[kind]):
                be = OnnxBackend(p, threads=t)
                return (lambda: None), (lambda x: be.logits(x))
            runners[kind] = make

    with torch.inference_mode():
        for kind, make in runners.items():
            numpy_in = kind in ("onnx", "int8")
            a1 = x1.numpy() if numpy_in else x1
            ab = xb.numpy() if numpy_in else xb
            for t in threads:
                setup, fn = make(t)
                setup()
                r = timeit(lambda: fn(a1), args.warmup, args.repeats)
                row["latency_b1"].setdefault(kind, {})[str(t)] = r
                print(f"  {name:24s} {kind:6s} b1 {t:2d}T {fmt_ms(r['median']):>8s} ms", file=sys.stderr, flush=True)
            t = max(threads)
            setup, fn = make(t)
            setup()
            r = timeit(lambda: fn(ab), min(args.warmup, 2), args.batch_repeats)
            r["images_per_s"] = args.batch / r["median"]
            row["throughput"][kind] = {str(t): r}
            print(f"  {name:24s} {kind:6s} b{args.batch} {t:2d}T {r['images_per_s']:8.0f} img/s",
                  file=sys.stderr, flush=True)
    torch.set_num_threads(os.cpu_count() or 1)
    return row


def markdown(result: dict) -> str:
    env, rows, threads = result["env"], result["rows"], result["threads"]
    variants = [v for v in VARIANTS if any(v in r["latency_b1"] for r in rows)]
    tmax = str(max(threads))
    lines = [f"CPU: {env['cpu'].get('model')} ({env['cpu'].get('logical_cores')} logical cores; "
             f"{' '.join(env['cpu'].get('simd', []))}); torch {env['torch']}, onnxruntime {env['onnxruntime']}; "
             f"load average {env['loadavg_start'][0]:.2f} at start, {env['loadavg_end'][0]:.2f} at end; "
             f"median of {result['args']['repeats']} runs after {result['args']['warmup']} warm-up runs.", ""]
    head = "| model | input | params (M) | GFLOPs |"
    sep = "| --- | --- | ---: | ---: |"
    for t in threads:
        for v in variants:
            head += f" {v} {t}T |"
            sep += " ---: |"
    lines += ["Latency per face at batch 1 (ms):", "", head, sep]
    for r in rows:
        line = (f"| {r['model']} | {r['input'][0]}x{r['input'][1]}x{r['input'][2]} | {r['params'] / 1e6:.3f} | "
                f"{r['flops'] / 1e9:.3f} |")
        for t in threads:
            for v in variants:
                line += f" {fmt_ms(r['latency_b1'].get(v, {}).get(str(t), {}).get('median'))} |"
        lines.append(line)
    lines += ["", f"Throughput at batch {result['args']['batch']}, {tmax} threads (images/s):", "",
              "| model | " + " | ".join(variants) + " | int8 file / fp32 file |",
              "| --- | " + " | ".join("---:" for _ in variants) + " | ---: |"]
    for r in rows:
        cells = []
        for v in variants:
            ips = r["throughput"].get(v, {}).get(tmax, {}).get("images_per_s")
            cells.append("—" if ips is None else f"{ips:.0f}")
        b = r.get("onnx_bytes", {})
        ratio = f"{b['int8'] / b['onnx']:.2f}" if "int8" in b and "onnx" in b else "—"
        lines.append(f"| {r['model']} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="all", help="comma-separated registry names, or 'all'")
    ap.add_argument("--checkpoint", default=None, help="benchmark this checkpoint's arch with its weights")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="subset of " + ",".join(VARIANTS))
    ap.add_argument("--threads", default="1,all", help="thread counts for batch-1 latency ('all' = every core)")
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batch-repeats", type=int, default=10)
    ap.add_argument("--calib-count", type=int, default=300)
    ap.add_argument("--exporter", default="auto", choices=("auto", "dynamo", "torchscript"))
    ap.add_argument("--workdir", type=Path, default=None, help="keep the ONNX files here (default: a temp dir)")
    ap.add_argument("--json", type=Path, default=None, help="write all numbers as JSON here")
    ap.add_argument("--md", type=Path, default=None, help="write the markdown tables here")
    args = ap.parse_args(argv)
    args.variants = [v for v in args.variants.split(",") if v]
    bad = set(args.variants) - set(VARIANTS)
    if bad:
        ap.error(f"unknown variants {bad}")
    from litefer.models import list_models
    if args.checkpoint:
        from litefer.models.checkpoint import read_checkpoint
        from litefer.deploy.onnx_backend import resolve_checkpoint
        args.checkpoint = resolve_checkpoint(args.checkpoint)
        names = [read_checkpoint(args.checkpoint)[0].arch]
    else:
        names = list_models() if args.models == "all" else [m.strip() for m in args.models.split(",") if m.strip()]
    threads = thread_settings(args.threads)
    env = env_info()
    faces, calib = calib_faces(args.calib_count) if "int8" in args.variants else (None, None)
    rows = []
    with tempfile.TemporaryDirectory(prefix="litefer-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for name in names:
            print(f"{name}", file=sys.stderr, flush=True)
            try:
                rows.append(bench_model(name, args, threads, workdir, faces, calib))
            except Exception as exc:  # keep going: report the failure in the table
                import traceback
                traceback.print_exc()
                print(f"  {name}: FAILED {type(exc).__name__}: {exc}", file=sys.stderr)
                rows.append({"model": name, "error": f"{type(exc).__name__}: {exc}"[:300]})
    env["loadavg_end"] = os.getloadavg()
    result = {"env": env, "threads": threads, "rows": [r for r in rows if "error" not in r],
              "failed": [r for r in rows if "error" in r],
              "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "command": " ".join([Path(sys.executable).name, *sys.argv])}
    md = markdown(result)
    if result["failed"]:
        md += "\nFailed: " + "; ".join(f"{r['model']} ({r['error']})" for r in result["failed"]) + "\n"
    write_outputs(md, result, args.json, args.md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
