"""AffectNet: the manually annotated csv files, or a class-folder copy.

* **csv** (``source="csv"``): ``root/training.csv`` (split ``train``) and
  ``root/validation.csv`` (split ``val``; AffectNet's test set is not public) with columns
  ``subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,
  expression,valence,arousal`` (a file without the header line is read with these
  columns); images under ``root/Manually_Annotated_Images/<subDirectory_filePath>``
  (``images=`` another folder).  Each face is cropped with its box (``crop=True``) and
  resized to ``size`` (default 112).
* **folders** (``source="folders"``): ``root/{train,val}/<class>/`` with class folders
  ``0``..``10`` (AffectNet codes) or expression names.

Expression codes: 0 neutral, 1 happy, 2 sad, 3 surprise, 4 fear, 5 disgust, 6 anger,
7 contempt, 8 none, 9 uncertain, 10 non-face.  ``num_classes=8`` keeps 0..7
(:data:`~litefer.labels.AFFECTNET8`), ``num_classes=7`` also drops contempt
(:data:`~litefer.labels.AFFECTNET7`); every dropped image is counted by reason in
``skipped``.  ``color="RGB"`` (default) or ``"L"``.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Optional

import numpy as np

from litefer import labels as L
from litefer.data.base import DatasetError, FaceArrays, SkipReport
from litefer.data.cache import decode_images, list_images, rel_path
from litefer.data.folder import class_folders

COLUMNS = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks",
           "expression", "valence", "arousal")
NON_EMOTION = {8: "none", 9: "uncertain", 10: "non-face"}
CSV_FILES = {"train": "training.csv", "val": "validation.csv"}
SPLITS = {"train": ("train",), "training": ("train",), "val": ("val",), "valid": ("val",),
          "validation": ("val",), "all": ("train", "val")}


def _drop_reason(code: int, num_classes: int) -> Optional[str]:
    if code in NON_EMOTION:
        return f"expression {code} ({NON_EMOTION[code]})"
    if code == 7 and num_classes == 7:
        return "expression 7 (contempt, 7 classes)"
    return None


def read_affectnet_csv(path) -> list[dict]:
    """Validated rows (dicts with file, box, expression, line) of an AffectNet csv."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError("AffectNet csv not found", path=path)
    rows = []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        first = next(reader, None)
        if first is None:
            return rows
        if [c.strip() for c in first] == list(COLUMNS):
            pending = []
        elif len(first) == len(COLUMNS):
            pending = [first]  # headerless file, standard columns
        else:
            raise DatasetError(f"header is {first}, expected {list(COLUMNS)}", path=path, line=1)
        line = 1

        def rows_iter():
            for r in pending:
                yield 1, r
            for r in reader:
                yield reader.line_num, r

        for line, r in rows_iter():
            if len(r) != len(COLUMNS):
                raise DatasetError(f"{len(r)} fields, expected {len(COLUMNS)}", path=path, line=line)
            rec = {"file": r[0].strip(), "line": line}
            if not rec["file"]:
                raise DatasetError("empty file path", path=path, line=line, field=COLUMNS[0])
            box = []
            for c in COLUMNS[1:5]:
                v = r[COLUMNS.index(c)].strip()
                try:
                    box.append(int(float(v)))
                except ValueError:
                    raise DatasetError(f"not a number: {v!r}", path=path, line=line, field=c) from None
            if box[2] <= 0 or box[3] <= 0:
                raise DatasetError(f"face box size {box[2]}x{box[3]} is not positive", path=path, line=line,
                                   field="face_width" if box[2] <= 0 else "face_height")
            v = r[6].strip()
            try:
                code = int(v)
            except ValueError:
                raise DatasetError(f"not an integer: {v!r}", path=path, line=line, field="expression") from None
            if not 0 <= code <= 10:
                raise DatasetError(f"expression {code} outside 0..10", path=path, line=line, field="expression")
            for c in ("valence", "arousal"):
                try:
                    float(r[COLUMNS.index(c)])
                except ValueError:
                    raise DatasetError(f"not a number: {r[COLUMNS.index(c)]!r}", path=path, line=line,
                                       field=c) from None
            rec["box"], rec["expression"] = tuple(box), code
            rows.append(rec)
    return rows


def _folder_code(name: str) -> int:
    if name.isdigit():
        code = int(name)
        if not 0 <= code <= 10:
            raise KeyError(f"AffectNet code {code} outside 0..10")
        return code
    return L.AFFECTNET8.index(L.canonical(name))


def load_affectnet(root, split: str = "train", num_classes: int = 8, source: Optional[str] = None,
                   size=112, color: str = "RGB", crop: bool = True, images: Optional[str] = None,
                   cache: bool = True) -> FaceArrays:
    """AffectNet split ``train``/``val``/``all`` (see the module docstring)."""
    root = Path(root)
    key = str(split).lower()
    if key not in SPLITS:
        raise DatasetError(f"unknown AffectNet split {split!r}; known: {', '.join(SPLITS)}", field="split")
    if num_classes not in (7, 8):
        raise ValueError(f"AffectNet has 8 (or 7 without contempt) expression classes, got {num_classes}")
    if source is None:
        source = "csv" if any((root / f).is_file() for f in CSV_FILES.values()) else "folders"
    labels = L.AFFECTNET8 if num_classes == 8 else L.AFFECTNET7
    skipped = SkipReport()
    files, codes, ids, boxes = [], [], [], []
    for sp in SPLITS[key]:
        if source == "csv":
            csv_path = root / CSV_FILES[sp]
            img_root = Path(images) if images else root / "Manually_Annotated_Images"
            ir = os.fspath(img_root)
            for rec in read_affectnet_csv(csv_path):
                reason = _drop_reason(rec["expression"], num_classes)
                if reason:
                    skipped.add(reason, rec["file"])
                    continue
                f = os.path.join(ir, rec["file"])
                if not os.path.isfile(f):
                    raise DatasetError(f"image not found at {f}", path=csv_path, line=rec["line"],
                                       field="subDirectory_filePath")
                files.append(f)
                codes.append(rec["expression"])
                ids.append(rec["file"])
                boxes.append(rec["box"])
        elif source == "folders":
            base = root / sp
            for folder in class_folders(base):
                try:
                    code = _folder_code(folder.name)
                except (KeyError, ValueError, L.UnknownLabelError) as exc:
                    raise DatasetError(f"unknown class folder {folder.name!r} ({exc})", path=folder,
                                       field="class folder") from None
                imgs = list_images(folder)
                reason = _drop_reason(code, num_classes)
                if reason:
                    for p in imgs:
                        skipped.add(reason, rel_path(p, root))
                    continue
                files += imgs
                codes += [code] * len(imgs)
                ids += [rel_path(p, root) for p in imgs]
        else:
            raise ValueError(f"source must be 'csv' or 'folders', got {source!r}")
    use_boxes = boxes if (source == "csv" and crop) else None
    arr = decode_images(files, root, size=size, color=color, cache=cache, boxes=use_boxes)
    targets = np.asarray(codes, dtype=np.int64)  # AffectNet codes 0..7 are AFFECTNET8 indices
    return FaceArrays(images=arr, targets=targets, labels=labels, ids=ids, name="affectnet",
                      split=SPLITS[key][0] if len(SPLITS[key]) == 1 else "all", skipped=skipped)
