"""``litefer predict``: expressions of the faces in images, folders, videos and a webcam.

One JSON line per image on stdout (``--format csv``: CSV rows, one per face)::

    {"path": "a.jpg", "faces": [{"box": [x1, y1, x2, y2], "landmarks": [[x, y], ...] | null,
                                 "probs": {"happy": 0.93, ...}, "label": "happy", "score": 0.93}]}

Errors go to stderr, naming the file; the batch goes on, and the exit code is 1 when
any input failed (2 for a usage error or a model that cannot be loaded).  With
``--out DIR`` the results are also saved there (``predictions.jsonl``/``.csv``),
with ``--annotate`` the annotated images too; videos write ``<name>.frames.csv``
and ``<name>.annotated.mp4``.  Nothing is ever written into an input folder.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, Iterable, List, Optional

import numpy as np
import typer
from rich.markup import escape

from litefer.cli._common import console, fail

FORMATS = ("json", "csv")
#: BGR colours per label for the annotations
_COLOURS = {
    "neutral": (200, 200, 200), "happy": (0, 215, 255), "surprise": (255, 160, 0), "sad": (200, 80, 40),
    "angry": (40, 40, 230), "disgust": (60, 170, 60), "fear": (180, 60, 180), "contempt": (110, 110, 160),
}


# --------------------------------------------------------------------------- output helpers


def face_dicts(results: Iterable[Any]) -> list[dict]:
    return [r.to_dict() for r in results]


def csv_header(labels: list[str]) -> list[str]:
    return ["path", "face", "x1", "y1", "x2", "y2", "label", "score", *[f"p_{k}" for k in labels]]


def csv_rows(path: str, faces: list[dict], labels: list[str]) -> list[list[Any]]:
    if not faces:
        return [[path, "", "", "", "", "", "", "", *[""] * len(labels)]]
    rows = []
    for i, f in enumerate(faces):
        rows.append([path, i, *[round(v, 2) for v in f["box"]], f["label"], round(f["score"], 6),
                     *[round(f["probs"].get(k, 0.0), 6) for k in labels]])
    return rows


def _csv_line(row: list[Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(row)
    return buf.getvalue()


def annotate(rgb: np.ndarray, faces: list[dict]) -> np.ndarray:
    """A BGR copy of ``rgb`` with boxes, landmarks and ``label score`` drawn on it."""
    import cv2
    img = np.ascontiguousarray(rgb[:, :, ::-1]).copy()
    h, w = img.shape[:2]
    for f in faces:
        colour = _COLOURS.get(f["label"], (0, 255, 0))
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


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
        return True
    except ValueError:
        return False


class OutputPlanner:
    """Output file names under ``out`` that never overwrite an input, and never collide."""

    def __init__(self, out: Path, inputs: set[Path]):
        self.out = out
        self.inputs = inputs
        self.used: set[Path] = set()

    def path(self, rel: Path, suffix: str) -> Path:
        base = self.out / rel.parent / (rel.stem + suffix)
        cand, k = base, 1
        while cand.resolve() in self.inputs or cand in self.used:
            cand = base.with_name(f"{rel.stem}_{k}{suffix}")
            k += 1
        self.used.add(cand)
        cand.parent.mkdir(parents=True, exist_ok=True)
        return cand


# --------------------------------------------------------------------------- inputs


class Item:
    """One input: the path, the name shown, its path relative to the output folder."""

    def __init__(self, path: Path, rel: Path, video: bool):
        self.path, self.rel, self.video = path, rel, video


def collect_inputs(paths: List[Path], recursive: bool, force_video: bool,
                   folder_videos: bool = True) -> tuple[list[Item], list[str], int]:
    """(items, errors, skipped videos): files as given, folders expanded to their
    images (and their videos with ``folder_videos``; else only counted)."""
    from litefer.vision.io import IMAGE_EXTS, VIDEO_EXTS, is_video_path
    items, errors, skipped = [], [], 0
    for p in paths:
        if p.is_dir():
            pattern = p.rglob("*") if recursive else p.glob("*")
            found = []
            for q in pattern:
                parts = q.relative_to(p).parts
                if any(part.startswith(".") for part in parts) or not q.is_file():
                    continue
                ext = q.suffix.lower()
                if ext in VIDEO_EXTS and not folder_videos:
                    skipped += 1
                elif ext in IMAGE_EXTS or ext in VIDEO_EXTS:
                    found.append(q)
            if not found and not skipped:
                errors.append(f"{p}: no image or video files in this folder")
            for q in sorted(found):
                items.append(Item(q, Path(p.resolve().name or "root") / q.relative_to(p), is_video_path(q)))
        else:
            items.append(Item(p, Path(p.name), force_video or is_video_path(p)))
    return items, errors, skipped


# --------------------------------------------------------------------------- video


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class Smoother:
    """Temporal smoothing of face probabilities across frames.

    Faces are followed from frame to frame by box overlap (greedy, IoU >= 0.3); each
    track averages the probabilities of its last ``window`` frames.  A track not
    seen for ``max_gap`` processed frames is dropped.
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
                iou = _iou(box, self.tracks[tid]["box"])
                if iou >= best_iou:
                    best, best_iou = tid, iou
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


def _video_writer(path: Path, fps: float, size: tuple[int, int]):
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


def run_stream(rec: Any, cap: Any, name: str, every: int, smooth: int, csv_path: Optional[Path],
               video_path: Optional[Path], show: bool, max_frames: Optional[int] = None,
               fps_hint: float = 25.0, progress: Any = None, task: Any = None) -> dict:
    """Frames of an opened ``cv2.VideoCapture`` through the recognizer; returns a summary."""
    import cv2
    labels = rec.labels
    fps = cap.get(cv2.CAP_PROP_FPS)
    fps = fps if fps and math.isfinite(fps) and 0 < fps < 1000 else fps_hint
    smoother = Smoother(labels, smooth)
    writer = None
    out_video = None
    csv_f = open(csv_path, "w", newline="", encoding="utf-8") if csv_path else None
    cw = csv.writer(csv_f) if csv_f else None
    if cw:
        cw.writerow(["frame", "time_s", "face", "track", "x1", "y1", "x2", "y2", "label", "score", "raw_label",
                     *[f"p_{k}" for k in labels]])
    counts = {k: 0 for k in labels}
    n = processed = with_face = 0
    last: list[dict] = []
    try:
        while True:
            if max_frames is not None and n >= max_frames:
                break
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            rgb = np.ascontiguousarray(frame[:, :, ::-1]) if frame.ndim == 3 else \
                np.repeat(frame[:, :, None], 3, axis=2)
            if n % every == 0:
                raw = face_dicts(rec.analyze([rgb])[0])
                last = smoother.update(raw)
                processed += 1
                if last:
                    with_face += 1
                    top = max(last, key=lambda f: (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]))
                    counts[top["label"]] += 1
                if cw:
                    t = round(n / fps, 4)
                    if not last:
                        cw.writerow([n, t, "", "", "", "", "", "", "", "", "", *[""] * len(labels)])
                    for i, f in enumerate(last):
                        cw.writerow([n, t, i, f["track"], *[round(v, 2) for v in f["box"]], f["label"],
                                     round(f["score"], 6), f["raw_label"],
                                     *[round(f["probs"][k], 6) for k in labels]])
            if video_path is not None or show:
                shown = annotate(rgb, last)
                if video_path is not None:
                    if writer is None:
                        writer, out_video = _video_writer(video_path, fps, (shown.shape[1], shown.shape[0]))
                    writer.write(shown)
                if show:
                    cv2.imshow(f"litefer — {name} (q quits)", shown)
                    if (cv2.waitKey(1) & 0xFF) in (ord("q"), 27):
                        break
            n += 1
            if progress is not None and task is not None:
                progress.update(task, description=f"{name}: frame {n}")
    finally:
        if writer is not None:
            writer.release()
        if csv_f:
            csv_f.close()
        if show:
            cv2.destroyAllWindows()
    summary = {"frames": n, "processed": processed, "frames_with_faces": with_face, "fps": round(fps, 3),
               "labels": {k: round(v / processed, 4) for k, v in counts.items() if v} if processed else {}}
    if csv_path:
        summary["csv"] = str(csv_path)
    if out_video:
        summary["video"] = str(out_video)
    return summary


# --------------------------------------------------------------------------- the command


def _example_path() -> Path:
    # next to the package's code (importlib.resources trips over some editable installs)
    return Path(__file__).resolve().parents[1] / "assets" / "example.jpg"


def register(app: typer.Typer) -> None:
    @app.command("predict")
    def predict_cmd(
        paths: Optional[List[Path]] = typer.Argument(None, help="Images, folders (searched recursively) or videos."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for predictions.jsonl/.csv, "
                                           "annotated images and video outputs (never an input folder)."),
        fmt: str = typer.Option("json", "--format", "-f", help="stdout format: json (one line per image) or csv."),
        annotate_: bool = typer.Option(False, "--annotate", help="Save annotated images (needs --out)."),
        video: bool = typer.Option(False, "--video", help="Treat the given files as videos (video file "
                                   "extensions are recognised anyway)."),
        every: int = typer.Option(1, "--every", min=1, help="Videos: analyse every K-th frame."),
        smooth: int = typer.Option(1, "--smooth", min=1, help="Videos/webcam: average each face's "
                                   "probabilities over its last N analysed frames."),
        webcam: Optional[int] = typer.Option(None, "--webcam", min=0, help="Analyse webcam N live "
                                             "(a window needs a display; with --out it also records)."),
        max_frames: Optional[int] = typer.Option(None, "--max-frames", min=1, help="Stop a video/webcam after N frames."),
        device: str = typer.Option("cpu", "--device", help="cpu or cuda (torch backend)."),
        model: str = typer.Option("default", "--model", "-m", help="Bundled model name, checkpoint "
                                  "(.safetensors/.pt) or .onnx file."),
        no_detect: bool = typer.Option(False, "--no-detect", help="Each image is already a face crop."),
        detector: str = typer.Option("auto", "--detector", help="Face detector: auto, mtcnn, blazeface, "
                                     "blazeface_full, haar."),
        backend: str = typer.Option("torch", "--backend", help="Classifier backend: torch or onnx."),
        example: bool = typer.Option(False, "--example", help="Run on the bundled example photo."),
        recursive: bool = typer.Option(True, "--recursive/--no-recursive", help="Search folders recursively."),
        max_pixels: Optional[int] = typer.Option(None, "--max-pixels", min=1,
                                                 help="Refuse images larger than this (default 150 M pixels)."),
    ) -> None:
        """Predict facial expressions: JSON lines (or CSV) on stdout, errors on stderr."""
        fmt = fmt.lower()
        if fmt not in FORMATS:
            raise fail(f"--format must be json or csv, not {fmt!r}")
        if backend not in ("torch", "onnx"):
            raise fail(f"--backend must be torch or onnx, not {backend!r}")
        if device != "cpu" and not device.startswith("cuda"):
            raise fail(f"--device must be cpu or cuda[:N], not {device!r}")
        inputs = list(paths or [])
        if example:
            ex = _example_path()
            if not ex.is_file():
                raise fail(f"the bundled example photo is missing ({ex})")
            inputs.insert(0, ex)
        if not inputs and webcam is None:
            raise fail("give images, folders or videos to analyse (or --example, or --webcam N)")
        if annotate_ and out is None:
            raise fail("--annotate needs --out DIR (annotated images are never written next to the inputs)")
        if out is not None:
            out_r = out.resolve()
            for p in inputs:
                pr = p.resolve()
                if pr.is_dir() and _inside(out_r, pr):
                    raise fail(f"--out {out} is inside the input folder {p}; choose a folder outside it "
                               "(litefer never writes into an input folder)")
                if pr.is_file() and pr == out_r:
                    raise fail(f"--out {out} is an input file")
            if out.exists() and not out.is_dir():
                raise fail(f"--out {out} exists and is not a folder")
        items, scan_errors, skipped_videos = collect_inputs(inputs, recursive, video,
                                                            folder_videos=video or out is not None)
        if skipped_videos:
            console.print(f"note: skipped {skipped_videos} video file(s) found in folders; give --out DIR "
                          "(or --video) to analyse them", highlight=False, soft_wrap=True)
        vids = [str(it.path) for it in items if it.video]
        if vids and out is None:
            raise fail(f"video input ({', '.join(vids[:3])}) needs --out DIR for its per-frame CSV "
                       "and annotated video")

        try:
            from litefer.deploy.recognizer import Recognizer
            from litefer.vision.detect import DetectorUnavailable
        except ImportError as exc:
            raise fail(f"cannot import the recognizer: {exc}")
        try:
            det = None if no_detect else detector
            rec = Recognizer.from_pretrained(model, detector=det, device=device, backend=backend)
            if max_pixels:
                rec.max_pixels = int(max_pixels)
        except DetectorUnavailable as exc:
            raise fail(f"face detector {detector!r} is not available: {exc}")
        except KeyError as exc:
            raise fail(str(exc.args[0] if exc.args else exc))
        except Exception as exc:  # checkpoint/backend errors carry their own message
            raise fail(f"cannot load model {model!r}: {exc}")

        labels = rec.labels
        planner = None
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            input_files = {it.path.resolve() for it in items}
            planner = OutputPlanner(out, input_files)
        failed = len(scan_errors)
        for msg in scan_errors:
            console.print(f"[bold red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True)

        results_file = None
        if out is not None and any(not it.video for it in items):
            results_file = open(out / ("predictions.jsonl" if fmt == "json" else "predictions.csv"), "w",
                                encoding="utf-8", newline="")
        if fmt == "csv":
            head = _csv_line(csv_header(labels))
            sys.stdout.write(head)
            if results_file:
                results_file.write(head)

        def emit(line: str) -> None:
            sys.stdout.write(line)
            sys.stdout.flush()
            if results_file:
                results_file.write(line)

        def video_emit(record: dict) -> None:
            """A video's summary: a JSON line (json), a note on stderr (csv: stdout stays one table)."""
            if fmt == "json":
                emit(json.dumps(record) + "\n")
            else:
                v = record["video"]
                console.print(f"{record['path']}: {v['processed']} of {v['frames']} frame(s) analysed; "
                              f"per-frame CSV {v.get('csv', '-')}, annotated video {v.get('video', '-')}",
                              highlight=False, soft_wrap=True)

        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        show_bar = len(items) > 1 or any(it.video for it in items)
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=console, transient=True, disable=not show_bar)
        try:
            with progress:
                task = progress.add_task("predict", total=len(items))
                for it in items:
                    progress.update(task, description=str(it.path.name))
                    try:
                        if it.video:
                            _one_video(rec, it, planner, every, smooth, max_frames, video_emit, progress, task)
                        else:
                            _one_image(rec, it, planner, annotate_, fmt, labels, emit)
                    except (KeyboardInterrupt, BrokenPipeError):
                        raise
                    except Exception as exc:  # per-file: report and go on
                        failed += 1
                        msg = str(exc) or type(exc).__name__
                        if str(it.path) not in msg:
                            msg = f"{it.path}: {msg}"
                        progress.console.print(f"[bold red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True)
                    progress.advance(task)
            if webcam is not None:
                _webcam(rec, webcam, out, every, smooth, max_frames, video_emit)
        except _WebcamError as exc:
            raise fail(str(exc), code=1)
        except BrokenPipeError:  # stdout closed early (`| head`): stop quietly
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(1 if failed else 0)
        finally:
            if results_file:
                results_file.close()
        if failed:
            console.print(f"{failed} input(s) failed", highlight=False, soft_wrap=True)
            raise typer.Exit(1)


def _one_image(rec: Any, it: Item, planner: Optional[OutputPlanner], annotate_: bool, fmt: str,
               labels: list[str], emit) -> None:
    rgb = rec.load(it.path)
    faces = face_dicts(rec.analyze([rgb])[0])
    if annotate_ and planner is not None:
        import cv2
        target = planner.path(it.rel, "_annotated.jpg")
        bgr = annotate(rgb, faces)
        if not cv2.imwrite(str(target), bgr, [cv2.IMWRITE_JPEG_QUALITY, 92]):
            raise RuntimeError(f"cannot write {target}")
    if fmt == "json":
        emit(json.dumps({"path": str(it.path), "faces": faces}) + "\n")
    else:
        emit("".join(_csv_line(r) for r in csv_rows(str(it.path), faces, labels)))


def _one_video(rec: Any, it: Item, planner: Optional[OutputPlanner], every: int, smooth: int,
               max_frames: Optional[int], emit, progress: Any, task: Any) -> None:
    import cv2
    p = it.path
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    if p.is_file() and p.stat().st_size == 0:
        raise ValueError(f"{p}: empty file (0 bytes)")
    cap = cv2.VideoCapture(str(p))
    try:
        if not cap.isOpened():
            raise ValueError(f"{p}: cannot open as a video (not a video, or a codec OpenCV lacks)")
        assert planner is not None
        csv_path = planner.path(it.rel, ".frames.csv")
        video_path = planner.path(it.rel, ".annotated.mp4")
        summary = run_stream(rec, cap, p.name, every, smooth, csv_path, video_path, show=False,
                             max_frames=max_frames, progress=progress, task=task)
    finally:
        cap.release()
    if summary["frames"] == 0:
        raise ValueError(f"{p}: no frames could be read (not a video, or a codec OpenCV lacks)")
    emit({"path": str(p), "video": summary})


class _WebcamError(RuntimeError):
    pass


def _webcam(rec: Any, index: int, out: Optional[Path], every: int, smooth: int, max_frames: Optional[int],
            emit) -> None:
    import cv2
    show = has_display()
    if not show and out is None:
        raise _WebcamError("--webcam needs a display for its live window (none found: no $DISPLAY, or an OpenCV "
                           "without GUI support such as opencv-python-headless); give --out DIR to record "
                           "the annotated stream and per-frame CSV instead")
    cap = cv2.VideoCapture(int(index))
    try:
        if not cap.isOpened():
            raise _WebcamError(f"cannot open webcam {index} (no camera at that index, or no permission)")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        csv_path = video_path = None
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            csv_path, video_path = out / f"webcam{index}-{stamp}.frames.csv", out / f"webcam{index}-{stamp}.annotated.mp4"
        try:
            summary = run_stream(rec, cap, f"webcam {index}", every, smooth, csv_path, video_path, show=show,
                                 max_frames=max_frames)
        except KeyboardInterrupt:
            return
    finally:
        cap.release()
    if summary["frames"] == 0:
        raise _WebcamError(f"webcam {index} gave no frames")
    emit({"path": f"webcam:{index}", "video": summary})
