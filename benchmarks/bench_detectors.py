#!/usr/bin/env python
"""Face detectors on a composed, labelled test set: recall, false positives, eye error, speed.

A reproducible stand-in for the test set of ``docs/detectors.md`` (which was composed
by hand and is not in the repository), built from public-domain faces that ship with
litefer and matplotlib: the astronaut of ``litefer/assets/example.jpg`` (NASA) and
``grace_hopper.jpg`` (matplotlib's sample data).  Each face is warped (similarity:
scale, rotation, position) onto a face-free 1024x768 background, so its box and eyes
are known exactly:

- single faces at widths 16-300 px x rotations 0, +-20, 40 degrees;
- the same at 64 px flipped, JPEG q=20, blurred (sigma 2.5), dark (gamma 2.2 x 0.5), grey;
- multi-face scenes: 1280x720 with 3-8 faces of mixed sizes (small faces included);
- negatives: every background alone, and turned 90 degrees.

Backgrounds are synthetic (noise, blurred noise, gradients, stripes, checkerboards) and
matplotlib's face-free sample pictures (the terrain maps rendered as images, the logo).
The reference eyes are MTCNN's on the untouched source photos (which favours MTCNN's
landmark style slightly: read eye errors as relative).  A detection counts when its box
centre is inside the true box and the true centre inside its box; every other
detection is a false positive.  Eye error: mean distance of the two eyes from the true
ones over the true inter-ocular distance.  Time: median per image, one thread.

Time: median per image of the wall time and of this thread's CPU time (the steadier
measure on a loaded machine).  ``--negatives DIR`` adds real face-free photographs
(e.g. scikit-image's ``skimage/data``; see docs/detectors.md).

    .venv/bin/python benchmarks/bench_detectors.py --md out/detectors.md --json out/detectors.json
    .venv/bin/python benchmarks/bench_detectors.py --detectors mtcnn,yunet,blazeface --quick
    .venv/bin/python benchmarks/bench_detectors.py --negatives /tmp/skimage/data --detectors "mtcnn,yunet"
"""
from __future__ import annotations

import argparse
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

from bench_models import write_outputs  # noqa: E402

#: (box x1, y1, x2, y2; eyes (image-left, image-right)) of the face in each source photo:
#: MTCNN's on the untouched photo (see the module docstring)
SOURCES = {
    "astronaut": ((179, 58, 266, 174), ((204, 101), (246, 103))),
    "grace_hopper": ((174, 108, 350, 331), ((217, 191), (309, 185))),
}

#: variants: name -> (registered detector, keyword arguments)
DETECTORS = {
    "mtcnn": ("mtcnn", {}),
    "mtcnn (opencv runtime)": ("mtcnn", {"runtime": "opencv"}),
    "mtcnn min_face=40": ("mtcnn", {"min_face": 40}),
    "mtcnn (0.5)": ("mtcnn", {"min_score": 0.5}),
    "blazeface": ("blazeface", {}),
    "blazeface_full": ("blazeface_full", {}),
    "yunet": ("yunet", {}),
    "yunet (opencv runtime)": ("yunet", {"runtime": "opencv"}),
    "yunet (own landmarks; no O-Net check)": ("yunet", {"landmarks": "yunet"}),
    "yunet (0.7)": ("yunet", {"min_score": 0.7}),
    "yunet min_face=10": ("yunet", {"min_face": 10}),
    "yunet min_face=11": ("yunet", {"min_face": 11}),
    "yunet min_face=13": ("yunet", {"min_face": 13}),
    "yunet min_face=14": ("yunet", {"min_face": 14}),
    "yunet min_face=20": ("yunet", {"min_face": 20}),
}


def source_photos() -> dict[str, np.ndarray]:
    import matplotlib
    from litefer.vision import load_image
    out = {"astronaut": load_image(REPO / "litefer" / "assets" / "example.jpg")}
    gh = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if gh.is_file():
        out["grace_hopper"] = load_image(gh)
    return out


def backgrounds(w: int, h: int, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    import cv2
    rng = np.random.default_rng(seed)
    out = []
    noise = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    out.append(("noise", noise))
    out.append(("blurred noise", cv2.GaussianBlur(noise, (0, 0), 6)))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    grad = np.stack([xx / w * 255, yy / h * 255, (xx + yy) / (w + h) * 255], -1).astype(np.uint8)
    out.append(("gradient", grad))
    stripes = ((np.sin(xx / 9.0) * 0.5 + 0.5) * 200 + 20).astype(np.uint8)
    out.append(("stripes", np.dstack([stripes, stripes[:, ::-1], stripes])))
    check = ((((xx // 40) + (yy // 40)) % 2) * 160 + 40).astype(np.uint8)
    out.append(("checkerboard", np.dstack([check] * 3)))
    blobs = cv2.GaussianBlur(rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8).astype(np.uint8), (0, 0), 1)
    out.append(("colour blobs", cv2.resize(blobs, (w, h), interpolation=cv2.INTER_CUBIC)))
    try:
        import matplotlib
        from matplotlib import cm
        sd = Path(matplotlib.get_data_path()) / "sample_data"
        for name in ("topobathy.npz", "jacksboro_fault_dem.npz"):
            p = sd / name
            if p.is_file():
                with np.load(p) as z:
                    a = np.asarray(z[list(z.keys())[0]], np.float32)
                a = (a - a.min()) / max(1e-6, float(a.max() - a.min()))
                rgb = (cm.terrain(a)[:, :, :3] * 255).astype(np.uint8)
                out.append((name, cv2.resize(rgb, (w, h), interpolation=cv2.INTER_CUBIC)))
        for name in ("logo2.png", "Minduka_Present_Blue_Pack.png"):
            p = sd / name
            if p.is_file():
                from litefer.vision import load_image
                out.append((name, cv2.resize(load_image(p), (w, h), interpolation=cv2.INTER_AREA)))
    except ImportError:
        pass
    return out


def paste(canvas: np.ndarray, src: np.ndarray, box, eyes, width: float, angle: float, centre,
          flip: bool = False) -> dict:
    """Warp the face of ``src`` onto ``canvas`` (in place): face ``width`` px wide, turned
    ``angle`` degrees, centred at ``centre``; returns its true box and eyes."""
    import cv2
    x1, y1, x2, y2 = box
    s = width / (x2 - x1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    m = cv2.getRotationMatrix2D((cx, cy), angle, s)
    m[:, 2] += np.array(centre) - np.array([cx, cy])
    if flip:
        f = np.array([[-1, 0, 2 * cx], [0, 1, 0], [0, 0, 1]], np.float64)
        m = m @ f
    h, w = canvas.shape[:2]
    warped = cv2.warpAffine(src, m, (w, h), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    # a soft elliptical region around the face (head and some neck), not the whole photo
    mask = np.zeros(src.shape[:2], np.float32)
    bw, bh = x2 - x1, y2 - y1
    cv2.ellipse(mask, (int(cx), int(cy + 0.1 * bh)), (int(bw * 0.95), int(bh * 0.95)), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, bw * 0.08))
    wm = cv2.warpAffine(mask, m, (w, h))[:, :, None]
    canvas[:] = (canvas * (1 - wm) + warped * wm).astype(np.uint8)
    corners = np.array([[x1, y1, 1], [x2, y1, 1], [x2, y2, 1], [x1, y2, 1]], np.float64) @ m.T
    true_eyes = np.array([[*e, 1] for e in eyes], np.float64) @ m.T
    if flip:  # the person's eyes swap sides: keep image order
        true_eyes = true_eyes[np.argsort(true_eyes[:, 0])] if abs(angle) < 45 else true_eyes[::-1]
    tb = [corners[:, 0].min(), corners[:, 1].min(), corners[:, 0].max(), corners[:, 1].max()]
    return {"box": [float(v) for v in tb], "eyes": true_eyes.tolist(), "width": float(width)}


def real_negatives(folder: Path, w: int = 1024, h: int = 768) -> list[dict]:
    """Face-free photos from ``folder`` (e.g. scikit-image's ``skimage/data``, whose pictures
    of bricks, coffee, the cat, coins, text, the rocket… are real photographs), each resized
    to ``w`` x ``h`` and also turned 90 degrees.  Files whose name says they hold a face
    (astronaut, camera, lfw) are skipped."""
    import cv2
    from litefer.vision import ImageLoadError, iter_image_files, load_image
    out = []
    for p in sorted(iter_image_files([folder])):
        if any(k in p.name.lower() for k in ("astronaut", "camera", "lfw", "face")):
            continue
        try:
            rgb = load_image(p)
        except ImageLoadError:
            continue
        if min(rgb.shape[:2]) < 64:
            continue
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if rgb.shape[1] > w else cv2.INTER_CUBIC)
        out.append({"name": f"negative {p.name}", "rgb": rgb, "faces": [], "kind": "negative"})
        out.append({"name": f"negative {p.name} turned", "rgb": np.ascontiguousarray(np.rot90(rgb)), "faces": [],
                    "kind": "negative"})
    return out


def build(quick: bool = False, seed: int = 0) -> list[dict]:
    """The test images: dicts with ``name``, ``rgb``, ``faces`` (true boxes and eyes), ``kind``."""
    import cv2
    rng = np.random.default_rng(seed)
    photos = source_photos()
    W, H = 1024, 768
    bgs = backgrounds(W, H, seed)
    images = []
    widths = (16, 24, 32, 48, 64, 100, 160, 300) if not quick else (24, 64, 160)
    angles = (0, 20, -20, 40) if not quick else (0, 20)
    k = 0
    for pname, src in photos.items():
        box, eyes = SOURCES[pname]
        for wd in widths:
            for ang in angles:
                bname, bg = bgs[k % len(bgs)]
                k += 1
                can = bg.copy()
                c = (rng.uniform(wd, W - wd), rng.uniform(wd, H - wd))
                f = paste(can, src, box, eyes, wd, ang, c)
                images.append({"name": f"{pname} w{wd} r{ang} on {bname}", "rgb": can, "faces": [f],
                               "kind": "single", "width": wd, "angle": ang})
        for cond in ("flipped", "jpeg20", "blurred", "dark", "grey"):
            bname, bg = bgs[k % len(bgs)]
            k += 1
            can = bg.copy()
            f = paste(can, src, box, eyes, 64, 0, (W / 2, H / 2), flip=cond == "flipped")
            if cond == "jpeg20":
                ok, enc = cv2.imencode(".jpg", can[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 20])
                can = np.ascontiguousarray(cv2.imdecode(enc, cv2.IMREAD_COLOR)[:, :, ::-1])
            elif cond == "blurred":
                can = cv2.GaussianBlur(can, (0, 0), 2.5)
            elif cond == "dark":
                can = (255 * ((can / 255.0) ** 2.2) * 0.5).astype(np.uint8)
            elif cond == "grey":
                g = cv2.cvtColor(can, cv2.COLOR_RGB2GRAY)
                can = np.dstack([g] * 3)
            images.append({"name": f"{pname} 64px {cond}", "rgb": np.ascontiguousarray(can), "faces": [f],
                           "kind": cond, "width": 64, "angle": 0})
    # multi-face scenes: 3-8 faces of mixed sizes, without overlaps
    for i in range(6 if not quick else 2):
        bname, bg = bgs[(k + i) % len(bgs)]
        can = cv2.resize(bg, (1280, 720))
        faces, taken = [], []
        n = int(rng.integers(3, 9))
        tries = 0
        while len(faces) < n and tries < 200:
            tries += 1
            pname = list(photos)[int(rng.integers(len(photos)))]
            wd = float(rng.choice([20, 28, 40, 60, 90, 140]))
            c = (rng.uniform(wd, 1280 - wd), rng.uniform(wd, 720 - wd))
            r = wd * 1.3
            if any(abs(c[0] - t[0]) < r + t[2] and abs(c[1] - t[1]) < r + t[2] for t in taken):
                continue
            taken.append((c[0], c[1], r))
            box, eyes = SOURCES[pname]
            faces.append(paste(can, photos[pname], box, eyes, wd, float(rng.uniform(-15, 15)), c))
        images.append({"name": f"scene {i} ({len(faces)} faces) on {bname}", "rgb": can, "faces": faces,
                       "kind": "multi", "width": None, "angle": None})
    for bname, bg in bgs:
        images.append({"name": f"negative {bname}", "rgb": bg, "faces": [], "kind": "negative"})
        images.append({"name": f"negative {bname} turned", "rgb": np.ascontiguousarray(np.rot90(bg)), "faces": [],
                       "kind": "negative"})
    return images


def score(images: list[dict], results: list[list]) -> dict:
    found = total = fp_faces = fp_neg = neg_with = 0
    eye_err = []
    by_width: dict[str, list[int]] = {}
    for im, dets in zip(images, results):
        used = set()
        for f in im["faces"]:
            total += 1
            b = f["box"]
            hit = None
            for j, d in enumerate(dets):
                if j in used:
                    continue
                db = d.box
                dc = ((db[0] + db[2]) / 2, (db[1] + db[3]) / 2)
                tc = ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)
                if b[0] <= dc[0] <= b[2] and b[1] <= dc[1] <= b[3] and db[0] <= tc[0] <= db[2] and db[1] <= tc[1] <= db[3]:
                    hit = j
                    break
            w = f["width"]
            key = "<32" if w < 32 else "32-80" if w <= 80 else ">80"
            by_width.setdefault(key, [0, 0])[1] += 1
            if hit is None:
                continue
            used.add(hit)
            found += 1
            by_width[key][0] += 1
            lm = dets[hit].landmarks
            if lm is not None:
                te = np.asarray(f["eyes"])
                iod = float(np.linalg.norm(te[1] - te[0]))
                eye_err.append(float(np.mean(np.linalg.norm(np.asarray(lm[:2]) - te, axis=1))) / max(iod, 1e-6))
        extra = len(dets) - len(used)
        if im["faces"]:
            fp_faces += extra
        else:
            fp_neg += extra
            neg_with += int(extra > 0)
    return {"recall": found / max(total, 1), "found": found, "faces": total, "fp_face_scenes": fp_faces,
            "fp_negatives": fp_neg, "negatives_with_fp": neg_with,
            "eye_error": statistics.median(eye_err) if eye_err else None,
            "recall_by_width": {k: f"{v[0]}/{v[1]}" for k, v in sorted(by_width.items())}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--detectors", default=",".join(DETECTORS), help="comma-separated names of DETECTORS")
    ap.add_argument("--quick", action="store_true", help="a small set (checks that the script runs)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per image (median)")
    ap.add_argument("--negatives", type=Path, default=None,
                    help="a folder of face-free real photos added as negatives (e.g. scikit-image's skimage/data: "
                         "pip download --no-deps scikit-image, unzip the wheel)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--md", type=Path, default=None)
    args = ap.parse_args(argv)
    import cv2
    cv2.setNumThreads(1)
    from litefer.vision import DetectorUnavailable, create_detector
    images = build(quick=args.quick)
    if args.negatives:
        images += real_negatives(args.negatives)
    n_neg = sum(1 for im in images if not im["faces"])
    print(f"{len(images)} images, {sum(len(im['faces']) for im in images)} faces, {n_neg} negatives",
          file=sys.stderr, flush=True)
    rows = {}
    load0 = os.getloadavg()[0]
    for label in [d.strip() for d in args.detectors.split(",") if d.strip()]:
        name, kw = DETECTORS[label]
        try:
            det = create_detector(name, **kw)
        except DetectorUnavailable as exc:
            print(f"{label}: unavailable ({exc})", file=sys.stderr)
            continue
        results, times, cpu_times = [], [], []
        for im in images:
            results.append(det.detect(im["rgb"]))
            ts, cs = [], []
            for _ in range(args.repeats):
                c, t = time.thread_time(), time.perf_counter()
                det.detect(im["rgb"])
                ts.append(time.perf_counter() - t)
                cs.append(time.thread_time() - c)
            times.append(min(ts))
            cpu_times.append(min(cs))
        row = score(images, results)
        row["median_ms"] = statistics.median(times) * 1000
        # CPU time of this thread (one thread: the detectors run single-threaded): on a
        # loaded machine wall time includes waiting for a core, CPU time does not
        row["median_cpu_ms"] = statistics.median(cpu_times) * 1000
        rows[label] = row
        print(f"{label:24s} recall {row['recall']:.3f} FP {row['fp_face_scenes']}/{row['fp_negatives']} "
              f"eye {row['eye_error'] if row['eye_error'] is None else round(row['eye_error'], 3)} "
              f"{row['median_ms']:.1f} ms (cpu {row['median_cpu_ms']:.1f} ms)", file=sys.stderr, flush=True)
    base = rows.get("mtcnn", {}).get("median_ms")
    base_cpu = rows.get("mtcnn", {}).get("median_cpu_ms")
    lines = [f"{len(images)} images, {sum(len(im['faces']) for im in images)} faces, {n_neg} negatives; "
             f"load average {load0:.2f} -> {os.getloadavg()[0]:.2f}; one thread.", "",
             "| detector | recall | recall by width (<32 / 32-80 / >80 px) | FP in face scenes | FP in negatives "
             "(images with any) | eye error | median ms (wall) | median CPU ms | speed vs mtcnn (wall / CPU) |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for label, r in rows.items():
        bw = r["recall_by_width"]
        eye = "-" if r["eye_error"] is None else f"{r['eye_error']:.3f}"
        speed = (f"{base / r['median_ms']:.2f}x / {base_cpu / max(r['median_cpu_ms'], 1e-9):.2f}x"
                 if base else "-")
        lines.append(f"| {label} | {r['found']}/{r['faces']} = {r['recall']:.3f} | {bw.get('<32', '-')} / "
                     f"{bw.get('32-80', '-')} / {bw.get('>80', '-')} | {r['fp_face_scenes']} | {r['fp_negatives']} "
                     f"({r['negatives_with_fp']}) | {eye} | {r['median_ms']:.1f} | {r['median_cpu_ms']:.1f} | {speed} |")
    lines += ["", "Targets for `auto` (issue 12): recall >= MTCNN's, no more false positives than MTCNN at 0.9, "
              "eye error <= 0.06, >= 5x MTCNN's speed."]
    md = "\n".join(lines) + "\n"
    write_outputs(md, {"rows": rows, "images": len(images)}, args.json, args.md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
