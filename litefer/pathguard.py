"""File-system checks for commands that read input folders and write an output folder.

- :func:`check_output_folder`: an output folder must not contain, or lie inside, an input
  folder (nor be an input file), must not sit under a file or in a system folder
  (``/proc``, ``/sys``, ``/dev``), must be writable, and the result files the command
  writes there must not already exist as folders.
- :func:`make_output_folder`: create it, with a clear error instead of an ``OSError``.
- :func:`link_problem`: why a folder entry that is not a file was skipped when it is a
  symlink (a loop, a broken link, a folder link that is not followed), so a scan can say so.

Errors are :class:`OutputPathError` (a ``ValueError``) whose message names the option and
the path.  Stdlib only.
"""
from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Iterable, Optional

#: kernel / device file systems: never an output folder
SYSTEM_FOLDERS = ("/proc", "/sys", "/dev")


class OutputPathError(ValueError):
    pass


def _inside(child: Path, parent: Path) -> bool:
    """``child`` is ``parent`` or below it (both resolved)."""
    return child == parent or parent in child.parents


def _resolve(p: Path) -> Path:
    try:
        return p.expanduser().resolve()
    except (OSError, RuntimeError):  # a symlink loop on the way
        return Path(os.path.abspath(p.expanduser()))


def check_output_folder(out: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), *,
                        writes: Iterable[str] = (), option: str = "--out") -> Path:
    """The resolved output folder ``out``, or :class:`OutputPathError` saying why it is unsafe.

    inputs: the files and folders the command reads; ``out`` may neither contain an input
        folder nor lie inside one (outputs would land among the inputs, and a recursive
        scan would read them back), nor be an input file.
    writes: names of the files the command will create directly in ``out``; none may
        exist as a folder (or anything but a regular file).
    """
    out = Path(out)
    out_r = _resolve(out)
    if sys.platform.startswith("linux"):
        for sysdir in SYSTEM_FOLDERS:
            if _inside(out_r, Path(sysdir)):
                raise OutputPathError(f"{option} {out}: {sysdir} is a system folder, not a place for results; "
                                      "choose an ordinary folder")
    for p in inputs:
        p = Path(p)
        pr = _resolve(p)
        if pr.is_dir():
            if _inside(out_r, pr):
                raise OutputPathError(f"{option} {out} is inside the input folder {p}; choose a folder outside "
                                      "it (litefer never writes into an input folder)")
            if _inside(pr, out_r):
                raise OutputPathError(f"{option} {out} contains the input folder {p}; results would be written "
                                      "among the inputs: choose a folder outside it")
        elif pr == out_r:
            raise OutputPathError(f"{option} {out} is an input file")
    # the nearest existing ancestor must be a folder we may write in
    anc = out_r
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if anc == out_r and not out_r.is_dir():
        raise OutputPathError(f"{option} {out} exists and is not a folder")
    if not anc.is_dir():
        raise OutputPathError(f"{option} {out}: {anc} is a file, not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise OutputPathError(f"{option} {out}: cannot write in {anc} (permission denied)")
    for name in writes:
        target = out_r / name
        if target.exists() and not target.is_file():
            kind = "a folder" if target.is_dir() else "not a regular file"
            raise OutputPathError(f"{option} {out}: {target} is {kind}; litefer writes its results to that "
                                  "name: move it away or choose another folder")
    return out_r


def make_output_folder(out: str | os.PathLike, option: str = "--out") -> Path:
    """``mkdir -p out`` with a clear :class:`OutputPathError` when it cannot be made."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputPathError(f"{option} {out} exists and is not a folder") from None
    except NotADirectoryError:
        raise OutputPathError(f"{option} {out}: a part of this path is a file, not a folder") from None
    except OSError as exc:
        raise OutputPathError(f"{option} {out}: cannot create it ({exc.strerror or exc})") from None
    return out


def link_problem(path: str | os.PathLike) -> Optional[str]:
    """Why the symlink ``path`` is not read as a file, or None (not a symlink, or a fine one).

    ``"symlink loop"``, ``"broken symlink (target missing)"``, ``"symlink loop (points back to its
    own folder X)"`` or ``"symlinked folder, not followed"``.
    """
    p = Path(path)
    if not p.is_symlink():
        return None
    try:
        target = p.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 reports a loop this way
        return "symlink loop"
    except FileNotFoundError:
        return "broken symlink (target missing)"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop"
        return f"unreadable symlink ({exc.strerror or exc})"
    if target.is_dir():
        parent = _resolve(p.parent)
        if _inside(parent, target):
            return f"symlink loop (points back to its own folder {target})"
        return "symlinked folder, not followed"
    return None
