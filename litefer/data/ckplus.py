"""CK+ (Extended Cohn-Kanade): the CK+48 class folders and the original sequence layout.

* **folders** (``layout="folders"``; the common "CK+48"): ``root/<class>/S005_001_00000011.png``
  with class folders ``anger contempt disgust fear happy sadness surprise`` (and
  optionally ``neutral``), mapped by name.
* **sequences** (``layout="sequences"``; the official release): ``root/cohn-kanade-images/
  S005/001/S005_001_00000001.png ...`` and ``root/Emotion/S005/001/S005_001_00000011_emotion.txt``
  (one number, the CK+ code 1 angry, 2 contempt, 3 disgust, 4 fear, 5 happy, 6 sad,
  7 surprise).  The last ``peak_frames`` (default 3) frames of each labelled sequence get
  its emotion; with ``neutral_first=True`` its first frame is added as neutral.
  Sequences without an emotion file (unlabelled in CK+) are counted in ``skipped``.
  Frames are full camera images of varying size: pass ``size=``.

Labels: the CK+ code order (:data:`litefer.labels.CKPLUS`) restricted to the classes
present: 7 (no neutral) for CK+48, 8 with neutral frames.  ``num_classes`` one less than
that drops contempt (counted in ``skipped``).  ``groups`` is the subject id (``S005``),
for subject-independent folds (:func:`litefer.data.splits.subject_kfold`).  CK+ has no
official split: ``split`` is ``all`` (alias ``train``).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

import numpy as np

from litefer import labels as L
from litefer.data.base import DatasetError, FaceArrays, SkipReport
from litefer.data.cache import decode_images, list_images, rel_path
from litefer.data.folder import class_folders, folder_label

NAME = re.compile(r"^(S\d+)_(\d+)_(\d+)\.(png|jpg|jpeg|bmp)$", re.IGNORECASE)


def _folders_layout(root: Path) -> tuple[list[str], list[str]]:
    """(files, canonical label per file) of the CK+48 class folders."""
    files, names = [], []
    folders = class_folders(root)
    if not folders:
        raise DatasetError("no class folders found (CK+48 layout: <class>/S###_###_########.png)", path=root)
    for f in folders:
        y = folder_label(f, L.CKPLUS)
        for p in list_images(f):
            if not NAME.match(os.path.basename(p)):
                raise DatasetError("file name is not a CK+ name S<subject>_<sequence>_<frame>.png",
                                   path=p, field="file name")
            files.append(p)
            names.append(L.CKPLUS[y])
    return files, names


def _read_emotion(path: Path) -> int:
    text = path.read_text(encoding="utf-8", errors="replace").strip()
    if not text:
        raise DatasetError("empty emotion file", path=path, line=1, field="emotion")
    try:
        v = float(text.split()[0])
    except ValueError:
        raise DatasetError(f"not a number: {text.split()[0]!r}", path=path, line=1, field="emotion") from None
    if v != int(v) or not 1 <= int(v) <= 7:
        raise DatasetError(f"emotion code {text.split()[0]} outside 1..7", path=path, line=1, field="emotion")
    return int(v)


def _sequences_layout(root: Path, peak_frames: int, neutral_first: bool,
                      skipped: SkipReport) -> tuple[list[str], list[str]]:
    img_root, emo_root = root / "cohn-kanade-images", root / "Emotion"
    for d in (img_root, emo_root):
        if not d.is_dir():
            raise DatasetError("CK+ sequence layout needs cohn-kanade-images/ and Emotion/", path=d)
    if peak_frames < 1:
        raise ValueError(f"peak_frames must be >= 1, got {peak_frames}")
    files, names = [], []
    for subj in class_folders(img_root):
        for seq in class_folders(subj):
            frames = [p for p in list_images(seq)]
            for p in frames:
                if not NAME.match(os.path.basename(p)):
                    raise DatasetError("file name is not a CK+ name S<subject>_<sequence>_<frame>.png",
                                       path=p, field="file name")
            emo_dir = emo_root / subj.name / seq.name
            emo_files = sorted(emo_dir.glob("*_emotion.txt")) if emo_dir.is_dir() else []
            if not emo_files:
                skipped.add("sequence without emotion label", f"{subj.name}/{seq.name}")
                continue
            if len(emo_files) > 1:
                raise DatasetError(f"{len(emo_files)} emotion files for one sequence", path=emo_files[1])
            if not frames:
                raise DatasetError("labelled sequence has no frames", path=seq)
            code = _read_emotion(emo_files[0])
            peak = frames[-peak_frames:]
            if neutral_first and len(frames) > len(peak):
                files.append(frames[0])
                names.append("neutral")
            for p in peak:
                files.append(p)
                names.append(L.CKPLUS[code])
    # an Emotion file whose sequence has no images is an error, not a skip
    for emo in sorted(emo_root.glob("*/*/*_emotion.txt")):
        seq = img_root / emo.parent.parent.name / emo.parent.name
        if not seq.is_dir():
            raise DatasetError("emotion label for a sequence with no image folder", path=emo)
    return files, names


def load_ckplus(root, split: str = "all", layout: Optional[str] = None, peak_frames: int = 3,
                neutral_first: bool = False, num_classes: Optional[int] = None, size=None,
                color: str = "L", cache: bool = True) -> FaceArrays:
    """CK+ faces with subject groups (see the module docstring)."""
    root = Path(root)
    if str(split).lower() not in ("all", "train"):
        raise DatasetError(f"CK+ has no official split; use split='all' (or 'train'), got {split!r}", field="split")
    if layout is None:
        layout = "sequences" if (root / "cohn-kanade-images").is_dir() else "folders"
    skipped = SkipReport()
    if layout == "folders":
        files, names = _folders_layout(root)
    elif layout == "sequences":
        files, names = _sequences_layout(root, peak_frames, neutral_first, skipped)
    else:
        raise ValueError(f"layout must be 'folders' or 'sequences', got {layout!r}")
    present = [c for c in L.CKPLUS if c in set(names)]
    labels = tuple(present)
    if num_classes is not None and num_classes != len(labels):
        if num_classes == len(labels) - 1 and "contempt" in labels:
            labels = tuple(c for c in labels if c != "contempt")
        else:
            raise ValueError(f"CK+ here has {len(present)} classes {present}; num_classes={num_classes} "
                             f"is not that or that minus contempt")
    keep = []
    for i, (f, n) in enumerate(zip(files, names)):
        if n in labels:
            keep.append(i)
        else:
            skipped.add("contempt dropped", rel_path(f, root))
    files = [files[i] for i in keep]
    targets = np.asarray([labels.index(names[i]) for i in keep], dtype=np.int64)
    images = decode_images(files, root, size=size, color=color, cache=cache)
    ids = [rel_path(f, root) for f in files]
    groups = np.asarray([NAME.match(os.path.basename(f)).group(1) for f in files])
    return FaceArrays(images=images, targets=targets, labels=labels, ids=ids, groups=groups, name="ckplus",
                      split="all", skipped=skipped)
