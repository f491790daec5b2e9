"""FER2013: the original ``fer2013.csv`` and the image-folder release.

Two layouts, detected from ``root`` (or forced with ``source="csv"|"folder"``):

* **csv** — ``root/fer2013.csv`` (or ``root`` is the csv): header ``emotion,pixels,Usage``,
  one row per face, ``pixels`` 2304 space-separated grey levels (48x48), ``Usage`` one of
  ``Training``/``PublicTest``/``PrivateTest``.  ids are ``row<N>`` (N = 0-based data row,
  the order fer2013new.csv follows).
* **folder** — the Kaggle image-folder release: ``root/{train,test}/<class name>/`` with
  ``Training_*``, ``PublicTest_*``, ``PrivateTest_*`` files (the prefix is the Usage
  column).  Class folders are mapped to labels by *name* (their sorted order differs
  from the csv's index order).  ids are paths relative to ``root``
  (``test/angry/PrivateTest_10131363.jpg``).

Splits: ``train`` (Training), ``publictest`` (alias ``valid``/``val``), ``privatetest``,
``test`` (PublicTest + PrivateTest, i.e. the ``test/`` folder) and ``all``.  Labels are
:data:`litefer.labels.FER2013` (0 angry ... 6 neutral).  Decoded pixels are cached
(:mod:`litefer.data.cache`).
"""
from __future__ import annotations

import csv
import os
import re
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from litefer import labels as L
from litefer.data.base import DatasetError, FaceArrays
from litefer.data.cache import decode_images, file_signature, load_or_build, rel_path
from litefer.data.folder import scan_class_tree

USAGES = ("Training", "PublicTest", "PrivateTest")
#: split name (lower case) -> the Usage values it holds
SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("Training",), "training": ("Training",),
    "publictest": ("PublicTest",), "public": ("PublicTest",), "valid": ("PublicTest",), "val": ("PublicTest",),
    "privatetest": ("PrivateTest",), "private": ("PrivateTest",),
    "test": ("PublicTest", "PrivateTest"),
    "all": USAGES,
}
CANONICAL_SPLIT = {"Training": "train", "PublicTest": "publictest", "PrivateTest": "privatetest"}
_PREFIX = re.compile(r"^(Training|PublicTest|PrivateTest)_")


def split_usages(split: str, table: dict[str, tuple[str, ...]] = SPLITS) -> tuple[str, ...]:
    key = str(split).strip().lower()
    if key not in table:
        raise DatasetError(f"unknown split {split!r}; known: {', '.join(table)}", field="split")
    return table[key]


def split_name(usages: tuple[str, ...]) -> str:
    if len(usages) == 1:
        return CANONICAL_SPLIT[usages[0]]
    return "test" if set(usages) == {"PublicTest", "PrivateTest"} else "all"


# ------------------------------------------------------------------------------ csv
def _parse_csv(path: Path) -> dict:
    """All rows of fer2013.csv as arrays (validated; errors name line and field)."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise DatasetError("empty file (expected header emotion,pixels,Usage)", path=path, line=1) from None
        cols = {h.strip(): i for i, h in enumerate(header)}
        for need in ("emotion", "pixels", "Usage"):
            if need not in cols:
                raise DatasetError(f"header lacks column {need!r} (got {header})", path=path, line=1, field=need)
        ie, ip, iu = cols["emotion"], cols["pixels"], cols["Usage"]
        ncol = len(header)
        images, emotions, usages, lines = [], [], [], []
        usage_code = {u: i for i, u in enumerate(USAGES)}
        line = 1
        for row in reader:
            line = reader.line_num
            if not row:
                raise DatasetError("empty row", path=path, line=line)
            if len(row) != ncol:
                raise DatasetError(f"{len(row)} fields, expected {ncol}", path=path, line=line)
            try:
                e = int(row[ie])
            except ValueError:
                raise DatasetError(f"not an integer: {row[ie]!r}", path=path, line=line, field="emotion") from None
            if not 0 <= e < len(L.FER2013):
                raise DatasetError(f"emotion {e} outside 0..{len(L.FER2013) - 1}", path=path, line=line,
                                   field="emotion")
            u = row[iu].strip()
            if u not in usage_code:
                raise DatasetError(f"unknown Usage {u!r} (expected {', '.join(USAGES)})", path=path,
                                   line=line, field="Usage")
            ntok = len(row[ip].split())
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    px = np.fromstring(row[ip], dtype=np.int64, sep=" ")  # text mode, fast
            except ValueError:  # numpy >= 2.3 raises at a token that is not an integer
                px = np.zeros(0, np.int64)
            if len(px) != ntok:  # older numpy stops at the bad token
                raise DatasetError(f"pixels has a value that is not an integer, expected {48 * 48} integers",
                                   path=path, line=line, field="pixels")
            if ntok != 48 * 48:
                raise DatasetError(f"pixels has {ntok} values, expected {48 * 48} integers", path=path,
                                   line=line, field="pixels")
            if px.min() < 0 or px.max() > 255:
                raise DatasetError("pixel value outside 0..255", path=path, line=line, field="pixels")
            images.append(px.astype(np.uint8).reshape(48, 48))
            emotions.append(e)
            usages.append(usage_code[u])
            lines.append(line)
    return {
        "images": np.stack(images) if images else np.zeros((0, 48, 48), np.uint8),
        "emotion": np.asarray(emotions, np.int64), "usage": np.asarray(usages, np.int8),
        "line": np.asarray(lines, np.int64),
    }


def read_fer2013_csv(path, cache: bool = True) -> dict:
    """Cached, validated contents of a fer2013.csv: images, emotion, usage (index into USAGES), line."""
    path = Path(path)
    size, mtime = file_signature(path)
    return load_or_build("fer2013csv", {"path": str(path.resolve()), "size": size, "mtime": mtime},
                         lambda: _parse_csv(path), enabled=cache)


def _load_csv(path: Path, usages: tuple[str, ...], split: str, cache: bool) -> FaceArrays:
    d = read_fer2013_csv(path, cache=cache)
    codes = [USAGES.index(u) for u in usages]
    idx = np.flatnonzero(np.isin(d["usage"], codes))
    return FaceArrays(images=d["images"][idx], targets=d["emotion"][idx].astype(np.int64), labels=L.FER2013,
                      ids=[f"row{i}" for i in idx], name="fer2013", split=split)


# ------------------------------------------------------------------------------ folders
def _scan_folder(root: Path, sub: str) -> tuple[list[str], np.ndarray, list[str]]:
    """(files, targets, usage per file) of ``root/sub/<class>/``; prefixes checked."""
    files, targets, _ = scan_class_tree(root / sub, L.FER2013)
    usage = []
    for f in files:
        m = _PREFIX.match(os.path.basename(f))
        u = m.group(1) if m else None
        if sub == "train" and u not in (None, "Training"):
            raise DatasetError(f"a {u} image in train/ (expected Training_*)", path=f, field="file name")
        if sub == "test" and u == "Training":
            raise DatasetError("a Training image in test/ (expected PublicTest_* or PrivateTest_*)",
                               path=f, field="file name")
        usage.append(u or ("Training" if sub == "train" else ""))
    return files, targets, usage


def _load_folder(root: Path, usages: tuple[str, ...], split: str, cache: bool) -> FaceArrays:
    parts = []
    for sub in ("train", "test"):
        want = [u for u in usages if (u == "Training") == (sub == "train")]
        if not want:
            continue
        if not (root / sub).is_dir():
            raise DatasetError(f"folder {sub}/ not found (FER2013 image-folder layout: train/, test/)",
                               path=root / sub)
        files, targets, usage = _scan_folder(root, sub)
        images = decode_images(files, root, color="L", cache=cache)  # whole folder: one cache entry
        if sub == "test" and set(want) != {"PublicTest", "PrivateTest"}:
            unnamed = [f for f, u in zip(files, usage) if not u]
            if unnamed:
                raise DatasetError(f"file name has no PublicTest_/PrivateTest_ prefix, so split {split!r} "
                                   "cannot be selected (use split='test')", path=unnamed[0], field="file name")
        keep = np.flatnonzero(np.isin(np.asarray(usage), want))
        parts.append((images[keep], targets[keep], [rel_path(files[i], root) for i in keep]))
    images = np.concatenate([p[0] for p in parts])
    targets = np.concatenate([p[1] for p in parts])
    ids = [i for p in parts for i in p[2]]
    return FaceArrays(images=images, targets=targets, labels=L.FER2013, ids=ids, name="fer2013", split=split)


def detect_source(root: Path) -> tuple[str, Path]:
    if root.is_file():
        return "csv", root
    if (root / "fer2013.csv").is_file():
        return "csv", root / "fer2013.csv"
    if (root / "train").is_dir() or (root / "test").is_dir():
        return "folder", root
    raise DatasetError("no FER2013 data found: expected fer2013.csv or the train/ and test/ class folders",
                       path=root)


def load_fer2013(root, split: str = "train", source: Optional[str] = None, num_classes: int = 7,
                 cache: bool = True) -> FaceArrays:
    """FER2013 split ``split`` from ``root`` (see the module docstring).

    ``source``: ``"csv"`` or ``"folder"`` to force a layout (default: detect; the csv wins
    when both exist).  ``num_classes`` is accepted for config symmetry and must be 7.
    """
    if num_classes != len(L.FER2013):
        raise ValueError(f"FER2013 has 7 classes, got num_classes={num_classes}")
    root = Path(root)
    usages = split_usages(split)
    name = split_name(usages)
    if source is None:
        source, where = detect_source(root)
    elif source == "csv":
        where = root if root.is_file() else root / "fer2013.csv"
        if not where.is_file():
            raise DatasetError("fer2013.csv not found", path=where)
    elif source == "folder":
        where = root
    else:
        raise ValueError(f"source must be 'csv' or 'folder', got {source!r}")
    if source == "csv":
        return _load_csv(where, usages, name, cache)
    return _load_folder(where, usages, name, cache)
