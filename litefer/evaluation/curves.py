"""Learning curves of training runs: read a run's ``metrics.csv``, draw it, tabulate it.

>>> from litefer.evaluation.curves import read_curve, plot_curves, curve_table
>>> c = read_curve("runs/i_mobilenetv2_fer2013")          # a run folder or its metrics.csv
>>> c.best_epoch, c.rows[-1]["val_acc"]
>>> plot_curves([c], "curves.png")                        # accuracy, loss and learning rate
>>> print(curve_table(c, every=5))                        # markdown, the best epoch in bold
>>> stages = read_stages("runs/stage2")                   # stage 2 and the run(s) it started from

A run that started from another run's selected weights (its config's ``model.init_from``
naming that run's ``best.pt``: a second stage, a warm restart) continues that run's curve:
:func:`read_stages` returns the chain, first stage first, each later stage with an
``offset`` (the epochs of the earlier stages that its weights went through), so that
tables and figures count epochs from the first stage (``litefer curves --stages``).

The trainer writes one ``metrics.csv`` row per epoch (``epoch, lr, train_loss, train_acc,
..., val_loss, val_acc, val_mean_class_acc, val_macro_f1, best, time_s, images_per_s``;
``best`` is true on each epoch that improved the monitored score), so a run's curve can be
read while it is still training.  ``litefer curves RUN...`` is the command.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from litefer.evaluation.report import markdown_table, pct

METRICS_FILE = "metrics.csv"
#: columns every row must carry (older and newer trainers both write them)
REQUIRED = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc")
_BOOL = {"true": True, "false": False, "1": True, "0": False}


class CurveError(ValueError):
    """A metrics file that cannot be read; the message names the file (and line, field)."""


@dataclass
class Curve:
    name: str
    path: Path                       # the metrics.csv read
    rows: list[dict]                 # one per epoch: numbers (None where empty), ``best`` a bool
    #: epochs of earlier stages before this run's epoch 1 (:func:`read_stages`); 0 for a first run
    offset: int = 0
    #: the run whose selected weights this one started from (:func:`read_stages`)
    parent: Optional["Curve"] = None

    @property
    def best_epoch(self) -> Optional[int]:
        """The last epoch flagged ``best`` (the checkpoint kept as best.pt), else None."""
        flagged = [r["epoch"] for r in self.rows if r.get("best")]
        return flagged[-1] if flagged else None

    @property
    def best_row(self) -> Optional[dict]:
        e = self.best_epoch
        return next((r for r in self.rows if r["epoch"] == e), None)

    @property
    def minutes(self) -> float:
        """Training wall time so far, minutes (sum of the rows' ``time_s``)."""
        return sum(r.get("time_s") or 0.0 for r in self.rows) / 60.0


def _number(text: str, where: str, field: str):
    text = text.strip()
    if text == "":
        return None
    try:
        v = float(text)
    except ValueError:
        raise CurveError(f"{where}: field {field!r}: {text!r} is not a number") from None
    return None if math.isnan(v) else v


def read_curve(run: str | Path, name: Optional[str] = None) -> Curve:
    """The :class:`Curve` of ``run``: a run folder (its ``metrics.csv``) or a metrics file."""
    run = Path(run)
    path = run / METRICS_FILE if run.is_dir() else run
    if not path.is_file():
        hint = " (is it a run folder? the trainer writes metrics.csv after the first epoch)" if run.is_dir() else ""
        raise CurveError(f"{path}: no such file{hint}")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = [c for c in REQUIRED if c not in header]
            if missing:
                raise CurveError(f"{path}:1: not a litefer metrics file: missing column(s) {missing}")
            rows = []
            for line_no, raw in enumerate(reader, start=2):
                where = f"{path}:{line_no}"
                if None in raw or any(v is None for v in raw.values()):
                    raise CurveError(f"{where}: {len(header)} columns expected, the row has a different count")
                row: dict = {}
                for k, v in raw.items():
                    if k == "best":
                        flag = _BOOL.get(v.strip().lower())
                        if flag is None:
                            raise CurveError(f"{where}: field 'best': {v!r} is not true/false")
                        row[k] = flag
                    else:
                        row[k] = _number(v, where, k)
                if row["epoch"] is None or row["epoch"] != int(row["epoch"]) or row["epoch"] < 1:
                    raise CurveError(f"{where}: field 'epoch': {raw['epoch']!r} is not a positive whole number")
                row["epoch"] = int(row["epoch"])
                if rows and row["epoch"] <= rows[-1]["epoch"]:
                    raise CurveError(f"{where}: epoch {row['epoch']} does not follow epoch {rows[-1]['epoch']}")
                rows.append(row)
    except UnicodeDecodeError:
        raise CurveError(f"{path}: not a text file") from None
    if not rows:
        raise CurveError(f"{path}: no epochs yet")
    if name is None:
        name = (path.parent if path.name == METRICS_FILE else path).name
    return Curve(name, path, rows)


def _init_from(run_dir: Path) -> Optional[Path]:
    """The weight file a run folder's ``config.yaml`` starts from (``model.init_from``), or None."""
    import yaml
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        return None
    try:
        cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise CurveError(f"{cfg_path}: not a readable config ({type(exc).__name__})") from None
    model = cfg.get("model") if isinstance(cfg, dict) else None
    init = model.get("init_from") if isinstance(model, dict) else None
    if init is None:
        return None
    if not isinstance(init, str):
        raise CurveError(f"{cfg_path}: field 'model.init_from': {init!r} is not a path")
    return Path(init).expanduser()


def read_stages(run: str | Path, name: Optional[str] = None) -> list[Curve]:
    """``run``'s curve preceded by the curves of the runs it was continued from, first stage first.

    A run folder whose ``config.yaml`` has ``model.init_from`` naming another run folder's
    ``best.pt`` is a later stage of that run: its ``offset`` is the earlier run's selected
    epoch (the last one flagged ``best``: the weights in best.pt) plus that run's own offset.
    A weight file that is not a run's ``best.pt`` (a user's ImageNet weights, say) ends the
    chain. A relative ``init_from`` (the trainer records the path as it found it) is read from
    the working folder, else from the run folder. Errors name the file: a ``best.pt`` whose
    run has no epoch flagged best, a ``best.pt`` in a folder that does not exist, or a loop of runs.
    """
    curve = read_curve(run, name)
    chain = [curve]
    seen = {curve.path.resolve()}
    while True:
        run_dir = chain[0].path.parent
        init = _init_from(run_dir)
        if init is None or init.name != "best.pt":
            break
        if not init.is_absolute() and not init.exists():
            init = run_dir / init
        parent_dir = init.parent
        if not parent_dir.is_dir():
            raise CurveError(f"{run_dir / 'config.yaml'}: model.init_from {init}: no such folder, so the run "
                             f"it continues cannot be read (a relative path is read from the working "
                             f"folder: run this where {run_dir.name} was trained)")
        if not (parent_dir / METRICS_FILE).is_file():
            break                                  # a best.pt outside a run folder: the chain starts here
        parent = read_curve(parent_dir)
        key = parent.path.resolve()
        if key in seen:
            raise CurveError(f"{run_dir / 'config.yaml'}: model.init_from {init} leads back to {parent_dir}: "
                             f"the runs start from each other in a loop")
        if parent.best_epoch is None:
            raise CurveError(f"{parent.path}: no epoch flagged best, so which epoch's weights "
                             f"{run_dir.name} started from is unknown")
        seen.add(key)
        chain[0].parent = parent
        chain.insert(0, parent)
    for prev, nxt in zip(chain, chain[1:]):
        nxt.offset = prev.offset + prev.best_epoch
    return chain


def pick_epochs(curve: Curve, every: Optional[int] = None, max_rows: int = 16) -> list[int]:
    """Epochs worth a table row: the first, every ``every``-th (chosen to give about
    ``max_rows`` rows when None), the best (the one kept as best.pt) and the last."""
    epochs = [r["epoch"] for r in curve.rows]
    last = epochs[-1]
    if every is None:
        every = max(1, math.ceil(last / max(1, max_rows - 2)))
    if every < 1:
        raise CurveError(f"every must be >= 1, got {every}")
    keep = {epochs[0], last} | {e for e in epochs if e % every == 0}
    if curve.best_epoch is not None:
        keep.add(curve.best_epoch)
    return sorted(keep)


def curve_table(curve: Curve, every: Optional[int] = None, max_rows: int = 16) -> str:
    """Markdown table of ``curve`` at :func:`pick_epochs`; the validation accuracy of the
    best epoch (by the run's monitored score) is in bold."""
    by_epoch = {r["epoch"]: r for r in curve.rows}
    best = curve.best_epoch
    rows = []
    elapsed = 0.0
    cumulative = {}
    for r in curve.rows:
        elapsed += r.get("time_s") or 0.0
        cumulative[r["epoch"]] = elapsed / 60.0
    def percent(v):
        return "—" if v is None else f"{pct(v)} %"

    for e in pick_epochs(curve, every, max_rows):
        r = by_epoch[e]
        val = percent(r["val_acc"])
        rows.append(([e + curve.offset] if curve.offset else [])
                    + [e, percent(r["train_acc"]), f"**{val}**" if e == best else val,
                       percent(r.get("val_mean_class_acc")),
                       "—" if r["val_loss"] is None else f"{r['val_loss']:.4f}",
                       "—" if r["lr"] is None else f"{r['lr']:.2e}", f"{cumulative[e]:.0f}"])
    head = ["epoch", "train acc", "val acc", "val mean class acc", "val loss", "lr", "minutes"]
    return markdown_table((["epoch (all stages)"] if curve.offset else []) + head, rows)


def plot_curves(curves: Sequence[Curve], path: str | Path, title: Optional[str] = None, dpi: int = 110) -> Path:
    """Save accuracy, loss and learning rate against epoch for ``curves`` as a PNG.

    Validation solid, training dashed, one colour per run; each run's best epoch is marked
    (a dot) and its score is in the legend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not curves:
        raise CurveError("plot_curves: no curves given")
    fig = Figure(figsize=(13.5, 4.0), dpi=dpi)
    FigureCanvasAgg(fig)
    ax_acc, ax_loss, ax_lr = (fig.add_subplot(1, 3, i) for i in (1, 2, 3))
    colours = [f"C{i % 10}" for i in range(len(curves))]
    for c, col in zip(curves, colours):
        ep = [r["epoch"] + c.offset for r in c.rows]

        def series(key, scale=1.0):
            return [None if r.get(key) is None else scale * r[key] for r in c.rows]

        mk = "." if len(ep) < 3 else None                     # a line needs two points
        b = c.best_row
        has_best = b is not None and b["val_acc"] is not None
        best = f" (best.pt: {100 * b['val_acc']:.2f} % @{b['epoch'] + c.offset})" if has_best else ""
        ax_acc.plot(ep, series("val_acc", 100), color=col, marker=mk, label=f"{c.name} val{best}")
        ax_acc.plot(ep, series("train_acc", 100), color=col, ls="--", marker=mk, alpha=0.7, label=f"{c.name} train")
        ax_loss.plot(ep, series("val_loss"), color=col, marker=mk, label=f"{c.name} val")
        ax_loss.plot(ep, series("train_loss"), color=col, ls="--", marker=mk, alpha=0.7, label=f"{c.name} train")
        ax_lr.plot(ep, series("lr"), color=col, marker=mk, label=c.name)
        if has_best:                                          # the epoch kept as best.pt
            ax_acc.plot([b["epoch"] + c.offset], [100 * b["val_acc"]], "o", color=col)
        if c.offset:                                          # a later stage: where it restarted
            src = f" from {c.parent.name} @{c.parent.best_epoch + c.parent.offset}" if c.parent else ""
            ax_acc.axvline(c.offset, color=col, ls=":", lw=1, label=f"{c.name} starts{src}")
            for ax in (ax_loss, ax_lr):
                ax.axvline(c.offset, color=col, ls=":", lw=1)
    ax_acc.set_ylabel("accuracy (%)")
    ax_loss.set_ylabel("loss")
    ax_lr.set_ylabel("learning rate")
    if all(v > 0 for c in curves for v in (r["lr"] for r in c.rows) if v is not None):
        ax_lr.set_yscale("log")
    staged = any(c.offset for c in curves)
    for ax in (ax_acc, ax_loss, ax_lr):
        ax.set_xlabel("epoch (all stages)" if staged else "epoch")
        ax.grid(alpha=0.3)
    # one legend under the three panels: run names can be long, and the colours are the same in all
    handles, labels = ax_acc.get_legend_handles_labels()
    ncol = 2 if len(handles) > 3 else 1
    rows = math.ceil(len(handles) / ncol)
    fig.set_size_inches(13.5, 4.0 + 0.18 * rows)
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=ncol, frameon=False)
    fig.suptitle(title or ", ".join(c.name for c in curves), fontsize=10)
    fig.tight_layout(rect=(0, (0.18 * rows + 0.1) / (4.0 + 0.18 * rows), 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
