"""Turn a training run into one of litefer's bundled models.

    python scripts/make_bundle.py runs/default_ferplus [--name default] [--extra choice.md] [--force]
    python scripts/make_bundle.py runs/mx_w2_fer2013_ema --name fer2013 --extra choice.md
    python scripts/make_bundle.py runs/a --member runs/b --member runs/c --flip --name fer2013 --force

Reads ``<run>/best.pt`` (selected on the run's validation split, PublicTest), evaluates it
once with ``litefer evaluate`` on FER+ PrivateTest (majority labels; 8 classes, or 7 without
the contempt faces for a model without contempt) and on
FER2013 PrivateTest (7 classes; contempt answers count as errors), the run's own dataset
first, and writes ``litefer/assets/<name>.safetensors`` (weights + metadata), its ONNX
export and its model card (``MODEL_CARD.md`` for ``default``, ``MODEL_CARD.<name>.md``
otherwise).  Only runs trained on FER+ or FER2013 can be bundled this way.  Refuses to
overwrite without ``--force``.

With ``--member RUN`` (repeatable) and/or ``--flip`` the bundle is an ``ensemble``
(``litefer.models.ensemble``): the mean softmax of every run's ``best.pt`` (and, with
``--flip``, of their answers for the mirrored face); the members must be runs on the same
dataset, and the card lists each member's epoch and config.
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
    ap.add_argument("--member", type=Path, action="append", default=[],
                    help="another run whose best.pt is averaged with RUN's (repeatable): an ensemble bundle")
    ap.add_argument("--flip", action="store_true",
                    help="average each member's answer for the mirrored face too (an ensemble bundle)")
    args = ap.parse_args()

    runs = [args.run, *args.member]
    target = ASSETS / f"{args.name}.safetensors"
    if target.exists() and not args.force:
        sys.exit(f"{target} exists; pass --force to replace it")
    datas = [json.loads((r / "result.json").read_text()).get("data", {}) for r in runs]
    run_data = datas[0]
    dataset = run_data.get("dataset")
    if dataset not in ("ferplus", "fer2013"):
        sys.exit(f"{args.run}: trained on {dataset!r}; make_bundle handles FER+ and FER2013 runs")
    for r, d in zip(runs[1:], datas[1:]):
        if d.get("dataset") != dataset:
            sys.exit(f"{r}: trained on {d.get('dataset')!r}, not {dataset!r} like {args.run}")
    ev_dir = args.run / "bundle-eval"
    ev_dir.mkdir(parents=True, exist_ok=True)
    raws = [read_checkpoint(r / "best.pt")[2] for r in runs]
    if len(runs) > 1 or args.flip:
        from litefer.models.ensemble import combine_checkpoints
        model, meta = combine_checkpoints([r / "best.pt" for r in runs], flip=args.flip)
        meta.extra = {}
        ckpt = save_safetensors(ev_dir / "ensemble.safetensors", meta, model.state_dict())
        state = model.state_dict()
        raw = {"epoch": [x.get("epoch") for x in raws], "code_version": raws[0].get("code_version")}
    else:
        ckpt = args.run / "best.pt"
        meta, state, raw = read_checkpoint(ckpt)
    # FER+ with the model's own class count: a 7-class (FER2013) model is scored on FER+'s
    # 7-class majority labels, i.e. without the contempt faces it could never get right
    ferplus_classes = 8 if "contempt" in meta.labels else 7
    ferplus = run_eval(ckpt, "ferplus", "privatetest", ev_dir / "ferplus-privatetest",
                       ["--opt", "label_mode=majority", "--opt", f"num_classes={ferplus_classes}"])
    fer2013 = run_eval(ckpt, "fer2013", "privatetest", ev_dir / "fer2013-privatetest", [])

    from litefer.models import create_model
    model = create_model(meta.arch, num_classes=len(meta.labels),
                         in_chans=meta.preprocess["channels"], **meta.arch_kwargs).eval()
    size = meta.preprocess["size"]
    params = count_params(model)
    flops = count_flops(model, (1, meta.preprocess["channels"], size, size))

    today = dt.date.today().isoformat()
    soft = run_data.get("train_label_mode") == "probability"
    n_train, n_val = (f"{run_data[k]:,}" if isinstance(run_data.get(k), int) else "?" for k in ("n_train", "n_val"))
    if dataset == "ferplus":
        train_labels = ("FER+ vote distributions for training, majority labels for selection and test" if soft
                        else "FER+ majority labels")
        trained_on = f"FERPlus (FER2013 images, {train_labels})"
    else:
        trained_on = "FER2013 (Kaggle image-folder release, original labels)"
    metric_keys = ("n", "accuracy", "macro_f1", "mean_class_acc")
    metrics = {"ferplus_privatetest": {k: ferplus[k] for k in metric_keys},
               "fer2013_privatetest": {k: fer2013[k] for k in metric_keys}}
    own = f"{dataset}_privatetest"
    metrics = {own: metrics[own], **{k: v for k, v in metrics.items() if k != own}}   # the run's own first
    bundle_meta = ModelMeta(meta.arch, meta.labels, meta.preprocess, meta.arch_kwargs, extra={
        "name": args.name, "date": today, "trained_on": trained_on, "metrics": metrics,
        "epoch": raw.get("epoch"), "code_version": raw.get("code_version"),
    })
    save_safetensors(target, bundle_meta, state)
    own_dir = ev_dir / f"{dataset}-privatetest"
    (ASSETS / f"{args.name}.confusion.png").write_bytes((own_dir / "confusion.png").read_bytes())

    def recall_rows(m: dict) -> str:
        rows = ["| class | recall | precision | support |", "|---|---:|---:|---:|"]
        for lab, d in m["per_class"].items():
            r = "–" if d.get("recall") is None else f"{100 * d['recall']:.1f} %"
            rows.append(f"| {lab} | {r} | {100 * (d.get('precision') or 0):.1f} % | {d.get('support', 0)} |")
        return "\n".join(rows)

    def weakest(m: dict, k: int = 3) -> str:
        recalls = sorted((d["recall"], lab) for lab, d in m["per_class"].items() if d.get("recall") is not None)
        return ", ".join(f"{lab} ({100 * r:.0f} %, {m['per_class'][lab].get('support', 0)} test faces)"
                         for r, lab in recalls[:k])

    ensemble = meta.arch == "ensemble"
    if ensemble:
        cfg_text = "\n\n".join(f"### member {i + 1}: `{r.name}`, epoch {x.get('epoch')}\n```yaml\n"
                                f"{(r / 'config.yaml').read_text().strip()}\n```" for i, (r, x) in
                                enumerate(zip(runs, raws)))
    else:
        cfg_text = f"```yaml\n{(args.run / 'config.yaml').read_text().strip()}\n```"
    sel = "FER+ PublicTest" if dataset == "ferplus" else "FER2013 PublicTest"
    trained = (f"{today}: {len(runs)} runs of `litefer train` (configs below), averaged{' with their mirror images' if args.flip else ''}; "
               f"each run's epoch selected on {sel}, and the ensemble chosen on it" if ensemble else
               f"{today}, by `litefer train` (config below), epoch {raw.get('epoch')} selected on {sel}")
    majority_rule = ("the official FER+ majority rule (single votes dropped, > half of the remaining votes, "
                     "unknown/not-a-face dropped)")
    if dataset == "ferplus":
        label_text = (f"Training labels: each face's distribution of emotion votes (FER+ `probability` mode, the "
                      f"probabilistic-label scheme of Barsoum et al.; faces whose top vote is unknown / not a face "
                      f"dropped). Validation and test labels: {majority_rule}." if soft
                      else f"Labels: {majority_rule}.")
        data_text = f"""Trained on **FERPlus**: the FER2013 images (48x48 greyscale faces collected by web search,
ICML 2013 challenge, Goodfellow et al.) with Microsoft's FER+ crowd labels (10 annotators
per image, MIT licence; Barsoum et al., ICMI 2016), read from the FER+ training layout
(`data/FER2013{{Train,Valid,Test}}` PNGs + `label.csv`), {len(meta.labels)} classes. {label_text}"""
        protocol = (f"Train on FER2013Train ({n_train} images kept), select the epoch on FER2013Valid\n"
                    f"(PublicTest, {n_val}), report once on FER2013Test (PrivateTest).")
        own_name = "FER+ PrivateTest"
    else:
        data_text = f"""Trained on **FER2013** (48x48 greyscale faces collected by web search, ICML 2013
challenge, Goodfellow et al.) with its original single-annotator labels, read from the
Kaggle image-folder release, {len(meta.labels)} classes."""
        protocol = (f"Train on Training ({n_train} images), select the epoch on PublicTest ({n_val}),\n"
                    f"report once on PrivateTest.")
        own_name = "FER2013 PrivateTest"
    rows = {
        "ferplus_privatetest": f"| FER+ PrivateTest ({ferplus_classes} classes, majority labels{'' if ferplus_classes == 8 else '; its contempt faces left out: the model has no contempt class'}) | {ferplus['n']} | {{}} |",
        "fer2013_privatetest": f"| FER2013 PrivateTest (7 classes, original noisy labels{'; contempt predictions count as errors' if 'contempt' in meta.labels else ''}) | {fer2013['n']} | {{}} |",
    }
    ev = {"ferplus_privatetest": ferplus, "fer2013_privatetest": fer2013}
    table = []
    for key in metrics:                                     # the run's own test set first, in bold
        m = ev[key]
        acc = f"{100 * m['accuracy']:.2f} %"
        cells = (f"{'**' + acc + '**' if key == own else acc} | {100 * m['macro_f1']:.2f} % | "
                 f"{100 * m['mean_class_acc']:.2f} %")
        table.append(rows[key].format(cells))
    own_m = ev[own]
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
| trained | {trained} |

## Data and terms of use
{data_text} FER2013 images may be used for research and other non-commercial purposes only,
and so may this model's weights: **research / non-commercial use only**.

## Protocol
{protocol} The test split was never used for selection.

## Results (measured by `litefer evaluate`)
| test set | images | accuracy | macro-F1 | mean class accuracy |
|---|---:|---:|---:|---:|
{chr(10).join(table)}

Per class on {own_name}:

{recall_rows(own_m)}

Confusion matrix (row-normalised, {own_name}):

![confusion matrix]({args.name}.confusion.png)

Known limits: {meta.preprocess['size']}x{meta.preprocess['size']} input, trained on 48x48 greyscale web photos of mostly frontal faces; the
classes with the lowest recall on {own_name} are {weakest(own_m)};
FER2013/FER+ carry the demographic skews of web image search. Not for decisions about people.

{extra}## Config{'s' if ensemble else ''}
{cfg_text}
"""
    card_path = ASSETS / ("MODEL_CARD.md" if args.name == "default" else f"MODEL_CARD.{args.name}.md")
    card_path.write_text(card)
    # the ONNX export ships next to the weights: the torch-free inference path runs it
    # (litefer.deploy.sidecar.bundled_onnx checks it was exported from exactly these weights)
    from litefer.deploy.export import export_onnx
    onnx_path = export_onnx(target, ASSETS / f"{args.name}.onnx", force=True).path
    print(f"wrote {target}, {onnx_path} and {card_path}")


if __name__ == "__main__":
    main()
