"""FER+ (FERPlus): FER2013 faces relabelled by 10 crowd annotators each.

Two layouts (detected from ``root``, or forced with ``source="layout"|"csv"``):

* **layout** — the FER+ training layout of Microsoft's ``generate_training_data.py``:
  ``root/data/FER2013{Train,Valid,Test}/`` (``root`` may also be the ``data`` folder) with
  48x48 PNGs and a headerless ``label.csv``:
  ``fer0000000.png,"(0, 0, 48, 48)",<10 vote columns>``.  Images are joined to votes by
  *name within the split* (names are not csv row numbers).  ``votes="label_csv"`` (default for
  this layout, what Microsoft's training code reads) or ``votes="fer2013new"`` (the newer
  ``fer2013new.csv`` next to ``data/``, joined by name within the same Usage).
* **csv** — ``fer2013new.csv`` joined *by row order* to the original ``fer2013.csv``
  (``fer2013_csv=`` path, default ``root/fer2013.csv`` then ``root/../fer2013/fer2013.csv``);
  both must have the same rows and the same Usage on each.

Vote columns: neutral, happiness, surprise, sadness, anger, disgust, fear, contempt,
unknown, NF.  Label modes:

* ``majority`` — the official FER+ rule: votes of 1 are discarded (outlier removal); an
  image is kept only if its top column then holds more than half of the remaining votes
  (over all 10 columns), and not if that top column is unknown or NF.  With
  ``num_classes=7`` images whose majority is contempt are dropped too.  Targets are int64
  class indices into :data:`~litefer.labels.FERPLUS8` / :data:`~litefer.labels.FERPLUS7`.
* ``probability`` — soft targets: the raw votes of the 8 (or 7) emotion columns divided by
  their sum (float32 rows summing to 1).  Images whose top column over all 10 is unknown
  or NF, or with no emotion votes, are dropped.

Every dropped image is counted, by reason, in ``FaceArrays.skipped``.  Splits:
``train``, ``publictest`` (aliases ``valid``, ``val``), ``privatetest`` (alias ``test``,
i.e. FER2013Test) and ``all``.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Optional

import numpy as np

from litefer import labels as L
from litefer.data.base import DatasetError, FaceArrays, SkipReport
from litefer.data.cache import decode_images

VOTE_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt",
                "unknown", "NF")
UNKNOWN, NF, CONTEMPT = 8, 9, 7
LABEL_MODES = ("majority", "probability")
FOLDERS = {"Training": "FER2013Train", "PublicTest": "FER2013Valid", "PrivateTest": "FER2013Test"}
#: split name -> Usage values; note ``test`` is FER2013Test (PrivateTest), as the FER+ layout names it
SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("Training",), "training": ("Training",),
    "publictest": ("PublicTest",), "public": ("PublicTest",), "valid": ("PublicTest",), "val": ("PublicTest",),
    "privatetest": ("PrivateTest",), "private": ("PrivateTest",), "test": ("PrivateTest",),
    "all": ("Training", "PublicTest", "PrivateTest"),
}
SPLIT_NAME = {"Training": "train", "PublicTest": "publictest", "PrivateTest": "privatetest"}


# ------------------------------------------------------------------------------ vote files
def _votes(row: list[str], start: int, path: Path, line: int) -> list[int]:
    out = []
    for j, col in enumerate(VOTE_COLUMNS):
        v = row[start + j].strip()
        try:
            n = int(v)
        except ValueError:
            raise DatasetError(f"vote count is not an integer: {v!r}", path=path, line=line, field=col) from None
        if n < 0:
            raise DatasetError(f"negative vote count {n}", path=path, line=line, field=col)
        out.append(n)
    return out


def read_label_csv(path) -> tuple[list[str], np.ndarray, list[int]]:
    """(image names, votes (N,10) int64, line numbers) of a headerless FER+ ``label.csv``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError("label.csv not found", path=path)
    names, votes, lines, seen = [], [], [], {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                raise DatasetError("empty row", path=path, line=line)
            if len(row) != 12:
                raise DatasetError(f"{len(row)} fields, expected 12 (image name, face box, 10 votes)",
                                   path=path, line=line)
            name = row[0].strip()
            if not name:
                raise DatasetError("empty image name", path=path, line=line, field="image name")
            if name in seen:
                raise DatasetError(f"image name {name!r} repeats line {seen[name]}", path=path, line=line,
                                   field="image name")
            seen[name] = line
            names.append(name)
            votes.append(_votes(row, 2, path, line))
            lines.append(line)
    return names, np.asarray(votes, dtype=np.int64).reshape(-1, 10), lines


def read_fer2013new(path) -> dict:
    """Rows of ``fer2013new.csv``: ``usage`` (list), ``names`` (list, "" where none), ``votes``
    (N,10) int64 and ``lines``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError("fer2013new.csv not found", path=path)
    usages, names, votes, lines = [], [], [], []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        expect = ["Usage", "Image name", *VOTE_COLUMNS]
        if header != expect:
            raise DatasetError(f"header is {header}, expected {expect}", path=path, line=1)
        for row in reader:
            line = reader.line_num
            if len(row) != 12:
                raise DatasetError(f"{len(row)} fields, expected 12", path=path, line=line)
            u = row[0].strip()
            if u not in FOLDERS:
                raise DatasetError(f"unknown Usage {u!r} (expected {', '.join(FOLDERS)})", path=path, line=line,
                                   field="Usage")
            usages.append(u)
            names.append(row[1].strip())
            votes.append(_votes(row, 2, path, line))
            lines.append(line)
    return {"usage": usages, "names": names, "votes": np.asarray(votes, dtype=np.int64).reshape(-1, 10),
            "lines": lines}


# ------------------------------------------------------------------------------ label rules
def majority_labels(votes: np.ndarray) -> np.ndarray:
    """Official FER+ majority over the 10 columns: the winning column (0..9), or -1 for none.

    Votes of 1 are set to 0; the top column (first on ties) wins if it holds more than
    half of the remaining votes.  Columns 8/9 (unknown/NF) winning means "drop".
    """
    v = np.asarray(votes, dtype=np.int64).copy()
    v[v <= 1] = 0
    top = v.argmax(1)
    best = v[np.arange(len(v)), top]
    ok = 2 * best > v.sum(1)
    return np.where(ok, top, -1)


def apply_label_mode(votes: np.ndarray, ids: list[str], label_mode: str = "majority",
                     num_classes: int = 8) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], SkipReport]:
    """(kept row indices, targets, labels, skipped) for FER+ votes (N,10)."""
    if label_mode not in LABEL_MODES:
        raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")
    if num_classes not in (7, 8):
        raise ValueError(f"FER+ has 8 emotion classes (or 7 without contempt), got num_classes={num_classes}")
    labels = L.FERPLUS8 if num_classes == 8 else L.FERPLUS7
    skipped = SkipReport()
    votes = np.asarray(votes, dtype=np.int64)
    keep = []
    if label_mode == "majority":
        win = majority_labels(votes)
        for i, w in enumerate(win):
            if w < 0:
                skipped.add("no majority (top emotion not > half the votes after dropping single votes)", ids[i])
            elif w == UNKNOWN:
                skipped.add("majority unknown", ids[i])
            elif w == NF:
                skipped.add("majority NF (not a face)", ids[i])
            elif w >= num_classes:
                skipped.add("majority contempt (7 classes)", ids[i])
            else:
                keep.append(i)
        keep = np.asarray(keep, dtype=np.int64)
        return keep, win[keep].astype(np.int64), labels, skipped
    top = votes.argmax(1) if len(votes) else np.zeros(0, np.int64)
    emo = votes[:, :num_classes]
    tot = emo.sum(1)
    for i in range(len(votes)):
        if top[i] == UNKNOWN:
            skipped.add("top vote unknown", ids[i])
        elif top[i] == NF:
            skipped.add("top vote NF (not a face)", ids[i])
        elif tot[i] == 0:
            skipped.add(f"no votes for the {num_classes} emotions", ids[i])
        else:
            keep.append(i)
    keep = np.asarray(keep, dtype=np.int64)
    soft = (emo[keep] / tot[keep, None]).astype(np.float32) if len(keep) else np.zeros((0, num_classes), np.float32)
    return keep, soft, labels, skipped


# ------------------------------------------------------------------------------ layouts
def _data_dir(root: Path) -> Optional[Path]:
    for d in (root / "data", root):
        if any((d / f).is_dir() for f in FOLDERS.values()):
            return d
    return None


def _fer2013new_path(root: Path, data_dir: Optional[Path]) -> Path:
    for cand in (root / "fer2013new.csv", (data_dir.parent / "fer2013new.csv") if data_dir else None):
        if cand is not None and cand.is_file():
            return cand
    return root / "fer2013new.csv"


def _new_votes_by_name(new: dict, usage: str, path: Path, skipped: SkipReport) -> dict[str, np.ndarray]:
    """name -> votes of the ``usage`` rows of fer2013new.csv (first row wins on a repeated name)."""
    out: dict[str, np.ndarray] = {}
    for u, name, v in zip(new["usage"], new["names"], new["votes"]):
        if u != usage or not name:
            continue
        if name in out:
            if not np.array_equal(out[name], v):
                skipped.add("fer2013new.csv repeats the name with other votes (first row used)", name)
            continue
        out[name] = v
    return out


def _load_layout(root: Path, data_dir: Path, usage: str, votes_src: str, cache: bool) -> tuple:
    folder = data_dir / FOLDERS[usage]
    if not folder.is_dir():
        raise DatasetError(f"split folder {FOLDERS[usage]}/ not found", path=folder)
    label_path = folder / "label.csv"
    names, votes, lines = read_label_csv(label_path)
    pngs = {n for n in os.listdir(folder) if n.lower().endswith(".png")}
    for name, line in zip(names, lines):
        if name not in pngs:
            raise DatasetError(f"image {name} listed but not found in {folder}", path=label_path, line=line,
                               field="image name")
    extra = sorted(pngs - set(names))
    if extra:
        raise DatasetError(f"{len(extra)} image(s) not listed in label.csv (e.g. {extra[0]})", path=folder / extra[0])
    pre_skipped = SkipReport()
    if votes_src == "fer2013new":
        new_path = _fer2013new_path(root, data_dir)
        new = read_fer2013new(new_path)
        by_name = _new_votes_by_name(new, usage, new_path, pre_skipped)
        for name, line in zip(names, lines):
            if name not in by_name:
                raise DatasetError(f"image {name} of {FOLDERS[usage]} has no {usage} row in fer2013new.csv",
                                   path=new_path, field="Image name")
        votes = np.stack([by_name[n] for n in names]) if names else votes
    fs = os.fspath(folder)
    images = decode_images([os.path.join(fs, n) for n in names], data_dir, color="L", cache=cache)
    ids = [f"{FOLDERS[usage]}/{n}" for n in names]
    return images, votes, ids, pre_skipped


def _load_csv_rows(root: Path, fer2013_csv: Optional[Path], cache: bool) -> tuple:
    """(images, votes, ids, usage array) of all rows: fer2013new.csv joined by order to fer2013.csv."""
    from litefer.data.fer2013 import USAGES, read_fer2013_csv
    new_path = root / "fer2013new.csv" if root.is_dir() else root
    if fer2013_csv is None:
        for cand in (new_path.parent / "fer2013.csv", new_path.parent.parent / "fer2013" / "fer2013.csv"):
            if cand.is_file():
                fer2013_csv = cand
                break
        else:
            raise DatasetError("fer2013.csv not found next to fer2013new.csv (pass fer2013_csv=)",
                               path=new_path.parent / "fer2013.csv")
    new = read_fer2013new(new_path)
    old = read_fer2013_csv(fer2013_csv, cache=cache)
    if len(old["emotion"]) != len(new["usage"]):
        raise DatasetError(f"{len(new['usage'])} rows but {fer2013_csv} has {len(old['emotion'])}; "
                           "the two csv files are joined by row order", path=new_path)
    for i, u in enumerate(new["usage"]):
        if USAGES[old["usage"][i]] != u:
            raise DatasetError(f"Usage {u!r} but row {i} of {fer2013_csv} (line {int(old['line'][i])}) is "
                               f"{USAGES[old['usage'][i]]!r}; the files are joined by row order",
                               path=new_path, line=new["lines"][i], field="Usage")
    ids = [n if n else f"row{i}" for i, n in enumerate(new["names"])]
    return old["images"], new["votes"], ids, np.asarray(new["usage"])


def load_ferplus(root, split: str = "train", label_mode: str = "majority", num_classes: int = 8,
                 votes: Optional[str] = None, source: Optional[str] = None, fer2013_csv=None,
                 cache: bool = True) -> FaceArrays:
    """FER+ split ``split`` (see the module docstring for layouts, options and label modes)."""
    from litefer.data.fer2013 import split_usages
    root = Path(root)
    usages = split_usages(split, SPLITS)
    data_dir = _data_dir(root) if root.is_dir() else None
    if source is None:
        source = "layout" if data_dir is not None else "csv"
    if votes is None:
        votes = "label_csv" if source == "layout" else "fer2013new"
    if votes not in ("label_csv", "fer2013new"):
        raise ValueError(f"votes must be 'label_csv' or 'fer2013new', got {votes!r}")
    if label_mode not in LABEL_MODES:
        raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")
    if num_classes not in (7, 8):
        raise ValueError(f"FER+ has 8 emotion classes (or 7 without contempt), got num_classes={num_classes}")
    if source == "layout":
        if data_dir is None:
            raise DatasetError("FER+ training layout not found (expected data/FER2013Train, FER2013Valid, "
                               "FER2013Test)", path=root / "data")
        parts = [_load_layout(root, data_dir, u, votes, cache) for u in usages]
    elif source == "csv":
        if votes == "label_csv":
            raise ValueError("votes='label_csv' needs the FER+ training layout (data/FER2013*/label.csv); "
                             "the csv source reads its votes from fer2013new.csv")
        images, allvotes, allids, usage_arr = _load_csv_rows(root, Path(fer2013_csv) if fer2013_csv else None, cache)
        parts = []
        for u in usages:
            idx = np.flatnonzero(usage_arr == u)
            parts.append((images[idx], allvotes[idx], [allids[i] for i in idx], SkipReport()))
    else:
        raise ValueError(f"source must be 'layout' or 'csv', got {source!r}")
    images = np.concatenate([p[0] for p in parts])
    allvotes = np.concatenate([p[1] for p in parts])
    ids = [i for p in parts for i in p[2]]
    keep, targets, labels, skipped = apply_label_mode(allvotes, ids, label_mode, num_classes)
    for p in parts:
        for reason, n in p[3].counts.items():
            skipped.counts[reason] = skipped.counts.get(reason, 0) + n
            skipped.examples.setdefault(reason, []).extend(p[3].examples.get(reason, []))
    name = SPLIT_NAME[usages[0]] if len(usages) == 1 else "all"
    return FaceArrays(images=images[keep], targets=targets, labels=labels, ids=[ids[i] for i in keep],
                      name="ferplus", split=name, skipped=skipped)

