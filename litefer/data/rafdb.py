"""RAF-DB basic emotions: ``EmoLabel/list_patition_label.txt`` + ``Image/aligned/``.

The label file (the upstream spelling "patition") has one ``train_00001.jpg 5`` line per
image: labels 1 surprise, 2 fear, 3 disgust, 4 happiness, 5 sadness, 6 anger, 7 neutral
(:data:`litefer.labels.RAFDB`, index = label - 1).  The split is the name prefix
(``train_``/``test_``: 12,271 / 3,068 images officially).  ``images="aligned"`` (default)
reads ``Image/aligned/train_00001_aligned.jpg`` (100x100 RGB), ``images="original"`` reads
``Image/original/train_00001.jpg`` (varying sizes: pass ``size=``).  ``size=`` resizes at
load, ``color="RGB"`` (default) or ``"L"``.  ids are the names in the label file.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from litefer import labels as L
from litefer.data.base import DatasetError, FaceArrays
from litefer.data.cache import decode_images

LABEL_FILE = ("EmoLabel", "list_patition_label.txt")
SPLITS = {"train": ("train",), "training": ("train",), "test": ("test",), "all": ("train", "test")}


def read_label_file(path) -> list[tuple[str, int, int]]:
    """(name, label 1..7, line) of every line of ``list_patition_label.txt``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError("RAF-DB label file not found", path=path)
    out, seen = [], {}
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2:
                raise DatasetError(f"{len(parts)} fields, expected 2 (image name, label)", path=path, line=line_no)
            name, lab = parts
            if not (name.startswith("train_") or name.startswith("test_")):
                raise DatasetError(f"image name {name!r} does not start with train_ or test_", path=path,
                                   line=line_no, field="image name")
            if name in seen:
                raise DatasetError(f"image name {name!r} repeats line {seen[name]}", path=path, line=line_no,
                                   field="image name")
            seen[name] = line_no
            try:
                y = int(lab)
            except ValueError:
                raise DatasetError(f"label is not an integer: {lab!r}", path=path, line=line_no,
                                   field="label") from None
            if not 1 <= y <= len(L.RAFDB):
                raise DatasetError(f"label {y} outside 1..{len(L.RAFDB)}", path=path, line=line_no, field="label")
            out.append((name, y, line_no))
    return out


def load_rafdb(root, split: str = "train", images: str = "aligned", size=None, color: str = "RGB",
               cache: bool = True) -> FaceArrays:
    """RAF-DB basic split ``train``/``test``/``all`` (see the module docstring)."""
    root = Path(root)
    key = str(split).lower()
    if key not in SPLITS:
        raise DatasetError(f"unknown RAF-DB split {split!r}; known: {', '.join(SPLITS)}", field="split")
    if images not in ("aligned", "original"):
        raise ValueError(f"images must be 'aligned' or 'original', got {images!r}")
    label_path = root.joinpath(*LABEL_FILE)
    rows = [r for r in read_label_file(label_path) if r[0].split("_", 1)[0] in SPLITS[key]]
    img_dir = os.fspath(root / "Image" / images)
    files = []
    for name, _, line in rows:
        stem, ext = os.path.splitext(name)
        f = os.path.join(img_dir, f"{stem}_aligned{ext}" if images == "aligned" else name)
        if not os.path.isfile(f):
            raise DatasetError(f"image {name} listed in {label_path.name} not found at {f}", path=label_path,
                               line=line, field="image name")
        files.append(f)
    arr = decode_images(files, root, size=size, color=color, cache=cache)
    targets = np.asarray([y - 1 for _, y, _ in rows], dtype=np.int64)
    return FaceArrays(images=arr, targets=targets, labels=L.RAFDB, ids=[r[0] for r in rows], name="rafdb",
                      split=key if key != "training" else "train")
