"""Decode once, load fast: an on-disk cache of decoded uint8 arrays.

Decoding ~36,000 small JPEG/PNG files takes seconds; loading the same pixels from
one uncompressed ``.npz`` takes a fraction of that.  Every entry is keyed by a
fingerprint of its *sources* (relative path, size and mtime of every file read, or of
the csv) plus the decoding options (``size``, ``color``), so editing, adding or
removing a source file gives a new key and the stale entry is simply never read again.

The cache folder is ``$LITEFER_CACHE`` or ``~/.cache/litefer`` (entries live in its
``data/`` sub-folder).  Entries are written atomically (temporary file + rename), so
concurrent processes (e.g. DDP ranks) building the same entry cannot corrupt it; no
pickles are stored (``allow_pickle=False`` on load).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from litefer.data.base import DatasetError

#: environment variable naming the cache folder
CACHE_ENV = "LITEFER_CACHE"
#: bump when the stored layout of an entry changes
CACHE_VERSION = 1
#: file name endings read as images
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")

#: counters of this process, for tests and timing reports
STATS = {"hits": 0, "misses": 0, "decoded": 0}


def cache_dir() -> Path:
    """The cache folder: ``$LITEFER_CACHE`` or ``~/.cache/litefer``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "litefer"


def file_signature(path: Path) -> tuple[int, int]:
    """(size, mtime_ns) of a file; a missing file is a DatasetError."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DatasetError("file not found", path=path) from None
    return st.st_size, st.st_mtime_ns


def fingerprint(items: Iterable) -> str:
    """sha1 of a JSON-serialisable description (file signatures, options)."""
    h = hashlib.sha1()
    h.update(json.dumps(list(items), sort_keys=True, default=str).encode())
    return h.hexdigest()


def files_fingerprint(files: Sequence, root) -> str:
    """Fingerprint of a list of files: relative path, size and mtime of each, in order."""
    parts = []
    stat = os.stat
    for f in files:
        try:
            st = stat(f)
        except FileNotFoundError:
            raise DatasetError("file not found", path=f) from None
        parts.append((rel_path(f, root), st.st_size, st.st_mtime_ns))
    return fingerprint(parts)


def rel_path(path, root) -> str:
    """``path`` relative to ``root`` as a posix string (plain string ops: fast for 10^5 files)."""
    p, r = os.fspath(path), os.fspath(root).rstrip(os.sep) + os.sep
    rel = p[len(r):] if p.startswith(r) else p
    return rel.replace(os.sep, "/") if os.sep != "/" else rel


def _entry_path(kind: str, key: str) -> Path:
    return cache_dir() / "data" / f"{kind}-{key[:24]}.npz"


def load_or_build(kind: str, key_parts: dict, build: Callable[[], dict], enabled: bool = True) -> dict:
    """The arrays of cache entry ``(kind, key_parts)``, building (and storing) them on a miss.

    ``build()`` returns a dict of numpy arrays (no object arrays).  With ``enabled=False``
    the cache is neither read nor written.
    """
    if not enabled:
        STATS["misses"] += 1
        return build()
    key = fingerprint([CACHE_VERSION, kind, key_parts])
    path = _entry_path(kind, key)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["__key__"]) == key:
                    out = {k: z[k] for k in z.files if k != "__key__"}
                    STATS["hits"] += 1
                    return out
        except Exception:  # a truncated or foreign file: rebuild it
            pass
    STATS["misses"] += 1
    arrays = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp.npz", dir=path.parent)
        os.close(fd)
        try:
            np.savez(tmp, __key__=np.array(key), **arrays)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError:  # a read-only cache folder only costs speed
        pass
    return arrays


def cache_entries() -> list[Path]:
    """The data cache's entry files."""
    d = cache_dir() / "data"
    return sorted(d.glob("*.npz")) if d.is_dir() else []


def clear_cache() -> tuple[int, int]:
    """Delete every data cache entry; returns (files, bytes) removed."""
    n = size = 0
    for p in cache_entries():
        try:
            size += p.stat().st_size
            p.unlink()
            n += 1
        except OSError:
            pass
    return n, size


# ------------------------------------------------------------------------------ decoding
def _decode_one(path: str, size: Optional[tuple[int, int]], color: str, box=None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            im.load()
            if box is not None:
                x, y, w, h = (int(v) for v in box)
                x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, im.width), min(y + h, im.height)
                if x1 <= x0 or y1 <= y0:
                    raise DatasetError(f"face box {box} lies outside the {im.width}x{im.height} image",
                                       path=path, field="face box")
                im = im.crop((x0, y0, x1, y1))
            if im.mode != color:
                if color == "L" and im.mode in ("I;16", "I;16B", "I"):
                    raise DatasetError(f"unsupported image mode {im.mode}", path=path, field="image")
                im = im.convert(color)
            if size is not None and im.size != size:
                im = im.resize(size, Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise DatasetError("image file not found", path=path, field="image") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DatasetError(f"cannot decode image ({exc})", path=path, field="image") from None


def norm_size(size) -> Optional[tuple[int, int]]:
    """``None``, an int (square) or a (width, height) pair, as (width, height)."""
    if size is None:
        return None
    if isinstance(size, (int, np.integer)):
        s = int(size)
        wh = (s, s)
    else:
        try:
            w, h = size
            wh = (int(w), int(h))
        except (TypeError, ValueError):
            raise ValueError(f"size must be an int or (width, height), got {size!r}") from None
    if min(wh) < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    return wh


def norm_color(color: str) -> str:
    c = str(color).upper()
    if c in ("L", "GRAY", "GREY", "GRAYSCALE"):
        return "L"
    if c == "RGB":
        return "RGB"
    raise ValueError(f"color must be 'L' (greyscale) or 'RGB', got {color!r}")


def decode_images(files: Sequence, root, size=None, color: str = "L",
                  cache: bool = True, workers: Optional[int] = None, boxes=None) -> np.ndarray:
    """Decode ``files`` to one uint8 array (N,H,W) (``color="L"``) or (N,H,W,3), cached.

    Without ``size`` every image must already have the same size (a DatasetError names
    the first one that differs); with ``size`` each is resized (bilinear) at load.
    ``boxes`` (optional, one ``(x, y, w, h)`` per file) crops each image first (clipped
    to the image).
    """
    files = [os.fspath(f) for f in files]
    root = Path(root)
    wh = norm_size(size)
    color = norm_color(color)

    def build() -> dict:
        t0 = time.perf_counter()
        n_workers = workers or min(2, os.cpu_count() or 1)
        bx = [None] * len(files) if boxes is None else list(boxes)
        if n_workers > 1 and len(files) > 256:
            with ThreadPoolExecutor(n_workers) as ex:
                imgs = list(ex.map(lambda fb: _decode_one(fb[0], wh, color, fb[1]), zip(files, bx)))
        else:
            imgs = [_decode_one(f, wh, color, b) for f, b in zip(files, bx)]
        STATS["decoded"] += len(imgs)
        if not imgs:
            shape = (0, *(wh[::-1] if wh else (0, 0))) + ((3,) if color == "RGB" else ())
            return {"images": np.zeros(shape, np.uint8), "seconds": np.array(0.0)}
        first = imgs[0].shape
        for f, im in zip(files, imgs):
            if im.shape != first:
                raise DatasetError(
                    f"image is {im.shape[1]}x{im.shape[0]} but {rel_path(files[0], root)} is "
                    f"{first[1]}x{first[0]}; pass size= to resize at load", path=f, field="image size")
        return {"images": np.stack(imgs), "seconds": np.array(time.perf_counter() - t0)}

    if boxes is not None and len(boxes) != len(files):
        raise ValueError(f"{len(files)} files but {len(boxes)} boxes")
    key = {"files": files_fingerprint(files, root), "root": str(root.resolve()), "size": wh, "color": color,
           "boxes": None if boxes is None else fingerprint([[int(v) for v in b] for b in boxes])}
    return load_or_build("images", key, build, enabled=cache)["images"]


def list_images(folder) -> list[str]:
    """Paths (strings) of the image files directly in ``folder``, sorted by name; any other
    non-hidden entry is a DatasetError."""
    out = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            raise DatasetError("unexpected sub-folder in a class folder", path=entry.path)
        if os.path.splitext(entry.name)[1].lower() not in IMAGE_EXTS:
            raise DatasetError(f"not an image file (expected one of {', '.join(IMAGE_EXTS)})", path=entry.path)
        out.append(entry.path)
    return out
