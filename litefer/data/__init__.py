"""Dataset readers: ``load_dataset(name, root=None, split=..., **opts) -> FaceArrays``.

>>> from litefer.data import load_dataset, list_datasets
>>> train = load_dataset("fer2013", split="train")                 # 28,709 faces, 7 classes
>>> val = load_dataset("ferplus", split="valid", label_mode="majority", num_classes=8)

``root`` defaults to ``data_root()/<folder>`` (:data:`DATASET_FOLDERS`; ``data_root()`` is
``$LITEFER_DATA`` or ``../shared/data``).  Decoded pixels are cached as uint8 arrays in
``$LITEFER_CACHE`` (default ``~/.cache/litefer``), keyed by the sources' sizes and mtimes,
so only the first load of a split decodes images; pass ``cache=False`` to bypass.

Readers and their options (see each module's docstring):

========== ======================================= ================================================
name       splits                                  options (all readers also take ``cache``)
========== ======================================= ================================================
fer2013    train, publictest (valid), privatetest,  source ("csv"|"folder"), num_classes (7 only)
           test (= public + private), all
ferplus    train, publictest (valid), privatetest,  label_mode ("majority"|"probability"),
           test (= FER2013Test = privatetest), all  num_classes (8|7), votes ("label_csv"|"fer2013new"),
                                                    source ("layout"|"csv"), fer2013_csv
rafdb      train, test, all                        images ("aligned"|"original"), size, color
affectnet  train, val, all                         num_classes (8|7), source ("csv"|"folders"),
                                                    size (default 112), color, crop, images
ckplus     all (alias train)                       layout ("folders"|"sequences"), peak_frames,
                                                    neutral_first, num_classes, size, color
folder     any sub-folder name, or None            labels, size, color
========== ======================================= ================================================

Note that ``test`` differs: for FER2013 it is the whole ``test/`` folder (PublicTest +
PrivateTest), for FER+ it is the ``FER2013Test`` folder (PrivateTest only), following
each release's naming.  Use ``publictest``/``privatetest`` to be unambiguous.

Errors in the files are :class:`~litefer.data.base.DatasetError` naming file, line and
field; an unknown dataset name is a ``KeyError``, an unknown option a ``TypeError``.
"""
from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Callable, Optional

from litefer.data.base import DATA_ENV, Dataset, DatasetError, FaceArrays, SkipReport, data_root

__all__ = ["load_dataset", "list_datasets", "dataset_root", "canonical_name", "DATASET_FOLDERS", "STANDARD_SPLITS", "FaceArrays", "Dataset",
           "DatasetError", "SkipReport", "data_root", "DATA_ENV"]

#: name -> (module, reader function)
READERS: dict[str, tuple[str, str]] = {
    "fer2013": ("litefer.data.fer2013", "load_fer2013"),
    "ferplus": ("litefer.data.ferplus", "load_ferplus"),
    "rafdb": ("litefer.data.rafdb", "load_rafdb"),
    "affectnet": ("litefer.data.affectnet", "load_affectnet"),
    "ckplus": ("litefer.data.ckplus", "load_ckplus"),
    "folder": ("litefer.data.folder", "load_folder"),
}
ALIASES = {"fer+": "ferplus", "fer_plus": "ferplus", "raf-db": "rafdb", "raf_db": "rafdb", "ck+": "ckplus",
           "ck+48": "ckplus", "ck": "ckplus", "imagefolder": "folder"}
#: default folder of each dataset under data_root()
DATASET_FOLDERS: dict[str, str] = {
    "fer2013": "fer2013", "ferplus": "ferplus", "rafdb": "rafdb", "affectnet": "affectnet",
    "ckplus": "ckplus/CK+48",
}

#: the splits of each dataset's standard protocol (what ``litefer data audit`` loads)
STANDARD_SPLITS: dict[str, tuple[str, ...]] = {
    "fer2013": ("train", "publictest", "privatetest"), "ferplus": ("train", "publictest", "privatetest"),
    "rafdb": ("train", "test"), "affectnet": ("train", "val"), "ckplus": ("all",),
}


def list_datasets() -> list[str]:
    """Names ``load_dataset`` accepts."""
    return list(READERS)


def canonical_name(name: str) -> str:
    """The reader name of ``name`` (aliases such as ``fer+``, ``ck+`` accepted); KeyError if unknown."""
    return _canonical_name(name)


def _canonical_name(name: str) -> str:
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in READERS:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(READERS)}")
    return key


def _reader(name: str) -> Callable:
    mod, fn = READERS[name]
    return getattr(importlib.import_module(mod), fn)


def dataset_root(name: str) -> Path:
    """Default folder of dataset ``name``: ``data_root()/<folder>``.

    A relative ``data_root()`` that does not exist from the working directory is also
    tried relative to the repository (so ``../shared/data`` works from any directory).
    """
    name = _canonical_name(name)
    if name not in DATASET_FOLDERS:
        raise DatasetError(f"dataset {name!r} has no default folder; pass root=")
    base = data_root()
    if not base.is_absolute() and not base.exists():
        alt = Path(__file__).resolve().parents[2] / base
        if alt.exists():
            base = alt
    return base / DATASET_FOLDERS[name]


def load_dataset(name: str, root=None, split: Optional[str] = "train", **opts) -> FaceArrays:
    """Split ``split`` of dataset ``name`` as :class:`FaceArrays` (see the module docstring)."""
    key = _canonical_name(name)
    fn = _reader(key)
    params = inspect.signature(fn).parameters
    known = [p for p in params if p not in ("root", "split")]
    bad = sorted(set(opts) - set(known))
    if bad:
        raise TypeError(f"{key} does not take option(s) {bad}; known: {', '.join(known)}")
    if root is None:
        if key == "folder":
            raise DatasetError("the 'folder' reader needs root= (the class-folder tree)")
        root = dataset_root(key)
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"{key} not found (set ${DATA_ENV} to the folder holding {DATASET_FOLDERS.get(key, key)}/ "
                           "or pass root=)", path=root)
    return fn(root, **opts) if split is None else fn(root, split=split, **opts)
