#!/usr/bin/env python
"""Issue-12 real-time targets per detector: one 256x256 photo and one 640x480 frame, end to end.

End to end = ``Recognizer.from_pretrained("default", backend="onnx", threads=1)`` called on
the encoded 256x256 JPEG (decode + detect + align + classify) and on a 640x480 RGB frame
(a webcam frame is already decoded).  Then detection alone on one-face images of 256x256
to 1280x720.  Median of ``--repeats`` runs after 3 warm-ups; wall time and this thread's
CPU time (everything runs on the calling thread with one thread; on a loaded machine the
CPU time excludes waiting for a core).  Targets: <= 8 ms (256x256 photo) and <= 15 ms
(640x480 frame) on one thread; the detector >= 5x MTCNN's speed.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_e2e.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_e2e.py --detectors yunet,mtcnn,blazeface --repeats 50
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


def timed(fn, repeats: int) -> tuple[float, float, float]:
    """(median wall ms, min wall ms, median CPU ms) of ``fn()``."""
    for _ in range(3):
        fn()
    ws, cs = [], []
    for _ in range(repeats):
        c, t = time.thread_time(), time.perf_counter()
        fn()
        ws.append(time.perf_counter() - t)
        cs.append(time.thread_time() - c)
    return statistics.median(ws) * 1e3, min(ws) * 1e3, statistics.median(cs) * 1e3


def one_face(ex: np.ndarray, w: int, h: int) -> np.ndarray:
    import cv2
    if w == h:
        return cv2.resize(ex, (w, h), interpolation=cv2.INTER_AREA)
    can = np.full((h, w, 3), 90, np.uint8)
    side = h // 2
    can[h // 8:h // 8 + side, w // 4:w // 4 + side] = cv2.resize(ex, (side, side), interpolation=cv2.INTER_AREA)
    return can


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--detectors", default="yunet,mtcnn")
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args(argv)
    import cv2
    cv2.setNumThreads(1)
    from litefer.deploy.recognizer import Recognizer
    from litefer.vision import create_detector, load_image
    ex = load_image(REPO / "litefer" / "assets" / "example.jpg")
    jpg = cv2.imencode(".jpg", one_face(ex, 256, 256)[:, :, ::-1])[1].tobytes()
    frame = one_face(ex, 640, 480)
    names = [d.strip() for d in args.detectors.split(",") if d.strip()]
    load0 = os.getloadavg()[0]
    lines = ["| detector | 256x256 JPEG, end to end: wall median (min) / CPU ms | 640x480 frame, end to end |",
             "| --- | ---: | ---: |"]
    for name in names:
        rec = Recognizer.from_pretrained("default", detector=name, backend="onnx", threads=1)
        cells = []
        for x in (jpg, frame):
            n = len(rec(x))
            wall, lo, cpu = timed(lambda: rec(x), args.repeats)
            cells.append(f"{wall:.1f} ({lo:.1f}) / {cpu:.1f}" + ("" if n == 1 else f" [{n} faces]"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Targets: 256x256 photo <= 8 ms, 640x480 frame <= 15 ms (one thread, ONNX backend).", "",
              "| image (one face), detection only | " + " | ".join(f"{n} wall / CPU ms" for n in names)
              + (f" | {names[1]} / {names[0]} (wall / CPU) |" if len(names) > 1 else " |"),
              "| --- | " + " | ".join("---:" for _ in names) + (" | ---: |" if len(names) > 1 else " |")]
    dets = {n: create_detector(n) for n in names}
    for w, h in ((256, 256), (640, 480), (1024, 768), (1280, 720)):
        im = one_face(ex, w, h)
        res = {n: timed(lambda: d.detect(im), args.repeats) for n, d in dets.items()}
        row = f"| {w}x{h} | " + " | ".join(f"{res[n][0]:.1f} / {res[n][2]:.1f}" for n in names)
        if len(names) > 1:
            a, b = res[names[0]], res[names[1]]
            row += f" | {b[0] / a[0]:.1f}x / {b[2] / a[2]:.1f}x"
        lines.append(row + " |")
    lines += ["", f"load average {load0:.2f} -> {os.getloadavg()[0]:.2f}; one thread."]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
