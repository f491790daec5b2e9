"""Frames in, faces followed and drawn: what ``litefer predict`` (videos, webcam) and the
mood player share.  numpy + OpenCV only.

>>> from litefer.vision.video import open_capture, read_frames, Smoother, annotate, largest_face
>>> cap, fps = open_capture("clip.mp4")                 # or a webcam index
>>> for i, t, rgb in read_frames(cap, fps, sample_fps=4):   # (frame index, seconds, RGB)
...     faces = [f.to_dict() for f in rec.analyze([rgb])[0]]
...     faces = smoother.update(faces)                 # tracks + probabilities averaged per track
...     bgr = annotate(rgb, faces)                     # boxes, landmarks, "label score"

Faces are dicts with ``box`` (x1, y1, x2, y2), ``landmarks`` (or None), ``probs``,
``label`` and ``score`` (``FaceResult.to_dict()``), or objects with the same attributes.
"""
from __future__ import annotations

import math
import os
import sys
from collections import deque
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

#: BGR colours per label for the annotations
COLOURS = {
    "neutral": (200, 200, 200), "happy": (0, 215, 255), "surprise": (255, 160, 0), "sad": (200, 80, 40),
    "angry": (40, 40, 230), "disgust": (60, 170, 60), "fear": (180, 60, 180), "contempt": (110, 110, 160),
}


class FrameSourceError(RuntimeError):
    """A video or camera cannot be opened or gives no frames."""


def _get(face: Any, key: str) -> Any:
    return face[key] if isinstance(face, dict) else getattr(face, key)


def box_area(face: Any) -> float:
    x1, y1, x2, y2 = (float(v) for v in list(_get(face, "box"))[:4])
    return max(0.0, x2 - x1) * max(0.0, y2 - y1)


def largest_face(faces: Sequence[Any]) -> Any:
    """The face with the largest box (dicts or objects with ``box``), or None."""
    return max(faces, key=box_area) if faces else None


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class Smoother:
    """A face tracker with temporal smoothing of the probabilities.

    Faces are followed from frame to frame by box overlap (greedy, IoU >= 0.3); each
    track averages the probabilities of its last ``window`` frames.  A track not
    seen for ``max_gap`` processed frames is dropped.  ``update(faces)`` returns the
    faces as dicts with ``track``, ``raw_label`` and the smoothed ``label``/``score``/``probs``.
    """

    def __init__(self, labels: list[str], window: int = 1, max_gap: int = 5):
        self.labels, self.window, self.max_gap = labels, max(1, int(window)), int(max_gap)
        self.tracks: dict[int, dict] = {}
        self.next_id = 0

    def update(self, faces: list[dict]) -> list[dict]:
        for t in self.tracks.values():
            t["gap"] += 1
        out = []
        free = set(self.tracks)
        for f in sorted(faces, key=lambda f: -f["score"]):
            box = np.asarray(f["box"], float)
            best, best_iou = None, 0.3
            for tid in free:
                o = iou(box, self.tracks[tid]["box"])
                if o >= best_iou:
                    best, best_iou = tid, o
            if best is None:
                best = self.next_id
                self.next_id += 1
                self.tracks[best] = {"hist": deque(maxlen=self.window)}
            else:
                free.discard(best)
            t = self.tracks[best]
            t.update(box=box, gap=0)
            t["hist"].append(np.array([f["probs"].get(k, 0.0) for k in self.labels]))
            p = np.mean(t["hist"], axis=0)
            k = int(np.argmax(p))
            out.append({**f, "track": best, "raw_label": f["label"], "label": self.labels[k], "score": float(p[k]),
                        "probs": {lab: float(v) for lab, v in zip(self.labels, p)}})
        for tid in [tid for tid, t in self.tracks.items() if t["gap"] > self.max_gap]:
            del self.tracks[tid]
        return out


def annotate(rgb: np.ndarray, faces: list[dict]) -> np.ndarray:
    """A BGR copy of ``rgb`` with boxes, landmarks and ``label score`` drawn on it."""
    import cv2
    img = np.ascontiguousarray(rgb[:, :, ::-1]).copy()
    h, w = img.shape[:2]
    for f in faces:
        colour = COLOURS.get(f["label"], (0, 255, 0))
        x1, y1, x2, y2 = [int(round(v)) for v in f["box"]]
        side = max(8, min(x2 - x1, y2 - y1))
        thick = max(1, round(side / 60))
        fscale = float(np.clip(side / 160, 0.35, 1.5))
        cv2.rectangle(img, (x1, y1), (x2, y2), colour, thick, cv2.LINE_AA)
        for x, y in f.get("landmarks") or []:
            cv2.circle(img, (int(round(x)), int(round(y))), max(1, round(side / 50)), (0, 255, 0), -1, cv2.LINE_AA)
        text = f"{f['label']} {f['score']:.2f}"
        tt = max(1, round(fscale * 1.5))
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, fscale, tt)
        ty = y1 - 4 if y1 - th - 6 >= 0 else min(h - 2, y2 + th + 4)
        cv2.rectangle(img, (x1, ty - th - 3), (x1 + tw + 4, ty + base - 1), colour, -1)
        cv2.putText(img, text, (x1 + 2, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, fscale, (0, 0, 0), tt, cv2.LINE_AA)
    return img


# --------------------------------------------------------------------------- frame sources


def open_capture(source: str | Path | int, fps_hint: float = 25.0) -> tuple[Any, float]:
    """``(cv2.VideoCapture, fps)`` of a video file or a camera index, or FrameSourceError."""
    import cv2
    if isinstance(source, int):
        cap = cv2.VideoCapture(int(source))
        if not cap.isOpened():
            raise FrameSourceError(f"cannot open camera {source} (no camera at that index, or no permission)")
    else:
        p = Path(source)
        if not p.is_file():
            raise FrameSourceError(f"no such video file: {p}")
        if p.stat().st_size == 0:
            raise FrameSourceError(f"{p}: empty file (0 bytes)")
        cap = cv2.VideoCapture(str(p))
        if not cap.isOpened():
            raise FrameSourceError(f"{p}: cannot open as a video (not a video, or a codec OpenCV lacks)")
    return cap, capture_fps(cap, fps_hint)


def capture_fps(cap: Any, fps_hint: float = 25.0) -> float:
    """The capture's frame rate, or ``fps_hint`` when it reports none or nonsense."""
    import cv2
    fps = cap.get(cv2.CAP_PROP_FPS)
    return fps if fps and math.isfinite(fps) and 0 < fps < 1000 else fps_hint


def frame_to_rgb(frame: np.ndarray) -> np.ndarray:
    """An OpenCV frame (BGR or grey) as contiguous uint8 RGB."""
    if frame.ndim == 2:
        return np.repeat(frame[:, :, None], 3, axis=2)
    return np.ascontiguousarray(frame[:, :, ::-1])


def read_frames(cap: Any, fps: float, every: int = 1, sample_fps: Optional[float] = None,
                max_frames: Optional[int] = None, clock: Any = None) -> Iterator[tuple[int, float, np.ndarray, bool]]:
    """``(index, t, rgb, sampled)`` for every frame read from ``cap`` until it ends.

    ``sampled`` says whether the frame is one to analyse: every ``every``-th frame, or
    (``sample_fps``) at most that many per second of video time, or of ``clock()`` time
    for a live camera.  ``t`` is the video time ``index / fps``, or ``clock()``."""
    every = max(1, int(every))
    step = 1.0 / sample_fps if sample_fps else 0.0
    next_t = -math.inf if clock is not None else 0.0
    n = 0
    while max_frames is None or n < max_frames:
        ok, frame = cap.read()
        if not ok or frame is None:
            break
        t = float(clock()) if clock is not None else n / fps
        if sample_fps:
            sampled = t + 1e-9 >= next_t
            if sampled:
                next_t = (t if clock is not None else next_t) + step
        else:
            sampled = n % every == 0
        yield n, t, frame_to_rgb(frame), sampled
        n += 1


def video_writer(path: Path, fps: float, size: tuple[int, int]) -> tuple[Any, Path]:
    """An opened ``cv2.VideoWriter`` (mp4v, else MJPG .avi) and the path it writes."""
    import cv2
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not w.isOpened():
        alt = path.with_suffix(".avi")
        w = cv2.VideoWriter(str(alt), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
        if not w.isOpened():
            raise RuntimeError(f"OpenCV cannot write a video to {path}")
        path = alt
    return w, path


def has_display() -> bool:
    """A GUI window can be opened (a display and an OpenCV built with highgui)."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    import cv2
    try:
        cv2.namedWindow("litefer-probe", cv2.WINDOW_AUTOSIZE)
        cv2.destroyWindow("litefer-probe")
        return True
    except cv2.error:
        return False
