"""``litefer predict``: expressions of the faces in images, folders, videos and a webcam.

At a terminal a table (file, face box, label, score) and a one-line summary; when
stdout is piped, or with ``--format json``, one JSON line per image (``--format csv``:
CSV rows, one per face)::

    {"path": "a.jpg", "faces": [{"box": [x1, y1, x2, y2], "landmarks": [[x, y], ...] | null,
                                 "probs": {"happy": 0.93, ...}, "label": "happy", "score": 0.93}]}

Errors go to stderr, naming the file; the batch goes on, and the exit code is 1 when
any input failed (2 for a usage error or a model that cannot be loaded).  With
``--out DIR`` the results are also saved there (``predictions.jsonl``/``.csv``),
with ``--annotate`` the annotated images too; videos write ``<name>.frames.csv``
and ``<name>.annotated.mp4``.  Nothing is ever written into an input folder.

Images are decoded by a background thread while the previous batch is analysed, and
up to :data:`BATCH_IMAGES` images go through the recognizer together, so folders of
crops (``--no-detect``) are classified in batches.  The default ``--backend auto``
runs the bundled model on ONNX Runtime without importing torch; ``--threads`` (1) is
the inference thread policy.  Frame sources, the tracker/smoother and the annotator
live in :mod:`litefer.vision.video`.
"""
from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, List, Optional

import numpy as np
import typer
from rich.markup import escape

from litefer.cli._common import console, fail
from litefer.paths import BUNDLED
# frame sources, the face tracker/smoother and the annotator are library code, shared
# with the mood player; the names stay importable from here
from litefer.vision.video import Smoother, annotate, has_display, read_frames, video_writer  # noqa: F401
from litefer.vision.video import capture_fps

#: stdout formats: a table for a person at a terminal, JSON lines / CSV for programs
FORMATS = ("table", "json", "csv")
#: images classified together (crops and many-face photos are batched; decoding overlaps)
BATCH_IMAGES = 64

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
    from litefer.vision.io import is_video_path, scan_folder
    items, errors, skipped = [], [], 0
    for p in paths:
        if p.is_dir():
            images, videos, problems = scan_folder(p, recursive)
            for q, why in problems:  # never skipped silently
                console.print(f"note: skipped {escape(str(q))}: {why}", highlight=False, soft_wrap=True)
            left = 0 if folder_videos else len(videos)
            skipped += left
            found = sorted(images + videos) if folder_videos else images
            if not found and not left:
                errors.append(f"{p}: no image or video files in this folder")
            for q in found:
                items.append(Item(q, Path(p.resolve().name or "root") / q.relative_to(p), is_video_path(q)))
        else:
            items.append(Item(p, Path(p.name), force_video or is_video_path(p)))
    return items, errors, skipped


# --------------------------------------------------------------------------- video


def run_stream(rec: Any, cap: Any, name: str, every: int, smooth: int, csv_path: Optional[Path],
               video_path: Optional[Path], show: bool, max_frames: Optional[int] = None,
               fps_hint: float = 25.0, progress: Any = None, task: Any = None) -> dict:
    """Frames of an opened ``cv2.VideoCapture`` through the recognizer; returns a summary."""
    import cv2
    labels = rec.labels
    fps = capture_fps(cap, fps_hint)
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
        for i, t, rgb, sampled in read_frames(cap, fps, every=every, max_frames=max_frames):
            n = i + 1  # frames read so far
            if sampled:
                raw = face_dicts(rec.analyze([rgb])[0])
                last = smoother.update(raw)
                processed += 1
                if last:
                    with_face += 1
                    top = max(last, key=lambda f: (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]))
                    counts[top["label"]] += 1
                if cw:
                    t = round(t, 4)
                    if not last:
                        cw.writerow([i, t, "", "", "", "", "", "", "", "", "", *[""] * len(labels)])
                    for j, f in enumerate(last):
                        cw.writerow([i, t, j, f["track"], *[round(v, 2) for v in f["box"]], f["label"],
                                     round(f["score"], 6), f["raw_label"],
                                     *[round(f["probs"][k], 6) for k in labels]])
            if video_path is not None or show:
                shown = annotate(rgb, last)
                if video_path is not None:
                    if writer is None:
                        writer, out_video = video_writer(video_path, fps, (shown.shape[1], shown.shape[0]))
                    writer.write(shown)
                if show:
                    cv2.imshow(f"litefer — {name} (q quits)", shown)
                    if (cv2.waitKey(1) & 0xFF) in (ord("q"), 27):
                        break
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
    from litefer.paths import example_photo
    return example_photo()


def register(app: typer.Typer) -> None:
    @app.command("predict")
    def predict_cmd(
        paths: Optional[List[Path]] = typer.Argument(None, help="Images, folders (searched recursively) or videos."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for predictions.jsonl/.csv, "
                                           "annotated images and video outputs (never an input folder)."),
        fmt: Optional[str] = typer.Option(None, "--format", "-f", help="stdout format: table (the default at a "
                                          "terminal), json (one line per image; the default when piped) or csv."),
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
        model: str = typer.Option("default", "--model", "-m", help=f"Bundled model name ({', '.join(BUNDLED)}: "
                                  "FER+'s 8 classes / FER2013's 7), checkpoint (.safetensors/.pt) or .onnx file."),
        no_detect: bool = typer.Option(False, "--no-detect", help="Each image is already a face crop."),
        detector: str = typer.Option("auto", "--detector", help="Face detector: auto (yunet), yunet, mtcnn, "
                                     "blazeface, blazeface_full, haar."),
        backend: str = typer.Option("auto", "--backend", help="Classifier backend: auto (ONNX Runtime when "
                                    "the model has an ONNX export at hand, else torch), onnx or torch."),
        threads: int = typer.Option(1, "--threads", min=1, help="Inference threads (detector and classifier; "
                                    "1 keeps latency steady when other processes load the cores)."),
        example: bool = typer.Option(False, "--example", help="Run on the bundled example photo."),
        recursive: bool = typer.Option(True, "--recursive/--no-recursive", help="Search folders recursively."),
        max_pixels: Optional[int] = typer.Option(None, "--max-pixels", min=1,
                                                 help="Refuse images larger than this (default 150 M pixels)."),
        min_face: Optional[int] = typer.Option(None, "--min-face", min=1, help="Smallest face width searched "
                                               "for, in pixels (yunet, mtcnn; auto's yunet: 12, e.g. 10 "
                                               "for crowd photos with tiny faces, at ~1.3x the time)."),
    ) -> None:
        """Predict facial expressions: a table at a terminal, JSON lines (or CSV) when piped; errors on stderr."""
        started = time.perf_counter()
        fmt = (fmt or ("table" if sys.stdout.isatty() else "json")).lower()
        if fmt not in FORMATS:
            raise fail(f"--format must be table, json or csv, not {fmt!r}")
        backend = backend.lower()
        if backend not in ("auto", "torch", "onnx"):
            raise fail(f"--backend must be auto, torch or onnx, not {backend!r}")
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
            from litefer.pathguard import OutputPathError, check_output_folder
            try:  # never into/around an input, under a file, in /proc or /sys, onto a folder of our names
                check_output_folder(out, inputs, writes=("predictions.csv" if fmt == "csv" else "predictions.jsonl",))
            except OutputPathError as exc:
                raise fail(str(exc))
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
        det_kw = {}
        if min_face is not None:
            if no_detect:
                raise fail("--min-face needs a face detector (not --no-detect)")
            if detector.strip().lower().replace("-", "_") not in ("auto", "yunet", "mtcnn"):
                raise fail(f"--min-face applies to the yunet and mtcnn detectors, not {detector!r}")
            det_kw["min_face"] = int(min_face)
        try:
            det = None if no_detect else detector
            rec = Recognizer.from_pretrained(model, detector=det, device=device, backend=backend, threads=threads,
                                             detector_kwargs=det_kw or None)
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
            from litefer.pathguard import OutputPathError, make_output_folder
            try:
                make_output_folder(out)
            except OutputPathError as exc:
                raise fail(str(exc))
            input_files = {it.path.resolve() for it in items}
            planner = OutputPlanner(out, input_files)
        failed = len(scan_errors)
        for msg in scan_errors:
            console.print(f"[bold red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True)

        results_file = None
        if out is not None and any(not it.video for it in items):
            results_file = open(out / ("predictions.csv" if fmt == "csv" else "predictions.jsonl"), "w",
                                encoding="utf-8", newline="")
        if fmt == "csv":
            head = _csv_line(csv_header(labels))
            sys.stdout.write(head)
            if results_file:
                results_file.write(head)
        table = TableWriter(items, labels) if fmt == "table" else None

        def emit_image(path: str, faces: list[dict]) -> None:
            """One image's result: a JSON line, CSV rows or table rows on stdout (and into --out)."""
            if table is not None:
                sys.stdout.write(table.rows(path, faces))
                sys.stdout.flush()
                if results_file:
                    results_file.write(json.dumps({"path": path, "faces": faces}) + "\n")
                return
            emit(json.dumps({"path": path, "faces": faces}) + "\n" if fmt == "json"
                 else "".join(_csv_line(r) for r in csv_rows(path, faces, labels)))

        def emit(line: str) -> None:
            sys.stdout.write(line)
            sys.stdout.flush()
            if results_file:
                results_file.write(line)

        def video_emit(record: dict) -> None:
            """A video's summary: a JSON line (json), a note on stderr (csv, table: stdout stays one table)."""
            if fmt == "json":
                emit(json.dumps(record) + "\n")
            else:
                v = record["video"]
                console.print(f"{record['path']}: {v['processed']} of {v['frames']} frame(s) analysed; "
                              f"per-frame CSV {v.get('csv', '-')}, annotated video {v.get('video', '-')}",
                              highlight=False, soft_wrap=True)

        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        # the table's own rows show the progress at a terminal
        show_bar = (len(items) > 1 or any(it.video for it in items)) and \
            (table is None or all(it.video for it in items))
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=console, transient=True, disable=not show_bar)
        try:
            with progress:
                task = progress.add_task("predict", total=len(items))

                def report(it: Item, exc: BaseException) -> None:  # per-file: report and go on
                    nonlocal failed
                    failed += 1
                    msg = str(exc) or type(exc).__name__
                    if str(it.path) not in msg:
                        msg = f"{it.path}: {msg}"
                    progress.console.print(f"[bold red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True)

                for kind, group in _groups(items):
                    if kind == "video":
                        for it in group:
                            progress.update(task, description=str(it.path.name))
                            try:
                                _one_video(rec, it, planner, every, smooth, max_frames, video_emit, progress, task)
                            except (KeyboardInterrupt, BrokenPipeError):
                                raise
                            except Exception as exc:
                                report(it, exc)
                            progress.advance(task)
                        continue
                    for it, faces, rgb, exc in _image_results(rec, group, threads):
                        progress.update(task, description=str(it.path.name))
                        try:
                            if exc is not None:
                                raise exc
                            if annotate_ and planner is not None:
                                _save_annotated(planner, it, rgb, faces)
                            emit_image(str(it.path), faces)
                        except (KeyboardInterrupt, BrokenPipeError):
                            raise
                        except Exception as err:
                            report(it, err)
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
        if table is not None:
            sys.stdout.write(table.summary(failed, time.perf_counter() - started))
            sys.stdout.flush()
        if failed:
            console.print(f"{failed} input(s) failed", highlight=False, soft_wrap=True)
            raise typer.Exit(1)


def _groups(items: list[Item]) -> Iterator[tuple[str, list[Item]]]:
    """Consecutive runs of images (``"images"``) and of videos (``"video"``), in input order."""
    run: list[Item] = []
    kind = None
    for it in items:
        k = "video" if it.video else "images"
        if k != kind and run:
            yield kind, run
            run = []
        kind = k
        run.append(it)
    if run:
        yield kind, run


def _image_results(rec: Any, items: list[Item], threads: int = 1,
                   batch: Optional[int] = None) -> Iterator[tuple[Item, list[dict], Any, Optional[BaseException]]]:
    """``(item, faces, rgb, error)`` per image, in order.  Images are decoded by a
    background thread while the previous batch is classified, and up to ``batch``
    images go through the recognizer together (their faces are classified in one batch:
    crop folders (``--no-detect``) and many-face photos run as batches)."""
    from concurrent.futures import ThreadPoolExecutor
    batch = int(batch or BATCH_IMAGES)

    def load(it: Item):
        try:
            return rec.load(it.path), None
        except Exception as exc:  # reported in order, with the others
            return None, exc

    with ThreadPoolExecutor(max_workers=max(1, min(2, threads))) as pool:
        futures = [pool.submit(load, it) for it in items[:2 * batch]]
        nxt = len(futures)
        for start in range(0, len(items), batch):
            chunk = items[start:start + batch]
            loaded = [futures[start + k].result() for k in range(len(chunk))]
            # keep the decoder one batch ahead
            while nxt < min(len(items), start + 3 * batch):
                futures.append(pool.submit(load, items[nxt]))
                nxt += 1
            ok = [k for k, (rgb, exc) in enumerate(loaded) if exc is None]
            try:
                per_image = rec.analyze([loaded[k][0] for k in ok]) if ok else []
                results = dict(zip(ok, per_image))
            except Exception:  # a batch failed: redo its images one by one, to name the culprit
                results = {}
            for k, it in enumerate(chunk):
                rgb, exc = loaded[k]
                futures[start + k] = None  # free the decoded image once handled
                if exc is not None:
                    yield it, [], None, exc
                    continue
                if k in results:
                    yield it, face_dicts(results[k]), rgb, None
                    continue
                try:
                    one, err = face_dicts(rec.analyze([rgb])[0]), None
                except Exception as exc:
                    one, err = [], exc
                yield it, one, rgb, err


def _save_annotated(planner: OutputPlanner, it: Item, rgb: np.ndarray, faces: list[dict]) -> None:
    import cv2
    target = planner.path(it.rel, "_annotated.jpg")
    bgr = annotate(rgb, faces)
    if not cv2.imwrite(str(target), bgr, [cv2.IMWRITE_JPEG_QUALITY, 92]):
        raise RuntimeError(f"cannot write {target}")


class TableWriter:
    """Rows for a person at a terminal: file, face box, label, score; then a one-line summary."""

    BOX = 22

    def __init__(self, items: list[Item], labels: list[str]):
        import shutil
        room = shutil.get_terminal_size((100, 24)).columns - self.BOX - 9 - 5 - 6
        self.width = max(12, min(room, max([len(str(it.path)) for it in items] + [4])))
        self.images = self.faces = 0
        self.counts: dict[str, int] = {}
        self.header_done = False

    def _file(self, path: str) -> str:
        return path if len(path) <= self.width else "…" + path[-(self.width - 1):]

    def rows(self, path: str, faces: list[dict]) -> str:
        out = []
        if not self.header_done:
            out.append(f"{'file':<{self.width}}  {'box x1, y1, x2, y2':<{self.BOX}}  {'label':<9}  score\n")
            self.header_done = True
        self.images += 1
        if not faces:
            out.append(f"{self._file(path):<{self.width}}  no face found\n")
        for f in faces:
            self.faces += 1
            self.counts[f["label"]] = self.counts.get(f["label"], 0) + 1
            box = ", ".join(f"{v:.0f}" for v in f["box"])
            out.append(f"{self._file(path):<{self.width}}  {box:<{self.BOX}}  {f['label']:<9}  {f['score']:.2f}\n")
        return "".join(out)

    def summary(self, failed: int, seconds: float) -> str:
        labels = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items(), key=lambda kv: -kv[1]))
        return (f"{self.images} image(s), {self.faces} face(s)" + (f": {labels}" if labels else "")
                + (f"; {failed} failed" if failed else "") + f"; {seconds:.1f} s\n")


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
