"""Loading images from anything a user has: paths, bytes, PIL images, numpy arrays.

Everything ends as a contiguous uint8 RGB array (H, W, 3):

- files and bytes are decoded completely (a truncated file fails here, not later),
  EXIF orientation is applied, the first frame of an animation/multi-page file is
  used, and images over ``max_pixels`` are refused *before* decoding;
- grey, grey+alpha, palette, RGBA, CMYK, 1-bit, 16-bit and float images are
  converted (alpha is dropped: composited on black would hide faces on transparent
  backgrounds no better than dropping it; 16-bit keeps its top 8 bits);
- numpy arrays are taken as RGB(A) unless ``color="bgr"`` (OpenCV frames).

Every failure is an :class:`ImageLoadError` (a ``ValueError``) whose message names
the file and says what is wrong.
"""
from __future__ import annotations

import io
import os
import struct
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator, Union

import numpy as np

#: images larger than this many pixels are refused (a 12,000 x 12,000 photo is 144 M)
MAX_PIXELS = 150_000_000
IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                        ".ppm", ".pgm", ".pbm", ".pnm", ".jfif", ".tga", ".ico"})
VIDEO_EXTS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"})

ImageInput = Union[str, os.PathLike, bytes, bytearray, np.ndarray, Any]


class ImageLoadError(ValueError):
    """An input that is not a usable image; the message names it and says why."""

    def __init__(self, message: str, source: Any = None):
        self.source = source
        super().__init__(f"{source}: {message}" if source is not None else message)


def describe(src: Any) -> str:
    """A short name for an input, for messages."""
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    if isinstance(src, np.ndarray):
        return f"array{tuple(src.shape)}"
    if isinstance(src, (bytes, bytearray)):
        return f"<{len(src)} bytes>"
    return f"<{type(src).__name__}>"


def is_image_path(p: str | os.PathLike) -> bool:
    return Path(p).suffix.lower() in IMAGE_EXTS


def is_video_path(p: str | os.PathLike) -> bool:
    return Path(p).suffix.lower() in VIDEO_EXTS


# --------------------------------------------------------------------------- numpy


def to_rgb(arr: np.ndarray, color: str = "rgb") -> np.ndarray:
    """A numpy image as contiguous uint8 RGB (H, W, 3).

    Accepts (H, W), (H, W, 1), (H, W, 3), (H, W, 4); uint8, uint16 (top 8 bits),
    other integers (taken as 0-255, or 0-65535 when larger values occur), bool, and
    floats (0-1 when the maximum is at most 1, else 0-255).  ``color`` is the channel
    order of a 3/4-channel array: ``"rgb"`` or ``"bgr"`` (OpenCV).
    """
    if color not in ("rgb", "bgr"):
        raise ValueError(f"color must be 'rgb' or 'bgr', not {color!r}")
    if not isinstance(arr, np.ndarray):
        raise ImageLoadError(f"expected a numpy array, got {type(arr).__name__}")
    a = arr
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ImageLoadError(f"an image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); "
                             f"got shape {arr.shape}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ImageLoadError(f"the image has no pixels (shape {arr.shape})")
    a = _to_uint8(a)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    else:
        a = a[:, :, :3]
        if color == "bgr":
            a = a[:, :, ::-1]
    return np.ascontiguousarray(a)


def _to_uint8(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if a.dtype == np.uint16:
        return (a >> 8).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        hi = int(a.max()) if a.size else 0
        if hi > 255:
            return (np.clip(a, 0, 65535) // 257).astype(np.uint8)
        return np.clip(a, 0, 255).astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        a = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=255.0, neginf=0.0)
        hi = float(a.max()) if a.size else 0.0
        if hi <= 1.0:
            a = a * 255.0
        return np.clip(a + 0.5, 0, 255).astype(np.uint8)
    raise ImageLoadError(f"unsupported image dtype {a.dtype}")


# --------------------------------------------------------------------------- PIL


def pil_to_rgb(img: Any, source: Any = None) -> np.ndarray:
    """A PIL image (any mode) as uint8 RGB, EXIF orientation applied."""
    from PIL import ImageOps
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block: keep the pixels as stored
        pass
    mode = img.mode
    if mode in ("RGB", "L"):
        arr = np.asarray(img)
    elif mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img)
        if mode.startswith("I;16"):
            arr = arr.astype(np.uint16)
    elif mode in ("1",):
        arr = np.asarray(img.convert("L"))
    elif mode in ("LA", "La"):
        arr = np.asarray(img.convert("L"))
    elif mode in ("P", "PA"):
        arr = np.asarray(img.convert("RGBA"))
    else:  # RGBA, RGBa, CMYK, YCbCr, LAB, HSV, RGBX …
        try:
            arr = np.asarray(img.convert("RGB"))
        except (ValueError, OSError) as exc:
            raise ImageLoadError(f"cannot convert a {mode} image to RGB ({exc})", source) from None
    try:
        return to_rgb(arr)
    except ImageLoadError as exc:
        raise ImageLoadError(str(exc), source) from None


#: leading bytes of the common image formats (to tell "corrupt image" from "not an image")
_SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
               (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"RIFF", "WebP"))


def _sniff(fp: Any) -> str | None:
    try:
        fp.seek(0)
        head = fp.read(16)
    except (OSError, AttributeError):
        return None
    for sig, name in _SIGNATURES:
        if head.startswith(sig) and (name != "WebP" or head[8:12] == b"WEBP"):
            return name
    return None


def _open_pil(fp: Any, source: Any, max_pixels: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(fp) as img:
                w, h = img.size
                if w <= 0 or h <= 0:
                    raise ImageLoadError(f"the image has no pixels ({w}x{h})", source)
                if w * h > max_pixels:
                    raise ImageLoadError(f"the image is {w}x{h} = {w * h:,} pixels; at most {max_pixels:,} "
                                         "are accepted (raise max_pixels to allow it)", source)
                if getattr(img, "n_frames", 1) > 1:
                    img.seek(0)
                img.load()  # decodes everything: a truncated file raises here
                return pil_to_rgb(img, source)
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        kind = _sniff(fp)
        if kind:
            raise ImageLoadError(f"looks like a {kind} file but cannot decode it (corrupt or truncated)",
                                 source) from None
        raise ImageLoadError("not an image file (or a format Pillow cannot read)", source) from None
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(f"the image has too many pixels ({exc})", source) from None
    except MemoryError:
        raise ImageLoadError("not enough memory to decode the image", source) from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, KeyError,
            ZeroDivisionError, struct.error) as exc:
        msg = str(exc) or type(exc).__name__
        if "truncated" in msg.lower():
            msg = f"the file is truncated or corrupt ({msg})"
        raise ImageLoadError(f"cannot decode the image: {msg}", source) from None


# --------------------------------------------------------------------------- anything


def load_image(src: ImageInput, color: str = "rgb", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """uint8 RGB (H, W, 3) of a path, bytes, a PIL image or a numpy array.

    ``color`` applies to numpy arrays only (``"bgr"`` for OpenCV frames); files,
    bytes and PIL images know their own colour space.
    """
    if isinstance(src, np.ndarray):
        if src.size > max_pixels * 4:
            raise ImageLoadError(f"the array has {src.size:,} values; at most {max_pixels:,} pixels are accepted",
                                 describe(src))
        try:
            return to_rgb(src, color)
        except ImageLoadError as exc:
            raise ImageLoadError(str(exc), describe(src)) from None
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
        if not data:
            raise ImageLoadError("empty data (0 bytes)", describe(src))
        return _open_pil(io.BytesIO(data), describe(src), max_pixels)
    if isinstance(src, (str, os.PathLike)):
        p = Path(src)
        if not p.exists():
            raise ImageLoadError("no such file", str(src))
        if p.is_dir():
            raise ImageLoadError("is a folder, not an image file", str(src))
        try:
            size = p.stat().st_size
        except OSError as exc:
            raise ImageLoadError(f"cannot read the file ({exc.strerror or exc})", str(src)) from None
        if size == 0:
            raise ImageLoadError("empty file (0 bytes)", str(src))
        try:
            with open(p, "rb") as f:
                return _open_pil(f, str(src), max_pixels)
        except PermissionError:
            raise ImageLoadError("permission denied", str(src)) from None
        except IsADirectoryError:
            raise ImageLoadError("is a folder, not an image file", str(src)) from None
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        Image = None
    if Image is not None and isinstance(src, Image.Image):
        w, h = src.size
        if w * h > max_pixels:
            raise ImageLoadError(f"the image is {w}x{h}; at most {max_pixels:,} pixels are accepted", describe(src))
        try:
            src.load()
        except Exception as exc:
            raise ImageLoadError(f"cannot decode the image: {exc}", describe(src)) from None
        return pil_to_rgb(src, describe(src))
    if hasattr(src, "__array__"):  # e.g. a torch tensor on the CPU (H, W, C)
        return load_image(np.asarray(src), color=color, max_pixels=max_pixels)
    raise ImageLoadError(f"unsupported input type {type(src).__name__}: give a file path, bytes, "
                         "a PIL image or a numpy array")


def scan_folder(folder: str | os.PathLike, recursive: bool = True) -> tuple[list[Path], list[Path], list[tuple[Path, str]]]:
    """(image files, video files, problems) in ``folder``, each list sorted.

    Hidden files and folders are skipped; files of other types are ignored. ``problems``
    are the entries that look like files but cannot be read as one (a broken or looping
    symlink, a symlinked folder, which is not followed), each with the reason, so that a
    caller can say what it left out instead of dropping it silently."""
    from litefer.pathguard import link_problem
    p = Path(folder)
    images: list[Path] = []
    videos: list[Path] = []
    problems: list[tuple[Path, str]] = []
    for q in (p.rglob("*") if recursive else p.glob("*")):
        if any(part.startswith(".") for part in q.relative_to(p).parts):
            continue
        if not q.is_file():
            why = link_problem(q)
            if why:
                problems.append((q, why))
            continue
        if is_image_path(q):
            images.append(q)
        elif is_video_path(q):
            videos.append(q)
    return sorted(images), sorted(videos), sorted(problems)


def iter_image_files(paths: Iterable[str | os.PathLike], recursive: bool = True,
                     videos: bool = False) -> Iterator[Path]:
    """Files to process: files as given; folders expanded (sorted, recursively by
    default) to the image files in them (and video files with ``videos=True``).
    Hidden files and folders inside a folder are skipped; a broken or looping symlink
    in a folder is skipped with a warning naming it (:func:`scan_folder`)."""
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            imgs, vids, problems = scan_folder(p, recursive)
            for q, why in problems:
                warnings.warn(f"{q}: skipped: {why}", UserWarning, stacklevel=2)
            yield from sorted(imgs + vids) if videos else imgs
        else:
            yield p
