"""Turn a training run into litefer's bundled default model.

    python scripts/make_bundle.py runs/default_ferplus [--name default] [--extra choice.md] [--force]

Reads ``<run>/best.pt`` (selected on FER+ PublicTest), evaluates it once with
``litefer evaluate`` on FER+ PrivateTest (8 classes, the run's test split) and on
FER2013 PrivateTest (7 classes, contempt counted as an error), and writes
``litefer/assets/<name>.safetensors`` (weights + metadata) and
``litefer/assets/MODEL_CARD.md``.  Refuses to overwrite without ``--force``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path



from litefer.models.checkpoint import ModelMeta, read_checkpoint, save_safetensors
from litefer.deploy.profile import count_flops, count_params

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "litefer" / "assets"


def run_eval(ckpt: Path, dataset: str, split: str, out: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "litefer.cli", "evaluate", str(ckpt), "--dataset", dataset,
           "--split", split, "--out", str(out), *extra]
    print("$", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "metrics.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--name", default="default")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--extra", type=Path, default=None,
                    help="markdown inserted into the model card before its config (e.g. the candidate comparison)")
    args = ap.parse_args()

    ckpt = args.run / "best.pt"
    meta, state, raw = read_checkpoint(ckpt)
    target = ASSETS / f"{args.name}.safetensors"
    if target.exists() and not args.force:
        sys.exit(f"{target} exists; pass --force to replace it")

    ev_dir = args.run / "bundle-eval"
    ferplus = run_eval(ckpt, "ferplus", "privatetest", ev_dir / "ferplus-privatetest",
                       ["--opt", "label_mode=majority", "--opt", "num_classes=8"])
    fer2013 = run_eval(ckpt, "fer2013", "privatetest", ev_dir / "fer2013-privatetest", [])

    from litefer.models import create_model
    model = create_model(meta.arch, num_classes=len(meta.labels),
                         in_chans=meta.preprocess["channels"], **meta.arch_kwargs).eval()
    size = meta.preprocess["size"]
    params = count_params(model)
    flops = count_flops(model, (1, meta.preprocess["channels"], size, size))

    today = dt.date.today().isoformat()
    run_data = json.loads((args.run / "result.json").read_text()).get("data", {})
    soft = run_data.get("train_label_mode") == "probability"
    n_train, n_val = (f"{run_data[k]:,}" if isinstance(run_data.get(k), int) else "?" for k in ("n_train", "n_val"))
    train_labels = ("FER+ vote distributions for training, majority labels for selection and test" if soft
                    else "FER+ majority labels")
    bundle_meta = ModelMeta(meta.arch, meta.labels, meta.preprocess, meta.arch_kwargs, extra={
        "name": args.name, "date": today, "trained_on": f"FERPlus (FER2013 images, {train_labels})",
        "metrics": {"ferplus_privatetest": {k: ferplus[k] for k in ("n", "accuracy", "macro_f1", "mean_class_acc")},
                    "fer2013_privatetest": {k: fer2013[k] for k in ("n", "accuracy", "macro_f1", "mean_class_acc")}},
        "epoch": raw.get("epoch"), "code_version": raw.get("code_version"),
    })
    save_safetensors(target, bundle_meta, state)
    (ASSETS / f"{args.name}.confusion.png").write_bytes((ev_dir / "ferplus-privatetest" / "confusion.png").read_bytes())

    def recall_rows(m: dict) -> str:
        rows = ["| class | recall | precision | support |", "|---|---:|---:|---:|"]
        for lab, d in m["per_class"].items():
            r = "–" if d.get("recall") is None else f"{100 * d['recall']:.1f} %"
            rows.append(f"| {lab} | {r} | {100 * (d.get('precision') or 0):.1f} % | {d.get('support', 0)} |")
        return "\n".join(rows)

    cfg_text = (args.run / "config.yaml").read_text()
    majority_rule = ("the official FER+ majority rule (single votes dropped, > half of the remaining votes, "
                     "unknown/not-a-face dropped)")
    label_text = (f"Training labels: each face's distribution of emotion votes (FER+ `probability` mode, the "
                  f"probabilistic-label scheme of Barsoum et al.; faces whose top vote is unknown / not a face "
                  f"dropped). Validation and test labels: {majority_rule}." if soft
                  else f"Labels: {majority_rule}.")
    extra = (args.extra.read_text().strip() + "\n\n") if args.extra else ""
    card = f"""# litefer bundled model `{args.name}`

| | |
|---|---|
| architecture | `{meta.arch}` {json.dumps(meta.arch_kwargs) if meta.arch_kwargs else ''} |
| input | {meta.preprocess['size']}x{meta.preprocess['size']}, {meta.preprocess['channels']} channel(s), crop `{meta.preprocess.get('crop')}`, (x/255 - {meta.preprocess['mean']}) / {meta.preprocess['std']} |
| labels | {', '.join(meta.labels)} |
| parameters | {params / 1e6:.3f} M (counted) |
| FLOPs | {flops / 1e6:.1f} M per face (counted with torch.utils.flop_counter; MACs = FLOPs / 2) |
| file | `litefer/assets/{target.name}` ({target.stat().st_size / 1e6:.2f} MB) |
| trained | {today}, by `litefer train` (config below), epoch {raw.get('epoch')} selected on FER+ PublicTest |

## Data and terms of use
Trained on **FERPlus**: the FER2013 images (48x48 greyscale faces collected by web search,
ICML 2013 challenge, Goodfellow et al.) with Microsoft's FER+ crowd labels (10 annotators
per image, MIT licence; Barsoum et al., ICMI 2016), read from the FER+ training layout
(`data/FER2013{{Train,Valid,Test}}` PNGs + `label.csv`), 8 classes. {label_text} FER2013 images may be used for research and other non-commercial purposes only,
and so may this model's weights: **research / non-commercial use only**.

## Protocol
Train on FER2013Train ({n_train} images kept), select the epoch on FER2013Valid
(PublicTest, {n_val}), report once on FER2013Test (PrivateTest). The test split was never
used for selection.

## Results (measured by `litefer evaluate`)
| test set | images | accuracy | macro-F1 | mean class accuracy |
|---|---:|---:|---:|---:|
| FER+ PrivateTest (8 classes) | {ferplus['n']} | **{100 * ferplus['accuracy']:.2f} %** | {100 * ferplus['macro_f1']:.2f} % | {100 * ferplus['mean_class_acc']:.2f} % |
| FER2013 PrivateTest (7 classes, original noisy labels; contempt predictions count as errors) | {fer2013['n']} | {100 * fer2013['accuracy']:.2f} % | {100 * fer2013['macro_f1']:.2f} % | {100 * fer2013['mean_class_acc']:.2f} % |

Per class on FER+ PrivateTest:

{recall_rows(ferplus)}

Confusion matrix (row-normalised, FER+ PrivateTest):

![confusion matrix]({args.name}.confusion.png)

Known limits: 48x48 greyscale input, trained on web photos of mostly frontal faces; the rare
classes (disgust, fear, contempt: a few hundred training images or fewer) have low recall;
FER2013/FER+ carry the demographic skews of web image search. Not for decisions about people.

{extra}## Config
```yaml
{cfg_text.strip()}
```
"""
    (ASSETS / "MODEL_CARD.md").write_text(card)
    # the ONNX export ships next to the weights: the torch-free inference path runs it
    # (litefer.deploy.sidecar.bundled_onnx checks it was exported from exactly these weights)
    from litefer.deploy.export import export_onnx
    onnx_path = export_onnx(target, ASSETS / f"{args.name}.onnx", force=True).path
    print(f"wrote {target}, {onnx_path} and {ASSETS / 'MODEL_CARD.md'}")


if __name__ == "__main__":
    main()
