#!/usr/bin/env python
"""litefer side by side with the peer package ``fer`` (justinshenk/fer): accuracy and latency.

Both classify the same FER2013 PrivateTest faces (48x48 grey crops, read with
``litefer.data.load_dataset("fer2013", split="privatetest")``), and both run their
whole pipeline (detection → crop → classification) on the same real photos (those
of ``bench_pipeline.py``).  ``fer`` runs in its own virtual environment (never a
litefer dependency; see ``../shared/PEERS.md`` next to the repository), in a subprocess of that interpreter:

    python3 -m venv .venv-fer
    .venv-fer/bin/pip install fer tensorflow-cpu "setuptools<81" "opencv-contrib-python<5" "opencv-python<5"
    .venv/bin/python benchmarks/bench_peer_fer.py                       # all 3,589 PrivateTest faces
    .venv/bin/python benchmarks/bench_peer_fer.py --count 1000 --json out/peer.json --md out/peer.md

What is compared:

- fer's classifier (mini-Xception, 64x64 grey, ``(x/255 - 0.5) * 2``) as fer ships it:
  the quantised TFLite model (fer's default, ``use_tflite=True``) and the Keras
  ``.hdf5`` model.  "crop" feeds it each 48x48 face resized to 64x64 (how the model
  was trained); "fer box" calls ``FER.detect_emotions`` with the whole 48x48 image as
  the face box (fer then pads, widens the box by its 10-pixel offsets and resizes).
- litefer's model (``--model``, default the bundled one): PyTorch eager, ONNX fp32 and
  ONNX int8, the face preprocessed as its sidecar says.
- latency per face at batch 1 (litefer: 1 thread and all cores; fer: its defaults),
  medians after warm-up; end to end per photo: fer's ``detect_emotions`` (OpenCV Haar
  cascade) vs litefer's ``Recognizer`` (its default detector); and the same interleaved
  (``--rounds``): fer and litefer ONNX take turns on each photo, round after round, so a
  slow spell of a shared machine hits both sides (the ratio to quote).

Caveat printed with the results: fer's model comes from oarriaga/face_classification,
whose training script (``split_data``: the first 80 % of fer2013.csv's rows for training,
the last 20 % = PublicTest + PrivateTest for validation) chose its checkpoint, learning
rate and stopping epoch on a validation set that contains PrivateTest: its accuracy here
is selected on the test faces and so optimistic.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
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

FER_LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]

#: run by the .venv-fer interpreter: argv[1] = JSON job, writes JSON results to job["out"]
FER_WORKER = r'''
import json, os, statistics, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np, cv2
job = json.loads(sys.argv[1])
faces = np.load(job["faces"])
from fer.fer import FER
import fer as fer_pkg
try:
    from importlib.metadata import version
    fer_version = version("fer")
except Exception:
    fer_version = getattr(fer_pkg, "__version__", "?")
import tensorflow as tf

def timeit(fn, warmup, repeats):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    return {"median": statistics.median(ts), "min": min(ts), "n": len(ts)}

out = {"fer_version": fer_version, "tensorflow": tf.__version__, "opencv": cv2.__version__, "runs": {}}
x = np.stack([cv2.resize(f, (64, 64)) for f in faces]).astype(np.float32) / 255.0
x = (x - 0.5) * 2.0
lat_idx = list(range(min(job["latency_count"], len(faces))))
for mode in ("tflite", "keras"):
    t0 = time.perf_counter()
    det = FER(mtcnn=False, use_tflite=(mode == "tflite"))
    load_s = time.perf_counter() - t0
    if mode == "tflite":
        classify = lambda b: np.asarray(det._classify_emotions(b))
        probs = np.concatenate([classify(x[i:i + 256]) for i in range(0, len(x), 256)])
    else:
        model = det._FER__emotion_classifier
        probs = np.asarray(model.predict(x[..., None], batch_size=256, verbose=0))
        classify = lambda b: np.asarray(det._classify_emotions(b[..., None]))
    k = iter(lat_idx * (job["warmup"] + job["repeats"] + 1))
    lat = timeit(lambda: classify(x[next(k)][None]), job["warmup"], job["repeats"])
    run = {"load_s": load_s, "pred_crop": probs.argmax(1).tolist(), "latency_face_b1": lat}
    if mode == "tflite":
        preds = []
        for f in faces:
            bgr = cv2.cvtColor(f, cv2.COLOR_GRAY2BGR)
            r = det.detect_emotions(bgr, face_rectangles=[(0, 0, f.shape[1], f.shape[0])])
            e = r[0]["emotions"] if r else None
            preds.append(-1 if e is None else int(np.argmax([e[n] for n in job["labels"]])))
        run["pred_ferbox"] = preds
        photos = []
        for p in job["photos"]:
            bgr = cv2.imread(p, cv2.IMREAD_COLOR)
            res = det.detect_emotions(bgr)
            t = timeit(lambda: det.detect_emotions(bgr), job["warmup"], job["photo_repeats"])
            photos.append({"path": p, "faces": len(res), "total": t,
                           "labels": [max(r["emotions"], key=r["emotions"].get) for r in res]})
        run["photos"] = photos
    out["runs"][mode] = run
json.dump(out, open(job["out"], "w"))
'''


#: the .venv-fer interpreter as a timing server for the interleaved photo rounds: argv[1] =
#: JSON list of photo paths; each stdin line "K N W" calls fer on photo K W times untimed, then
#: times N calls and answers
#: one JSON line of the N wall times (s); an empty line ends it
FER_PHOTO_SERVER = r'''
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import cv2
from fer.fer import FER
det = FER(mtcnn=False, use_tflite=True)
imgs = [cv2.imread(p, cv2.IMREAD_COLOR) for p in json.loads(sys.argv[1])]
for im in imgs:
    det.detect_emotions(im)
print(json.dumps({"ready": [len(det.detect_emotions(im)) for im in imgs]}), flush=True)
for line in sys.stdin:
    if not line.strip():
        break
    k, n, w = map(int, line.split())
    for _ in range(w):
        det.detect_emotions(imgs[k])
    ts = []
    for _ in range(n):
        t = time.perf_counter(); det.detect_emotions(imgs[k]); ts.append(time.perf_counter() - t)
    print(json.dumps(ts), flush=True)
'''


def interleaved_photos(py: Path, model: str, photos, photo_paths: list[str], args) -> list[dict]:
    """fer and litefer (ONNX, one thread) timed on each photo in alternating rounds of
    ``--photo-repeats`` calls each (after ``--turn-warmup`` untimed ones), ``--rounds``
    times: a slow spell of the machine hits both, so the per-round ratios and the ratio
    of the pooled medians are fair."""
    from litefer.deploy.recognizer import Recognizer
    from litefer.vision.io import load_image
    srv = subprocess.Popen([str(py), "-c", FER_PHOTO_SERVER, json.dumps(photo_paths)], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"})
    try:
        first = srv.stdout.readline()
        if not first:
            raise SystemExit("the fer timing server did not start (run the fer worker alone to see why)")
        fer_faces = json.loads(first)["ready"]
        rec = Recognizer.from_pretrained(model, detector=args.detector, backend="onnx", threads=1)
        rgbs = [load_image(d) for _, d in photos]
        lit_faces = [len(rec(x)) for x in rgbs]
        for x in rgbs:
            for _ in range(args.warmup):
                rec(x)
        n = args.photo_repeats
        fer_t = [[] for _ in photos]
        lit_t = [[] for _ in photos]
        ratios = [[] for _ in photos]
        for r in range(args.rounds):
            for k, x in enumerate(rgbs):
                srv.stdin.write(f"{k} {n} {args.turn_warmup}\n")
                srv.stdin.flush()
                ft = json.loads(srv.stdout.readline())
                time.sleep(args.settle_ms / 1e3)
                for _ in range(args.turn_warmup):
                    rec(x)
                lt = []
                for _ in range(n):
                    t = time.perf_counter()
                    rec(x)
                    lt.append(time.perf_counter() - t)
                fer_t[k] += ft
                lit_t[k] += lt
                ratios[k].append(float(np.median(ft) / np.median(lt)))
                time.sleep(args.settle_ms / 1e3)
        srv.stdin.write("\n")
        srv.stdin.flush()
    finally:
        try:
            srv.wait(timeout=30)
        except subprocess.TimeoutExpired:
            srv.kill()
    rows = []
    for k, (name, _) in enumerate(photos):
        f, lt = float(np.median(fer_t[k])), float(np.median(lit_t[k]))
        rows.append({"photo": name, "faces_fer": fer_faces[k], "faces_litefer": lit_faces[k], "fer_ms": 1e3 * f,
                     "litefer_ms": 1e3 * lt, "ratio": f / lt, "round_ratios": ratios[k]})
    return rows


def fer_python(arg: str | None) -> Path:
    p = Path(arg) if arg else REPO / ".venv-fer" / "bin" / "python"
    if not p.is_file():
        raise SystemExit(f"no fer interpreter at {p}: create .venv-fer as the docstring says, or pass --fer-python")
    return p


def litefer_side(model: str, faces: np.ndarray, y: np.ndarray, labels: list[str], args, photos, tmp: Path) -> dict:
    import torch
    from litefer.deploy.backends import TorchBackend
    from litefer.deploy.export import export_onnx
    from litefer.deploy.onnx_backend import OnnxBackend, preprocess_faces
    from litefer.deploy.quantize import quantize_onnx
    from litefer.models.checkpoint import load_model

    net, meta = load_model(model)
    out = {"arch": meta.arch, "labels": meta.labels, "preprocess": meta.preprocess, "runs": {}}
    onnx_path = export_onnx(model, tmp / "m.onnx", force=True).path
    int8_path = quantize_onnx(onnx_path, tmp / "m.int8.onnx", force=True)
    x = preprocess_faces(faces, meta.preprocess)
    # map the model's classes onto the dataset's by name (others, e.g. contempt, count as wrong)
    to_ds = np.array([labels.index(n) if n in labels else -1 for n in meta.labels])
    lat_faces = x[: min(args.latency_count, len(x))]
    all_cores = os.cpu_count() or 1
    variants = {
        "torch eager": lambda t: TorchBackend(net, meta=meta),
        "onnx fp32": lambda t: OnnxBackend(onnx_path, threads=t),
        "onnx int8": lambda t: OnnxBackend(int8_path, threads=t),
    }
    for name, make in variants.items():
        torch.set_num_threads(all_cores)
        be = make(None)
        probs = np.concatenate([be.predict(x[i:i + 256]) for i in range(0, len(x), 256)])
        pred = to_ds[probs.argmax(1)]
        run = {"accuracy": float((pred == y).mean()), "latency_face_b1": {}}
        for t in (1, all_cores):
            torch.set_num_threads(t)
            be = make(t)
            k = iter(list(range(len(lat_faces))) * (args.warmup + args.repeats + 1))
            run["latency_face_b1"][str(t)] = timeit(lambda: be.predict(lat_faces[next(k)][None]), args.warmup,
                                                     args.repeats)
        out["runs"][name] = run
        print(f"litefer {name:12s} acc {run['accuracy']:.4f}  b1 1T "
              f"{fmt_ms(run['latency_face_b1']['1']['median'])} ms", file=sys.stderr, flush=True)
    torch.set_num_threads(all_cores)
    # end to end on the photos
    from litefer.deploy.recognizer import Recognizer
    from litefer.vision.io import load_image
    out["photos"] = {}
    for name, src, kw in (("torch", model, {}), ("onnx", str(onnx_path), {})) if photos else ():
        rec = Recognizer.from_pretrained(src, detector=args.detector, backend=name, threads=1, **kw)
        rows = []
        for pname, data in photos:
            # decoded once outside the timed call, as on fer's side (cv2.imread before the
            # loop): both time detection + crop + classification of the same pixels
            rgb = load_image(data)
            res = rec(rgb)
            t = timeit(lambda: rec(rgb), args.warmup, args.photo_repeats)
            rows.append({"photo": pname, "faces": len(res), "total": t, "labels": [r.label for r in res]})
        out["photos"][name] = {"detector": rec.detector_name, "rows": rows}
    return out


def markdown(res: dict) -> str:
    models = res["litefer_models"]
    lf, fr, n = models[0], res["fer"], res["count"]
    cores = str(res["env"]["cpu"]["logical_cores"])
    lines = [f"FER2013 PrivateTest, {n} faces ({res['selection']}); fer {fr['fer_version']} (TensorFlow "
             f"{fr['tensorflow']}) in `.venv-fer`; litefer models: "
             + ", ".join(f"{m.get('arch', '—')} ({m['desc']})" for m in models) + ". "
             f"CPU: {res['env']['cpu']['model']}, {cores} logical cores; load average "
             f"{res['env']['loadavg_start'][0]:.2f} → {res['env']['loadavg_end'][0]:.2f}. Latency: median per face "
             f"at batch 1 after warm-up (ms).", "",
             "| system | input | accuracy | latency 1T | latency all cores |",
             "| --- | --- | ---: | ---: | ---: |"]
    for m in models:
        tag = "" if len(models) == 1 else f" ({m['desc']})"
        for name, run in m.get("runs", {}).items():
            lat = run["latency_face_b1"]
            lines.append(f"| litefer {name}{tag} | {m['preprocess']['size']}px crop | {run['accuracy']:.4f} | "
                         f"{fmt_ms(lat['1']['median'])} | {fmt_ms(lat[cores]['median'])} |")
    for mode, run in fr["runs"].items():
        lines.append(f"| fer {mode} | 64px crop | {run['accuracy_crop']:.4f} | — | "
                     f"{fmt_ms(run['latency_face_b1']['median'])} (fer default threads) |")
        if "accuracy_ferbox" in run:
            lines.append(f"| fer {mode} `detect_emotions` (face box given) | fer crop | {run['accuracy_ferbox']:.4f} "
                         f"| — | — |")
    if res.get("ratios"):
        lines += ["", "Ratios (fer / litefer; latency > 1 means litefer is faster): " +
                  "; ".join(f"{k} {v:.2f}" for k, v in res["ratios"].items())]
    lines += ["", "End to end per photo (detection + crop + classification, ms):", "",
              "| photo | faces: fer / litefer | fer (Haar + TFLite) | litefer torch | litefer onnx | fer / litefer onnx |",
              "| --- | --- | ---: | ---: | ---: | ---: |"]
    fer_photos = fr["runs"].get("tflite", {}).get("photos", [])
    for i, fp in enumerate(fer_photos):
        lt = lf.get("photos", {}).get("torch", {}).get("rows", [])
        lo = lf.get("photos", {}).get("onnx", {}).get("rows", [])
        name = lt[i]["photo"] if i < len(lt) else Path(fp["path"]).name
        lines.append(f"| {name} | {fp['faces']} / {lt[i]['faces'] if i < len(lt) else '—'} | "
                     f"{fmt_ms(fp['total']['median'])} | {fmt_ms(lt[i]['total']['median']) if i < len(lt) else '—'} | "
                     f"{fmt_ms(lo[i]['total']['median']) if i < len(lo) else '—'} | "
                     + (f"{fp['total']['median'] / lo[i]['total']['median']:.2f}x |" if i < len(lo) else "— |"))
    inter = res.get("interleaved")
    if inter:
        lines += ["", f"End to end per photo, interleaved ({inter['rounds']} rounds; in each, fer then litefer ONNX "
                      f"(one thread) call the photo {inter['warmup']} times untimed, then {inter['repeats']} times "
                      f"timed; ms, medians of all timed calls):", "",
                  "| photo | faces: fer / litefer | fer | litefer onnx | fer / litefer | per-round ratios: min – max |",
                  "| --- | --- | ---: | ---: | ---: | --- |"]
        for r in inter["rows"]:
            lines.append(f"| {r['photo']} | {r['faces_fer']} / {r['faces_litefer']} | {r['fer_ms']:.2f} | "
                         f"{r['litefer_ms']:.2f} | **{r['ratio']:.2f}x** | "
                         f"{min(r['round_ratios']):.2f}x – {max(r['round_ratios']):.2f}x |")
    lines += ["", "Caveat: fer's mini-Xception comes from oarriaga/face_classification, whose training script "
              "trained on FER2013 Training but chose its checkpoint, learning rate and stopping epoch on PublicTest + "
              "PrivateTest (the last 20 % of fer2013.csv), so its PrivateTest accuracy is selected on test."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", default="all", help="number of PrivateTest faces (stratified sample), or 'all'")
    ap.add_argument("--model", default="default",
                    help="litefer checkpoint or bundled name; several, comma-separated, are compared in turn "
                         "(the end-to-end photo timings use the first)")
    ap.add_argument("--fer-python", default=None, help="the .venv-fer interpreter (default .venv-fer/bin/python)")
    ap.add_argument("--detector", default="auto", help="litefer's detector for the photos")
    ap.add_argument("--latency-count", type=int, default=200, help="distinct faces cycled in the latency loop")
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--photo-repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=10,
                    help="interleaved fer / litefer rounds on the photos (0: skip; each round --photo-repeats calls a side)")
    ap.add_argument("--turn-warmup", type=int, default=3,
                    help="untimed calls at the start of each side's turn in the interleaved rounds (the other "
                         "side has just filled the caches)")
    ap.add_argument("--settle-ms", type=float, default=0.0,
                    help="pause between the two sides' turns in the interleaved rounds")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--md", type=Path, default=None)
    args = ap.parse_args(argv)
    py = fer_python(args.fer_python)

    from litefer.data import load_dataset
    ds = load_dataset("fer2013", split="privatetest")
    labels = list(ds.labels)
    if args.count == "all":
        idx, selection = np.arange(len(ds)), "all"
    else:
        rng = np.random.default_rng(0)
        idx = np.sort(rng.choice(len(ds), int(args.count), replace=False))
        selection = f"random sample, seed 0, of {len(ds)}"
    faces, y = ds.images[idx], ds.hard_targets[idx]
    from litefer.models.checkpoint import bundled_path
    model_names = [m.strip() for m in args.model.split(",") if m.strip()]
    if "default" in model_names and not bundled_path("default").is_file():
        raise SystemExit("the bundled model is not there yet: pass --model CHECKPOINT (a trained litefer checkpoint)")

    from bench_pipeline import default_photos
    photos = default_photos()
    env = env_info()
    with tempfile.TemporaryDirectory(prefix="litefer-peer-") as tmpd:
        tmp = Path(tmpd)
        np.save(tmp / "faces.npy", faces)
        photo_paths = []
        for i, (_, data) in enumerate(photos):
            p = tmp / f"photo{i}.jpg"
            p.write_bytes(data)
            photo_paths.append(str(p))
        job = {"faces": str(tmp / "faces.npy"), "out": str(tmp / "fer.json"), "labels": FER_LABELS,
               "latency_count": args.latency_count, "repeats": args.repeats, "warmup": args.warmup,
               "photo_repeats": args.photo_repeats, "photos": photo_paths}
        print(f"running fer in {py} …", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run([str(py), "-c", FER_WORKER, json.dumps(job)], capture_output=True, text=True,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"})
        if proc.returncode != 0:
            raise SystemExit(f"the fer worker failed:\n{proc.stderr[-4000:]}")
        fer_res = json.loads((tmp / "fer.json").read_text())
        fer_res["wall_s"] = time.perf_counter() - t0
        fer_to_ds = np.array([labels.index(n) for n in FER_LABELS])
        for run in fer_res["runs"].values():
            run["accuracy_crop"] = float((fer_to_ds[np.array(run.pop("pred_crop"))] == y).mean())
            if "pred_ferbox" in run:
                p = np.array(run.pop("pred_ferbox"))
                run["accuracy_ferbox"] = float(np.where(p >= 0, fer_to_ds[np.maximum(p, 0)] == y, False).mean())
            print(f"fer {run.get('accuracy_crop'):.4f}", file=sys.stderr, flush=True)
        models = []
        for i, name in enumerate(model_names):
            sub = tmp / f"m{i}"
            sub.mkdir()
            m = litefer_side(name, faces, y, labels, args, photos if i == 0 else [], sub)
            m["desc"] = "bundled default" if name == "default" else name
            models.append(m)
        lf = models[0]
        inter = None
        if args.rounds > 0 and photos:
            print(f"interleaved photo rounds ({args.rounds}) …", file=sys.stderr, flush=True)
            inter = {"rounds": args.rounds, "repeats": args.photo_repeats, "warmup": args.turn_warmup,
                     "rows": interleaved_photos(py, model_names[0], photos, photo_paths, args)}
    env["loadavg_end"] = os.getloadavg()
    ratios = {}
    best = lf["runs"].get("onnx fp32")
    tfl = fer_res["runs"].get("tflite")
    if best and tfl:
        ratios["latency per face, fer TFLite / litefer ONNX fp32 (1 thread)"] = \
            tfl["latency_face_b1"]["median"] / best["latency_face_b1"]["1"]["median"]
        ratios["accuracy, litefer ONNX fp32 / fer TFLite (crop)"] = best["accuracy"] / tfl["accuracy_crop"]
    result = {"env": env, "count": int(len(idx)), "selection": selection,
              "litefer_models": models, "fer": fer_res, "ratios": ratios, "interleaved": inter,
              "command": " ".join([Path(sys.executable).name, *sys.argv])}
    md = markdown(result)
    write_outputs(md, result, args.json, args.md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
