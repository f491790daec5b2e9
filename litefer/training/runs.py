"""Listing training runs: ``list_runs("runs")`` -> one :class:`RunInfo` per run folder.

A run folder is one holding ``status.json`` (written by the trainer while it runs, when it
stops and when it finishes) or, for runs of older versions, ``last.pt`` / ``result.json``.
The state is ``running`` (the process that wrote the status is alive on this host),
``stopped`` (it ended without finishing: a signal, a crash, a kill -9; resumable from its
``last.pt``), ``finished`` or ``failed`` (an error; the message is kept).
"""
from __future__ import annotations

import csv
import json
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from litefer.training.state import STATUS_FILE, pid_alive, read_status

MAX_DEPTH = 4


@dataclass
class RunInfo:
    path: Path
    name: str
    arch: Optional[str]
    data: Optional[str]
    epoch: Optional[float]
    epochs: Optional[int]
    best_value: Optional[float]
    best_epoch: Optional[int]
    monitor: Optional[str]
    images_per_s: Optional[float]
    eta_s: Optional[float]
    state: str
    note: str = ""
    updated: Optional[float] = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def _find(root: Path) -> list[Path]:
    found = []
    root = Path(root)
    if not root.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(root):
        depth = len(Path(dirpath).relative_to(root).parts)
        if depth >= MAX_DEPTH:
            dirnames[:] = []
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "tb")
        if STATUS_FILE in filenames or "last.pt" in filenames or "result.json" in filenames:
            found.append(Path(dirpath))
    return found


def _from_legacy(folder: Path) -> RunInfo:
    res = None
    try:
        res = json.loads((folder / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    epochs_done = None
    try:
        with open(folder / "metrics.csv", newline="") as fh:
            epochs_done = sum(1 for _ in csv.DictReader(fh))
    except OSError:
        pass
    return RunInfo(folder, (res or {}).get("name") or folder.name, (res or {}).get("arch"),
                   ((res or {}).get("data") or {}).get("dataset"), epochs_done, None,
                   (res or {}).get("best_value"), (res or {}).get("best_epoch"), (res or {}).get("monitor"),
                   None, None, "finished" if res else "stopped", "no status.json (older run)")


def run_info(folder: Path) -> RunInfo:
    st = read_status(folder)
    if st is None:
        return _from_legacy(folder)
    state = st.get("state", "unknown")
    note = ""
    if state == "running":
        same_host = st.get("host") in (None, socket.gethostname(), os.uname().nodename)
        if same_host and not pid_alive(st.get("pid")):
            state, note = "stopped", "process gone without a final status (killed?); resume from last.pt"
        elif not same_host:
            note = f"on {st.get('host')}"
    elif state == "stopped":
        note = f"{st.get('signal', '')}; resume: litefer train {folder}".strip("; ")
    elif state == "failed":
        note = st.get("error", "")
    iters = st.get("iters") or 0
    epoch = st.get("epoch")
    if epoch is not None and iters:
        epoch = epoch + (st.get("iter") or 0) / iters
    data = st.get("dataset")
    if data and st.get("train_split"):
        data = f"{data}/{st['train_split']}"
    return RunInfo(folder, st.get("name") or folder.name, st.get("arch"), data, epoch, st.get("epochs"),
                   st.get("best_value"), st.get("best_epoch"), st.get("monitor"), st.get("images_per_s"),
                   st.get("eta_s") if state == "running" else None, state, note, st.get("updated"))


def list_runs(root: str | Path = "runs") -> list[RunInfo]:
    """Every run folder under ``root`` (``root`` itself included), sorted by path."""
    return [run_info(f) for f in _find(Path(root))]


def format_eta(seconds: Optional[float]) -> str:
    if seconds is None:
        return "—"
    s = int(seconds)
    if s >= 86400:
        return f"{s // 86400}d{(s % 86400) // 3600:02d}h"
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s"
