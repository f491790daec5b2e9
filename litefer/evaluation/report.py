"""Evaluation outputs: markdown report, metrics JSON, confusion-matrix PNG, predictions CSV.

:func:`write_report` writes, into one folder:

- ``report.md``: source, data, preprocessing, TTA, label mapping, the summary metrics,
  a per-class precision/recall/F1 table and the confusion matrix (counts);
- ``metrics.json``: everything :func:`litefer.evaluation.metrics.compute_metrics` returns
  plus the run's context;
- ``confusion.png``: the row-normalised confusion matrix (rows: true class, with its
  recall in the tick label; columns: predicted class; an extra *unmapped* column when a
  model class the dataset lacks was predicted);
- ``predictions.csv``: one row per image: id, true label, predicted label (the model's
  own class name, e.g. ``contempt``), the dataset label it counts as, correct, and the
  probability of every model class.

Figures use matplotlib's Agg canvas directly (no pyplot state, safe without a display).
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

UNMAPPED_COLUMN = "unmapped"


# ------------------------------------------------------------------------------ tables
def _cell(v: Any) -> str:
    s = "—" if v is None else str(v)
    return s.replace("|", "\\|").replace("\n", " ")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
                   align: Optional[Sequence[str]] = None) -> str:
    """A GitHub-flavoured markdown table; ``align`` per column: ``"l"``, ``"r"`` or ``"c"``."""
    align = list(align) if align is not None else ["l"] + ["r"] * (len(headers) - 1)
    marks = {"l": ":---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(_cell(h) for h in headers) + " |",
             "| " + " | ".join(marks.get(a, "---") for a in align) + " |"]
    for r in rows:
        lines.append("| " + " | ".join(_cell(v) for v in r) + " |")
    return "\n".join(lines) + "\n"


def write_csv(path: str | Path, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(headers)
        for r in rows:
            w.writerow(["" if v is None else v for v in r])
    return path


def pct(v: Optional[float], digits: int = 2) -> str:
    """``0.71234 -> "71.23"`` (percent, no sign); ``None``/NaN -> ``"—"``."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{100.0 * v:.{digits}f}"


def _json_default(o: Any):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return None if np.isnan(o) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


def _clean(o: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, numpy scalars/arrays -> Python."""
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple, set)):
        return [_clean(v) for v in o]
    if isinstance(o, np.ndarray):
        return _clean(o.tolist())
    if isinstance(o, (np.integer, np.bool_)):
        return o.item()
    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(o) else None
    return o


def write_json(path: str | Path, obj: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(obj), indent=2, default=_json_default, allow_nan=False), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ figure
def plot_confusion(conf: Sequence[Sequence[float]], labels: Sequence[str], path: str | Path,
                   title: Optional[str] = None, unmapped: Optional[Sequence[int]] = None,
                   unmapped_label: str = UNMAPPED_COLUMN, dpi: int = 120) -> Path:
    """Save the row-normalised confusion matrix of count matrix ``conf`` as a PNG.

    Rows are true classes (tick labels carry the recall and support), columns predicted
    classes; each cell shows the fraction of the row's images.  ``unmapped`` (per true
    class counts of predictions outside the label set) adds a last column, ``unmapped_label``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.asarray(conf, dtype=np.float64)
    labels = list(labels)
    c = len(labels)
    if counts.shape != (c, c):
        raise ValueError(f"confusion matrix of shape {counts.shape} for {c} labels")
    cols = list(labels)
    if unmapped is not None and np.asarray(unmapped).sum() > 0:
        counts = np.hstack([counts, np.asarray(unmapped, dtype=np.float64)[:, None]])
        cols.append(unmapped_label)
    support = counts.sum(1)
    norm = np.full_like(counts, np.nan)
    norm[support > 0] = counts[support > 0] / support[support > 0, None]
    recall = [norm[i, i] if support[i] > 0 else None for i in range(c)]

    size = max(4.5, 0.8 * len(cols) + 2.5)
    fig = Figure(figsize=(size + 1.0, size), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    shown = np.ma.masked_invalid(norm)
    im = ax.imshow(100.0 * shown, cmap="Blues", vmin=0.0, vmax=100.0, interpolation="nearest", aspect="equal")
    ax.set_facecolor("#dddddd")                              # absent classes: grey rows
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cb.set_label("% of the true class")
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels(cols, rotation=45, ha="right")
    ax.set_yticks(range(c))
    ax.set_yticklabels([f"{n}  ({pct(r, 1)}%, n={int(s)})" if r is not None else f"{n}  (absent)"
                        for n, r, s in zip(labels, recall, support)])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class  (recall, support)")
    fontsize = 9 if len(cols) <= 8 else 7
    for i in range(c):
        for j in range(len(cols)):
            v = norm[i, j]
            if np.isnan(v):
                continue
            ax.text(j, i, f"{100 * v:.0f}" if v >= 0.005 or v == 0 else "<1", ha="center", va="center",
                    fontsize=fontsize, color="white" if v > 0.55 else "black")
    ax.set_title(title or "confusion matrix (row-normalised, %)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight", pad_inches=0.15)   # nothing clipped
    return path


# ------------------------------------------------------------------------------ report
def markdown_report(res, title: Optional[str] = None, figure: Optional[str] = "confusion.png") -> str:
    """The markdown text of an :class:`~litefer.evaluation.predict.EvalResult`."""
    m = res.metrics
    labels = list(res.labels)
    where = f"{res.dataset or 'dataset'}" + (f" / {res.split}" if res.split else "")
    src = Path(res.source).name if res.source else "model"
    out = [f"# {title or f'Evaluation of {src} on {where}'}\n"]
    pre = res.preprocess
    model = f"`{res.source}`"
    if res.info.get("arch"):
        model += f" ({res.info['arch']}" + (f", epoch {res.info['epoch']}" if res.info.get("epoch") else "") + ")"
    model += f", {len(res.model_labels)} classes"
    facts = [
        ("model", model),
        ("data", f"{where}: {m['n']} images, {m['num_classes_present']} of {len(labels)} classes present"),
        ("preprocess", f"{pre.get('channels')} channel(s), {pre.get('size')}x{pre.get('size')}, "
                       f"mean {pre.get('mean')}, std {pre.get('std')}, crop {pre.get('crop', '?')}"),
        ("test-time augmentation", "horizontal flip, probabilities averaged" if res.tta else "none"),
    ]
    if m.get("label_mapping"):
        facts.append(("label mapping", m["label_mapping"]))
    for k, v in (res.info.get("notes") or {}).items():
        facts.append((k, v))
    if res.info.get("skipped"):
        facts.append(("skipped by the reader", res.info["skipped"]))
    out.append("\n".join(f"- **{k}**: {v}" for k, v in facts) + "\n")

    out.append("## Summary\n")
    rows = [("accuracy", pct(m["accuracy"])), ("mean per-class accuracy", pct(m["mean_class_acc"])),
            ("macro F1", pct(m["macro_f1"])), ("weighted F1", pct(m["weighted_f1"]))]
    if m["unmapped_predictions"]:
        rows.append(("unmapped predictions (counted wrong)", f"{m['unmapped_predictions']} "
                     f"({pct(m['unmapped_predictions'] / m['n'])}%)"))
    out.append(markdown_table(["metric", "%"], rows))
    out.append("Mean per-class accuracy and macro F1 average over the classes present in the data.\n")

    out.append("## Per class\n")
    pc = m["per_class"]
    out.append(markdown_table(
        ["class", "support", "precision %", "recall %", "F1 %", "predicted"],
        [(n, pc[n]["support"], pct(pc[n]["precision"]), pct(pc[n]["recall"]), pct(pc[n]["f1"]), pc[n]["predicted"])
         for n in labels]))

    out.append("## Confusion matrix (counts; rows true, columns predicted)\n")
    conf = m["confusion"]
    extra = bool(m["unmapped_predictions"])
    headers = ["true \\ predicted", *labels] + ([_unmapped_label(res)] if extra else [])
    crow = [(n, *conf[i]) + ((m["unmapped_per_class"][i],) if extra else ()) for i, n in enumerate(labels)]
    out.append(markdown_table(headers, crow))
    if figure:
        out.append(f"![row-normalised confusion matrix]({figure})\n")
    return "\n".join(out)


def write_predictions(res, path: str | Path) -> Path:
    """``predictions.csv``: id, true, predicted (model label), counted_as (dataset label or
    'unmapped'), correct, confidence, p_<model label>..."""
    labels, mlabels = list(res.labels), list(res.model_labels)
    headers = ["id", "true", "predicted", "counted_as", "correct", "confidence", *[f"p_{n}" for n in mlabels]]
    rows = []
    for i, id_ in enumerate(res.ids):
        t, p, mp = int(res.y_true[i]), int(res.y_pred[i]), int(res.model_pred[i])
        counted = labels[p] if p >= 0 else UNMAPPED_COLUMN
        # under the "restrict" policy the counted class can differ from the raw argmax
        rows.append([id_, labels[t], mlabels[mp], counted, int(p == t), f"{res.probs[i, mp]:.5f}",
                     *[f"{v:.5f}" for v in res.probs[i]]])
    return write_csv(path, headers, rows)


def _unmapped_label(res) -> str:
    only = getattr(getattr(res, "mapping", None), "model_only", ())
    return f"{UNMAPPED_COLUMN} ({', '.join(only)})" if only else UNMAPPED_COLUMN


def write_report(res, out_dir: str | Path, title: Optional[str] = None) -> dict[str, Path]:
    """Write report.md, metrics.json, confusion.png and predictions.csv; returns their paths
    (also stored in ``res.files``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    m = res.metrics
    acc = pct(m["accuracy"])
    fig_title = (title or f"{res.dataset or 'data'}{' / ' + res.split if res.split else ''}") + \
        f": acc {acc}%, mean class acc {pct(m['mean_class_acc'])}%" + (" (TTA)" if res.tta else "")
    files = {
        "confusion.png": plot_confusion(m["confusion"], res.labels, out / "confusion.png", title=fig_title,
                                        unmapped=m["unmapped_per_class"],
                                        unmapped_label=_unmapped_label(res)),
        "report.md": out / "report.md",
        "metrics.json": write_json(out / "metrics.json", {
            "source": res.source, "dataset": res.dataset, "split": res.split, "preprocess": res.preprocess,
            "info": res.info, **m}),
        "predictions.csv": write_predictions(res, out / "predictions.csv"),
    }
    (out / "report.md").write_text(markdown_report(res, title), encoding="utf-8")
    res.files = {k: Path(v) for k, v in files.items()}
    return res.files
