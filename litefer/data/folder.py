"""Class-folder trees (``ImageFolder`` style): ``root/[split/]<class name>/<image>``.

Folder names are mapped to labels *by name* through :func:`litefer.labels.canonical`
(``anger``/``angry``, ``sadness``/``sad`` ... all work); a folder name that is not an
expression litefer knows is a :class:`DatasetError` naming the folder, never a silent
skip.  The label set is ``labels=`` (a registered name such as ``"fer2013"`` or a list of
names) or, by default, the classes present in :data:`litefer.labels.CANONICAL` order.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from litefer import labels as L
from litefer.data.base import DatasetError, FaceArrays
from litefer.data.cache import decode_images, list_images, rel_path


def class_folders(root: Path) -> list[Path]:
    """The non-hidden sub-folders of ``root``, sorted; a missing root is a DatasetError."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError("dataset folder not found", path=root)
    return sorted(Path(e.path) for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))


def folder_label(folder: Path, label_set: Sequence[str],
                 name_map: Optional[Callable[[str], str]] = None) -> int:
    """Index in ``label_set`` of the class folder ``folder`` (by name)."""
    try:
        name = name_map(folder.name) if name_map is not None else L.canonical(folder.name)
    except (L.UnknownLabelError, KeyError, ValueError) as exc:
        raise DatasetError(f"unknown class folder name {folder.name!r} ({exc})",
                           path=folder, field="class folder") from None
    if name not in label_set:
        raise DatasetError(f"class {name!r} is not in the label set {list(label_set)}",
                           path=folder, field="class folder")
    return label_set.index(name)


def scan_class_tree(root: Path, label_set: Optional[Sequence[str]] = None,
                    name_map: Optional[Callable[[str], str]] = None
                    ) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    """(file paths as strings, targets, label_set) of ``root/<class>/<image>``."""
    folders = class_folders(root)
    if not folders:
        raise DatasetError("no class folders found", path=root)
    if label_set is None:
        names = set()
        for f in folders:
            try:
                names.add(name_map(f.name) if name_map is not None else L.canonical(f.name))
            except (L.UnknownLabelError, KeyError, ValueError) as exc:
                raise DatasetError(f"unknown class folder name {f.name!r} ({exc})",
                                   path=f, field="class folder") from None
        label_set = tuple(n for n in L.CANONICAL if n in names)
    label_set = tuple(label_set)
    files: list[str] = []
    targets: list[int] = []
    seen: dict[int, Path] = {}
    for f in folders:
        y = folder_label(f, label_set, name_map)
        if y in seen:
            raise DatasetError(f"two folders for class {label_set[y]!r} ({seen[y].name} and {f.name})",
                               path=f, field="class folder")
        seen[y] = f
        imgs = list_images(f)
        files += imgs
        targets += [y] * len(imgs)
    return files, np.asarray(targets, dtype=np.int64), label_set


def load_folder(root, split: Optional[str] = None, labels=None, size=None, color: str = "L",
                cache: bool = True, name: str = "folder") -> FaceArrays:
    """Any class-folder tree: ``root/<class>/*`` or, with ``split``, ``root/<split>/<class>/*``.

    ``labels``: a label-set name (``"fer2013"``) or a list of class names fixing the class
    order; default: the classes found, in canonical order.  ``size``/``color`` as in
    :func:`litefer.data.cache.decode_images`.  ids are paths relative to ``root``.
    """
    root = Path(root)
    base = root / split if split else root
    if split and not base.is_dir():
        raise DatasetError(f"split folder {split!r} not found", path=base)
    label_set = L.label_set(labels) if labels is not None else None
    files, targets, label_set = scan_class_tree(base, label_set)
    images = decode_images(files, root, size=size, color=color, cache=cache)
    ids = [rel_path(p, root) for p in files]
    return FaceArrays(images=images, targets=targets, labels=label_set, ids=ids, name=name, split=split or "all")
