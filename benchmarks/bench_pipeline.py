#!/usr/bin/env python
"""End-to-end latency on real photos, per stage: decode → detection → alignment → classification.

Runs litefer's :class:`~litefer.deploy.recognizer.Recognizer` stage by stage on each
photo and times every stage (median of ``--repeats`` runs after ``--warmup``), for
each classifier backend (PyTorch eager, ONNX fp32, and ONNX int8 when FER2013 is there
to calibrate it).  Default photos: ``litefer/assets/example.jpg`` (one face),
matplotlib's ``grace_hopper.jpg`` (one face) and both pasted on one 1100x600 canvas
(two faces); add your own with ``--images``.

    .venv/bin/python benchmarks/bench_pipeline.py
    .venv/bin/python benchmarks/bench_pipeline.py --images photos/ --backends torch,onnx --threads 1
    .venv/bin/python benchmarks/bench_pipeline.py --json out/pipeline.json --md out/pipeline.md

Real-time sections (``--sections``; each reports its ratios next to the issue-12 targets):

- ``startup``: wall time of ``litefer predict example.jpg`` from process start to exit
  (one result), for ``--backend auto`` (ONNX, no torch) and ``--backend torch``;
- ``crops``: ``litefer predict DIR --no-detect`` over a folder of face crops (default:
  the FER+ test crops under ``$LITEFER_DATA``), wall time including start-up;
- ``detectors``: per-image detection time of each detector / runtime on the photos and
  on 640x480 and 1024x768 scenes, as a ratio to MTCNN (ONNX Runtime);
- ``load``: end-to-end latency on the example photo idle and with the other core(s)
  saturated by a bounded busy process, per thread policy (loaded / idle ratio);
- ``stages``: the per-stage table above.

    .venv/bin/python benchmarks/bench_pipeline.py --sections startup,crops,detectors,load --md out/rt.md

The model is the bundled one (``--model default``); while it is absent the script
falls back to a random-weights ``--arch`` model and says so (timings only).
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench_models import env_info, fmt_ms, timeit, write_outputs  # noqa: E402

STAGES = ("decode", "detect", "align", "classify")


def default_photos() -> list[tuple[str, bytes]]:
    """(name, encoded bytes) of the real photos the benchmark uses by default: the example
    photo, the same at 256x256, grace_hopper.jpg, and both faces on one 1100x600 canvas."""
    from PIL import Image
    example = REPO / "litefer" / "assets" / "example.jpg"
    ex = example.read_bytes() if example.is_file() else None
    gh = None
    try:
        import matplotlib
        p = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
        gh = p.read_bytes() if p.is_file() else None
    except ImportError:
        pass
    out = []
    if ex is not None:
        out.append(("example.jpg (1 face, 512x512)", ex))
        buf = io.BytesIO()
        Image.open(io.BytesIO(ex)).convert("RGB").resize((256, 256), Image.LANCZOS).save(
            buf, format="JPEG", quality=90)
        out.append(("example.jpg at 256x256 (1 face)", buf.getvalue()))
    if gh is not None:
        out.append(("grace_hopper.jpg (1 face, 512x600)", gh))
    if ex is not None and gh is not None:
        a = np.asarray(Image.open(io.BytesIO(ex)).convert("RGB"))
        b = np.asarray(Image.open(io.BytesIO(gh)).convert("RGB").resize((256, 300)))
        can = np.full((600, 1100, 3), 90, np.uint8)
        can[40:40 + a.shape[0], 20:20 + a.shape[1]] = a[:552, :512]
        can[150:450, 700:956] = b
        buf = io.BytesIO()
        Image.fromarray(can).save(buf, format="JPEG", quality=90)
        out.append(("both on one canvas (2 faces, 1100x600)", buf.getvalue()))
    return out


def photos_from(paths: list[Path]) -> list[tuple[str, bytes]]:
    from litefer.vision.io import iter_image_files
    return [(p.name, p.read_bytes()) for p in iter_image_files(paths)]


def model_source(args, tmp: Path) -> tuple[str, str]:
    """(checkpoint path or name, description)."""
    from litefer.models.checkpoint import bundled_path
    if args.model != "default":
        return args.model, args.model
    try:
        p = bundled_path("default")
        if p.is_file():
            return "default", "bundled default model"
    except Exception:
        pass
    import torch
    from litefer.models import create_model
    from litefer.models.checkpoint import ModelMeta, save_safetensors
    torch.manual_seed(0)
    m = create_model(args.arch)
    c, s = m.default_input
    crop = "aligned112" if s >= 112 else "fer"
    meta = ModelMeta(args.arch, ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"],
                     {"channels": c, "size": s, "mean": [0.5] * c, "std": [0.5] * c, "crop": crop})
    path = save_safetensors(tmp / f"random_{args.arch}.safetensors", meta, m.state_dict())
    return str(path), f"random-weights {args.arch} (bundled model absent: timings only)"


def build_recognizers(args, source: str, tmp: Path) -> dict:
    from litefer.deploy.recognizer import Recognizer
    recs = {}
    for kind in args.backends:
        t0 = time.perf_counter()
        if kind == "torch":
            rec = Recognizer.from_pretrained(source, detector=args.detector, backend="torch")
        elif kind == "onnx":
            from litefer.deploy.export import export_onnx
            path = export_onnx(source, tmp / "model.onnx", force=True).path
            rec = Recognizer.from_pretrained(str(path), detector=args.detector, backend="onnx", threads=args.ort_threads)
        elif kind == "int8":
            from litefer.deploy.quantize import quantize_onnx
            fp32 = tmp / "model.onnx"
            if not fp32.is_file():
                from litefer.deploy.export import export_onnx
                export_onnx(source, fp32, force=True)
            try:
                path = quantize_onnx(fp32, tmp / "model.int8.onnx", force=True)
            except Exception as exc:
                print(f"int8 skipped: {exc}", file=sys.stderr)
                continue
            rec = Recognizer.from_pretrained(str(path), detector=args.detector, backend="onnx", threads=args.ort_threads)
        else:
            raise SystemExit(f"unknown backend {kind!r}")
        recs[kind] = (rec, time.perf_counter() - t0)
    return recs


def bench_photo(rec, data: bytes, args) -> dict:
    from litefer.vision.io import load_image
    rgb = load_image(data)
    faces = rec.detect(rgb)
    crops = rec.crop_faces(rgb, faces)
    out = {"size": list(rgb.shape[:2]), "faces": len(faces), "stages": {},
           "labels": [rec.labels[int(i)] for i in np.argmax(rec.classify(crops), 1)] if crops else []}
    w, r = args.warmup, args.repeats
    out["stages"]["decode"] = timeit(lambda: load_image(data), w, r)
    out["stages"]["detect"] = timeit(lambda: rec.detect(rgb), w, r)
    out["stages"]["align"] = timeit(lambda: rec.crop_faces(rgb, faces), w, r)
    out["stages"]["classify"] = timeit(lambda: rec.classify(crops), w, r) if crops else None
    out["stages"]["total"] = timeit(lambda: rec(data), w, r)
    return out


def markdown(result: dict) -> str:
    env = result["env"]
    lines = [f"CPU: {env['cpu'].get('model')} ({env['cpu'].get('logical_cores')} logical cores); torch threads "
             f"{result['torch_threads']}, ONNX Runtime threads {result['ort_threads'] or 'all'}; model: "
             f"{result['model']}; detector: {result['detector']}; median of {result['args']['repeats']} runs "
             f"(ms); load average {env['loadavg_start'][0]:.2f} → {env['loadavg_end'][0]:.2f}.", "",
             "| photo | backend | faces | decode | detect | align | classify | total | classify per face |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in result["rows"]:
        st = row["stages"]
        med = {k: (v["median"] if v else None) for k, v in st.items()}
        per_face = med["classify"] / row["faces"] if med["classify"] and row["faces"] else None
        lines.append(f"| {row['photo']} | {row['backend']} | {row['faces']} | " + " | ".join(
            fmt_ms(med[k]) for k in (*STAGES, "total")) + f" | {fmt_ms(per_face)} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- real-time sections


def _median_wall(cmd: list[str], runs: int, env: dict | None = None) -> dict:
    import statistics
    import subprocess
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, **(env or {})})
        ts.append(time.perf_counter() - t)
        if proc.returncode not in (0, 1):
            raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr[-1000:]}")
    return {"median": statistics.median(ts), "min": min(ts), "n": len(ts)}


def _litefer_exe() -> str:
    exe = Path(sys.executable).parent / "litefer"
    return str(exe) if exe.is_file() else "litefer"


def section_startup(args) -> dict:
    ex = str(REPO / "litefer" / "assets" / "example.jpg")
    out = {}
    for backend in ("auto", "torch"):
        out[backend] = _median_wall([_litefer_exe(), "predict", ex, "--format", "json", "--backend", backend],
                                    args.startup_runs, {"OMP_NUM_THREADS": "1"})
        print(f"startup {backend}: {out[backend]['median']:.2f} s", file=sys.stderr, flush=True)
    return out


def section_crops(args) -> dict:
    crops = args.crops
    if crops is None:
        from litefer.data.base import data_root
        crops = data_root() / "ferplus" / "data" / "FER2013Test"
    crops = Path(crops)
    if not crops.is_dir():
        return {"skipped": f"no crop folder at {crops} (pass --crops DIR)"}
    from litefer.vision.io import iter_image_files
    n = len(list(iter_image_files([crops])))
    res = {"folder": str(crops), "images": n}
    for backend in ("auto", "torch"):
        res[backend] = _median_wall([_litefer_exe(), "predict", str(crops), "--no-detect", "--format", "json",
                                     "--backend", backend], 1, {"OMP_NUM_THREADS": "1"})
        print(f"crops {backend}: {n} images in {res[backend]['median']:.1f} s", file=sys.stderr, flush=True)
    return res


def _scenes() -> list[tuple[str, np.ndarray]]:
    from litefer.vision.io import load_image
    import cv2
    ex = load_image(REPO / "litefer" / "assets" / "example.jpg")
    out = [("example 512x512", ex)]
    for w, h in ((640, 480), (1024, 768)):
        can = np.full((h, w, 3), 90, np.uint8)
        side = h // 2
        can[h // 8:h // 8 + side, w // 4:w // 4 + side] = cv2.resize(ex, (side, side), interpolation=cv2.INTER_AREA)
        out.append((f"one face {w}x{h}", can))
    return out


def section_detectors(args) -> dict:
    from litefer.vision import DetectorUnavailable, create_detector
    variants = {"mtcnn (onnxruntime)": ("mtcnn", {"runtime": "onnxruntime"}),
                "mtcnn (opencv)": ("mtcnn", {"runtime": "opencv"}),
                "mtcnn (packed pyramid)": ("mtcnn", {"pack": True}),
                "mtcnn min_face=40": ("mtcnn", {"min_face": 40}),
                "yunet (onnxruntime)": ("yunet", {"runtime": "onnxruntime"}),
                "yunet (opencv)": ("yunet", {"runtime": "opencv"}),
                "yunet, own landmarks": ("yunet", {"landmarks": "yunet"}),
                "blazeface": ("blazeface", {}), "blazeface_full": ("blazeface_full", {})}
    import cv2
    cv2.setNumThreads(1)
    rows = []
    for scene, rgb in _scenes():
        base = None
        for label, (name, kw) in variants.items():
            try:
                det = create_detector(name, **kw)
            except DetectorUnavailable:
                continue
            t = timeit(lambda: det.detect(rgb), args.warmup, args.repeats)
            base = base or t["median"]
            rows.append({"scene": scene, "detector": label, "faces": len(det.detect(rgb)), "time": t,
                         "speedup_vs_mtcnn": base / t["median"]})
            print(f"{scene:18s} {label:24s} {fmt_ms(t['median'])} ms", file=sys.stderr, flush=True)
    return {"rows": rows}


def section_load(args) -> dict:
    """Latency idle and with a bounded background load (busy processes on all but one core)."""
    import subprocess
    from litefer.deploy.recognizer import Recognizer
    from litefer.vision.io import load_image
    rgb = load_image(REPO / "litefer" / "assets" / "example.jpg")
    busy = max(1, (os.cpu_count() or 2) - 1)
    rows = []
    for backend in args.load_backends:
        for threads in (1, os.cpu_count() or 2):
            rec = Recognizer.from_pretrained("default", backend=backend, threads=threads)
            idle = timeit(lambda: rec.analyze([rgb]), args.warmup, args.repeats)
            procs = [subprocess.Popen([sys.executable, "-c", "import time\nend=time.time()+600\nwhile time.time()<end: pass"])
                     for _ in range(busy)]
            try:
                time.sleep(0.5)
                loaded = timeit(lambda: rec.analyze([rgb]), args.warmup, args.repeats)
            finally:
                for p in procs:
                    p.kill()
                    p.wait()
            rows.append({"backend": backend, "threads": threads, "idle": idle, "loaded": loaded,
                         "ratio": loaded["median"] / idle["median"], "busy_processes": busy})
            print(f"load {backend} threads={threads}: idle {fmt_ms(idle['median'])} ms, loaded "
                  f"{fmt_ms(loaded['median'])} ms", file=sys.stderr, flush=True)
    return {"rows": rows}


def realtime_markdown(rt: dict) -> str:
    lines = []
    if "startup" in rt:
        a, t = rt["startup"]["auto"]["median"], rt["startup"]["torch"]["median"]
        lines += ["| start-up: `litefer predict example.jpg` to exit | auto (ONNX) | torch | torch / auto | target |",
                  "| --- | ---: | ---: | ---: | --- |",
                  f"| seconds (median) | {a:.2f} | {t:.2f} | {t / a:.1f}x | auto <= 1.5 s |", ""]
    if "crops" in rt and "auto" in rt["crops"]:
        c = rt["crops"]
        a, t = c["auto"]["median"], c["torch"]["median"]
        lines += [f"| crops: `predict --no-detect` on {c['images']} images | auto (ONNX) | torch | torch / auto | target |",
                  "| --- | ---: | ---: | ---: | --- |",
                  f"| seconds incl. start-up | {a:.1f} | {t:.1f} | {t / a:.1f}x | 3,137 crops <= 10 s |", ""]
    if "detectors" in rt:
        lines += ["| scene | detector | faces | ms (median) | speed vs MTCNN (ORT) |", "| --- | --- | ---: | ---: | ---: |"]
        for r in rt["detectors"]["rows"]:
            lines.append(f"| {r['scene']} | {r['detector']} | {r['faces']} | {fmt_ms(r['time']['median'])} | "
                         f"{r['speedup_vs_mtcnn']:.2f}x |")
        lines += ["", "(target for `auto`: >= 5x MTCNN's speed at its recall: see docs/detectors.md)", ""]
    if "load" in rt:
        lines += ["| backend | threads | idle ms | loaded ms | loaded / idle | target |", "| --- | ---: | ---: | ---: | ---: | --- |"]
        for r in rt["load"]["rows"]:
            lines.append(f"| {r['backend']} | {r['threads']} | {fmt_ms(r['idle']['median'])} | "
                         f"{fmt_ms(r['loaded']['median'])} | {r['ratio']:.2f} | <= 1.5 |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, nargs="*", default=None, help="photos or folders (default: see above)")
    ap.add_argument("--model", default="default", help="bundled model name or checkpoint path")
    ap.add_argument("--arch", default="i_mobilenetv2", help="architecture of the stand-in when no bundled model")
    ap.add_argument("--backends", default="torch,onnx,int8", help="subset of torch,onnx,int8")
    ap.add_argument("--detector", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--ort-threads", type=int, default=None, help="ONNX Runtime threads (default: all cores)")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--md", type=Path, default=None)
    ap.add_argument("--sections", default="stages", help="comma-separated: stages, startup, crops, detectors, load")
    ap.add_argument("--crops", type=Path, default=None, help="crop folder for the crops section")
    ap.add_argument("--startup-runs", type=int, default=5)
    ap.add_argument("--load-backends", default="onnx,torch", help="backends for the load section")
    args = ap.parse_args(argv)
    args.backends = [b for b in args.backends.split(",") if b]
    args.load_backends = [b for b in args.load_backends.split(",") if b]
    sections = [x for x in args.sections.split(",") if x]
    rt = {}
    for name in sections:
        if name != "stages":
            rt[name] = {"startup": section_startup, "crops": section_crops, "detectors": section_detectors,
                        "load": section_load}[name](args)
    if "stages" not in sections:
        md = realtime_markdown(rt)
        result = {"env": env_info(), "realtime": rt, "args": {k: (str(v) if isinstance(v, Path) else v)
                                                              for k, v in vars(args).items()}}
        write_outputs(md, result, args.json, args.md)
        return 0
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    photos = photos_from(args.images) if args.images else default_photos()
    if not photos:
        raise SystemExit("no photos: pass --images")
    env = env_info()
    rows = []
    with tempfile.TemporaryDirectory(prefix="litefer-pipe-") as tmp:
        source, desc = model_source(args, Path(tmp))
        recs = build_recognizers(args, source, Path(tmp))
        for kind, (rec, load_s) in recs.items():
            for name, data in photos:
                r = bench_photo(rec, data, args)
                r.update(photo=name, backend=kind, load_s=load_s)
                rows.append(r)
                print(f"{name:40s} {kind:6s} faces={r['faces']} total={fmt_ms(r['stages']['total']['median'])} ms "
                      f"{r['labels']}", file=sys.stderr, flush=True)
        det = next(iter(recs.values()))[0].detector_name if recs else args.detector
    env["loadavg_end"] = os.getloadavg()
    result = {"env": env, "model": desc, "detector": det, "torch_threads": torch.get_num_threads(),
              "ort_threads": args.ort_threads, "rows": rows,
              "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "command": " ".join([Path(sys.executable).name, *sys.argv])}
    md = markdown(result) + ("\n" + realtime_markdown(rt) if rt else "")
    result["realtime"] = rt
    write_outputs(md, result, args.json, args.md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
