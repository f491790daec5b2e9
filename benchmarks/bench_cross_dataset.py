#!/usr/bin/env python
"""Generalisation, side by side with ``fer``: accuracy on CK+48, a dataset that no compared
model was trained or selected on.

    .venv/bin/python benchmarks/bench_cross_dataset.py                         # bundled default
    .venv/bin/python benchmarks/bench_cross_dataset.py --model default,runs/x/best.pt \
        --json docs/results/cross_ckplus.json --md out/cross.md

CK+48 (``$LITEFER_DATA/ckplus/CK+48``): 981 posed laboratory faces (48x48 grey crops, the
last three frames of 327 sequences of 118 subjects), 7 classes: angry, contempt, disgust,
fear, happy, sad, surprise, and no neutral.  FER2013 / FER+ models were trained on web
photos, so this measures how they carry over to other faces, cameras and posers.

Every model sees the same crops and answers with the most probable of the classes CK+ has
(``--unmapped restrict`` in ``litefer evaluate`` terms: a FER model's "neutral" is
ignored, else ~30 % of these faces would be answered "neutral", always wrong here).
Two views:

- **all 981 faces, 7 classes**: a model without a contempt class (fer's and every FER2013
  model) gets the 54 contempt faces wrong by construction;
- **927 faces without contempt, 6 classes**: the classes every compared model has, so the
  comparison is like for like.

fer's classifier (mini-Xception, quantised TFLite, fer's default) gets each crop resized to
64x64 and ``(x/255 - 0.5) * 2``, how it was trained; it runs in the ``.venv-fer``
interpreter (``../shared/PEERS.md``), never as a litefer dependency.  litefer's models run
as ``litefer evaluate`` runs them (PyTorch, fp32, the checkpoint's own preprocessing).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench_models import env_info, write_outputs  # noqa: E402
from bench_peer_fer import FER_LABELS, fer_python  # noqa: E402

#: run by the .venv-fer interpreter: argv[1] = faces .npy, argv[2] = output .npy of probabilities
FER_PROBS = r'''
import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np, cv2
from fer.fer import FER
faces = np.load(sys.argv[1])
x = np.stack([cv2.resize(f, (64, 64)) for f in faces]).astype(np.float32) / 255.0
x = (x - 0.5) * 2.0
det = FER(mtcnn=False, use_tflite=True)
np.save(sys.argv[2], np.concatenate([np.asarray(det._classify_emotions(x[i:i + 256]))
                                     for i in range(0, len(x), 256)]).astype(np.float64))
'''


def scores(probs: np.ndarray, model_labels, y: np.ndarray, data_labels) -> dict:
    """Accuracy, mean class accuracy and macro-F1 of ``probs`` on the faces of ``y``, the
    prediction restricted to the classes the data has."""
    from litefer.evaluation.metrics import compute_metrics, map_labels
    mapping = map_labels(model_labels, data_labels, "restrict")
    m = compute_metrics(y, mapping.predict(probs), list(data_labels))
    return {"n": int(len(y)), "accuracy": m["accuracy"], "mean_class_acc": m["mean_class_acc"],
            "macro_f1": m["macro_f1"], "cannot_predict": list(mapping.data_only)}


def both_views(probs: np.ndarray, model_labels, y: np.ndarray, labels) -> dict:
    keep = np.array([labels[i] != "contempt" for i in y])
    six = [n for n in labels if n != "contempt"]
    y6 = np.array([six.index(labels[i]) for i in y[keep]])
    return {"all": scores(probs, model_labels, y, labels),
            "no_contempt": scores(probs[keep], model_labels, y6, six)}


def litefer_probs(name: str, faces: np.ndarray) -> tuple[np.ndarray, list, str]:
    from litefer.evaluation.predict import load_for_eval, predict_proba
    model, meta = load_for_eval(name, "cpu")
    probs = predict_proba(model, faces, meta.preprocess)
    trained = (meta.extra or {}).get("trained_on") or (meta.extra or {}).get("dataset") or ""
    return np.asarray(probs, dtype=np.float64), list(meta.labels), str(trained)


def pct(x) -> str:
    return "—" if x is None else f"{100 * x:.2f} %"


def markdown(res: dict) -> str:
    cpu = res["env"]["cpu"] if isinstance(res["env"]["cpu"], dict) else {"model": res["env"]["cpu"]}
    lines = [f"## Generalisation: CK+48, outside every compared model's training data",
             "",
             f"{res['n']} faces ({res['n_no_contempt']} without contempt); CPU: {cpu.get('model', '?')}, "
             f"{cpu.get('logical_cores', '?')} logical cores; "
             f"{res['env']['date']}. Prediction: the most probable of the classes CK+ has.",
             "",
             f"| model | classes | all {res['n']}: accuracy | mean class acc | macro-F1 | "
             f"{res['n_no_contempt']} without contempt: accuracy | mean class acc |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        a, b = r["all"], r["no_contempt"]
        lines.append(f"| {r['name']} | {len(r['labels'])} | {pct(a['accuracy'])} | {pct(a['mean_class_acc'])} | "
                     f"{pct(a['macro_f1'])} | {pct(b['accuracy'])} | {pct(b['mean_class_acc'])} |")
    lines += ["", f"A model without a contempt class gets the {res['n'] - res['n_no_contempt']} contempt faces "
              "wrong by construction "
              "(first three columns); the last two compare every model on the classes all of them have.",
              "CK+48 has 3 frames per sequence (327 sequences, 118 subjects): the faces are not independent, "
              "so differences of a point or two are within noise.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default", help="comma-separated bundled names / checkpoints")
    ap.add_argument("--fer-python", default=None, help="the .venv-fer interpreter (default .venv-fer/bin/python)")
    ap.add_argument("--no-fer", action="store_true", help="litefer's models only")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--md", type=Path, default=None)
    args = ap.parse_args(argv)

    from litefer.data import load_dataset
    ds = load_dataset("ckplus", split="all")
    labels, faces, y = list(ds.labels), ds.images, np.asarray(ds.hard_targets)
    rows = []
    for name in [m.strip() for m in args.model.split(",") if m.strip()]:
        t0 = time.perf_counter()
        probs, mlabels, trained = litefer_probs(name, faces)
        rows.append({"name": f"litefer {name}", "labels": mlabels, "trained_on": trained,
                     "seconds": time.perf_counter() - t0, **both_views(probs, mlabels, y, labels)})
        print(f"{name}: {rows[-1]['all']['accuracy']:.4f}", file=sys.stderr, flush=True)
    fer_version = None
    if not args.no_fer:
        py = fer_python(args.fer_python)
        with tempfile.TemporaryDirectory(prefix="litefer-cross-") as tmpd:
            fin, fout = Path(tmpd) / "faces.npy", Path(tmpd) / "probs.npy"
            np.save(fin, faces)
            t0 = time.perf_counter()
            proc = subprocess.run([str(py), "-c", FER_PROBS, str(fin), str(fout)], capture_output=True, text=True,
                                  env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"})
            if proc.returncode != 0:
                raise SystemExit(f"the fer worker failed:\n{proc.stderr[-4000:]}")
            probs = np.load(fout)
            ver = subprocess.run([str(py), "-c", "from importlib.metadata import version; print(version('fer'))"],
                                 capture_output=True, text=True)
            fer_version = ver.stdout.strip() or "?"
            rows.append({"name": f"fer {fer_version} (TFLite mini-Xception, FER2013)", "labels": FER_LABELS,
                         "trained_on": "FER2013", "seconds": time.perf_counter() - t0,
                         **both_views(probs, FER_LABELS, y, labels)})
    env = env_info()
    result = {"env": env, "dataset": "ckplus", "split": "all", "n": int(len(y)),
              "n_no_contempt": int(sum(labels[i] != "contempt" for i in y)), "fer_version": fer_version,
              "rows": rows, "command": " ".join([Path(sys.executable).name, *sys.argv])}
    write_outputs(markdown(result), result, args.json, args.md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
