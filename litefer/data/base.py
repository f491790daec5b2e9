"""Shared containers and errors of the data layer.

Every reader returns a :class:`FaceArrays`: decoded uint8 images plus targets in
the reader's label set.  ``Dataset`` wraps it for PyTorch with a transform.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

#: environment variable naming the folder that holds the datasets
DATA_ENV = "LITEFER_DATA"


def data_root() -> Path:
    """Folder holding the datasets: ``$LITEFER_DATA`` or ``../shared/data``."""
    return Path(os.environ.get(DATA_ENV, "../shared/data")).expanduser()


class DatasetError(ValueError):
    """A dataset file is missing or malformed; the message names file, line and field."""

    def __init__(self, message: str, path: str | os.PathLike | None = None,
                 line: int | None = None, field: str | None = None):
        where = []
        if path is not None:
            where.append(str(path))
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field {field!r}")
        self.path, self.line, self.field = path, line, field
        super().__init__(f"{': '.join([', '.join(where), message]) if where else message}")


@dataclass
class SkipReport:
    """What a reader skipped on purpose (documented protocol), and why."""
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, item: str = "") -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        ex = self.examples.setdefault(reason, [])
        if item and len(ex) < 5:
            ex.append(item)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __str__(self) -> str:
        if not self.counts:
            return "nothing skipped"
        return "; ".join(f"{n} {r}" for r, n in sorted(self.counts.items()))


@dataclass
class FaceArrays:
    """Decoded face images of one split and their targets.

    images:  uint8, (N, H, W) greyscale or (N, H, W, 3) RGB.
    targets: int64 (N,) class indices into ``labels``, or float32 (N, C) soft
             targets (rows sum to 1) in ``probability`` label mode.
    labels:  the label set (canonical names, see :mod:`litefer.labels`).
    ids:     a stable id per image (file name or csv row), for reports and exclusion lists.
    groups:  optional subject id per image (for subject-independent splits).
    classes: optional int64 (N,) own class of each image where ``targets`` are soft and their
             top class need not be it (a teacher's predictions mixed in): class counts,
             balancing, stratification and training accuracy follow it.  None: the top class.
    """
    images: np.ndarray
    targets: np.ndarray
    labels: tuple[str, ...]
    ids: list[str]
    groups: Optional[np.ndarray] = None
    name: str = ""
    split: str = ""
    skipped: SkipReport = field(default_factory=SkipReport)
    classes: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        n = len(self.images)
        if len(self.targets) != n or len(self.ids) != n:
            raise ValueError(f"FaceArrays: {n} images, {len(self.targets)} targets, {len(self.ids)} ids")
        if self.groups is not None and len(self.groups) != n:
            raise ValueError(f"FaceArrays: {n} images but {len(self.groups)} groups")
        if self.classes is not None and len(self.classes) != n:
            raise ValueError(f"FaceArrays: {n} images but {len(self.classes)} classes")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def hard_targets(self) -> np.ndarray:
        """Class indices: ``classes`` where set, else the targets (the argmax of soft ones)."""
        if self.classes is not None:
            return self.classes
        t = self.targets
        return t.argmax(1).astype(np.int64) if t.ndim == 2 else t

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.hard_targets, minlength=self.num_classes)
        return {n: int(c) for n, c in zip(self.labels, counts)}

    def subset(self, index: Sequence[int] | np.ndarray, split: str | None = None) -> "FaceArrays":
        idx = np.asarray(index, dtype=np.int64)
        return FaceArrays(
            images=self.images[idx], targets=self.targets[idx], labels=self.labels,
            ids=[self.ids[i] for i in idx],
            groups=None if self.groups is None else self.groups[idx],
            name=self.name, split=split if split is not None else self.split,
            skipped=self.skipped, classes=None if self.classes is None else self.classes[idx],
        )

    def exclude(self, ids: set[str]) -> "FaceArrays":
        """Drop the images whose id is in ``ids`` (an audit's exclusion list)."""
        keep = [i for i, x in enumerate(self.ids) if x not in ids]
        return self.subset(keep)


class Dataset:
    """A PyTorch map-style dataset over :class:`FaceArrays`.

    ``transform`` takes a uint8 HxW or HxWx3 numpy image and returns a float tensor.
    """

    def __init__(self, arrays: FaceArrays, transform: Optional[Callable] = None):
        self.arrays = arrays
        self.transform = transform

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, i: int):
        import torch
        img = self.arrays.images[i]
        x = self.transform(img) if self.transform is not None else torch.from_numpy(img.copy())
        t = self.arrays.targets[i]
        y = torch.as_tensor(t, dtype=torch.float32 if np.ndim(t) else torch.int64)
        return x, y
