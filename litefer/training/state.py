"""Checkpoint files, resumable training state and the run's ``status.json``.

Everything the trainer writes loads with ``torch.load(..., weights_only=True)``: tensors,
numbers, strings, lists and dicts only.  RNG states are stored as tensors and plain
numbers (:func:`rng_state`), versions as strings (:func:`plain`), and reading refuses a
file that needs the pickle machinery (:func:`safe_load`): a crafted ``.pt`` cannot run
code in ``litefer train --resume``.

Files are replaced atomically (:func:`atomic_write`): the new content goes to a temporary
file in the same folder, is flushed to disk (fsync) and renamed over the old one, so a
kill during the write leaves the previous good file in place.
"""
from __future__ import annotations

import io
import json
import math
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from litefer.training.config import ConfigError

#: a file the trainer writes: ``status.json`` in every run folder (see :func:`write_status`)
STATUS_FILE = "status.json"


# ------------------------------------------------------------------------------ atomic files
def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, data: bytes | str | Callable[[io.BufferedWriter], None]) -> Path:
    """Replace ``path`` with ``data`` (bytes, text, or a function writing to a binary file)
    via a fsync'ed temporary file in the same folder and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def save_checkpoint(obj: dict, path: str | Path) -> Path:
    """``torch.save`` of a plain dict, atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda fh: torch.save(obj, fh))


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o: Any):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def safe_load(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` through litefer's one safe loader
    (:func:`litefer.models.checkpoint.safe_torch_load`): a file that needs pickled Python
    objects is refused (its code never runs), as are unreadable files; the error is a
    :class:`ConfigError` here so the CLI reports it as a bad input."""
    from litefer.models.checkpoint import CheckpointError, safe_torch_load
    try:
        return safe_torch_load(path, what)
    except CheckpointError as exc:
        raise ConfigError(str(exc)) from None          # the message names the file


def plain(obj: Any) -> Any:
    """``obj`` with numpy scalars/arrays, paths and str subclasses (``torch.__version__``)
    turned into plain Python types, so it survives ``weights_only=True`` loading."""
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, dict):
        return {str(k) if not isinstance(k, (int, str)) else k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, bool) or obj is None:
        return obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj)
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


# ------------------------------------------------------------------------------ RNG states
def rng_state() -> dict:
    """torch / numpy / python global RNG states as tensors and plain numbers."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    st = {"torch": torch.get_rng_state(),
          "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                    "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
          "python": {"version": int(version), "state": torch.tensor(py_state, dtype=torch.int64),
                     "gauss": None if py_gauss is None else float(py_gauss)}}
    if torch.cuda.is_available():
        st["cuda"] = list(torch.cuda.get_rng_state_all())
    return st


def set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    n = st["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = st["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    if "cuda" in st and torch.cuda.is_available() and len(st["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(st["cuda"])


# ------------------------------------------------------------------------------ run status
def pid_alive(pid: Optional[int]) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, ValueError):
        return False
    return True


def write_status(out: Path, **fields: Any) -> None:
    """Write ``out/status.json`` (what ``litefer runs`` lists); never fails the run."""
    try:
        write_json(Path(out) / STATUS_FILE, {**fields, "pid": os.getpid(), "host": os.uname().nodename,
                                             "updated": time.time()})
    except OSError:
        pass


def read_status(folder: Path) -> Optional[dict]:
    f = Path(folder) / STATUS_FILE
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def finite_or_none(v: Any) -> Any:
    return v if not isinstance(v, float) or math.isfinite(v) else None
