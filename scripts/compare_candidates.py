"""Compare candidate architectures for the bundled model under one recipe and one budget.

    python scripts/compare_candidates.py configs/default_ferplus.yaml \
        --archs mini_xception,i_mobilenetv2 --n-train 4000 --epochs 3 --out runs/candidates

Every candidate trains with the same config (only ``model.arch`` changes) on the same
seeded sample of the training split, is selected and scored on the validation split
(FER+ PublicTest for the default config; the test split is not touched), and gets its
parameters and FLOPs counted and its CPU throughput measured.  Writes
``<out>/candidates.md`` and ``<out>/candidates.json``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config", type=Path)
    ap.add_argument("--archs", default="mini_xception,i_mobilenetv2")
    ap.add_argument("--n-train", type=int, default=4000, help="seeded sample of the training split (0 = all)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("runs/candidates"))
    ap.add_argument("--set", action="append", default=[], help="extra key=value config overrides")
    args = ap.parse_args()

    from litefer.deploy.profile import count_flops, count_params
    from litefer.training.config import load_config
    from litefer.training.trainer import DataSplits, prepare_data, train

    base = load_config(args.config, [f"train.epochs={args.epochs}", "train.early_stopping=0",
                                      "train.progress=false", "train.tensorboard=false", *args.set])
    full = prepare_data(base)
    n = len(full.train) if args.n_train <= 0 else min(args.n_train, len(full.train))
    pick = np.sort(np.random.default_rng(0).choice(len(full.train), n, replace=False))
    data = DataSplits(full.train.subset(pick), full.val, None, {**full.info, "n_train": n, "n_test": 0})
    args.out.mkdir(parents=True, exist_ok=True)

    rows = []
    for arch in [a.strip() for a in args.archs.split(",") if a.strip()]:
        cfg = load_config(args.config, [f"model.arch={arch}", f"train.epochs={args.epochs}",
                                        "train.early_stopping=0", "train.progress=false",
                                        "train.tensorboard=false", *args.set])
        t0 = time.perf_counter()
        res = train(cfg, out_dir=args.out / arch, data=data, quiet=True)
        wall = time.perf_counter() - t0
        model = res.model.eval()
        c, s = cfg.model.in_chans or 1, cfg.model.input_size or 48
        x = torch.randn(64, c, s, s)
        with torch.inference_mode():
            model(x)
            t1 = time.perf_counter()
            for _ in range(3):
                model(x)
            infer = 3 * 64 / (time.perf_counter() - t1)
        best = max(res.history, key=lambda r: r["val_acc"])
        row = {"arch": arch, "params_m": count_params(model) / 1e6,
               "mflops": count_flops(model, (1, c, s, s)) / 1e6,
               "val_acc": best["val_acc"], "val_mean_class_acc": best["val_mean_class_acc"],
               "val_macro_f1": best["val_macro_f1"], "best_epoch": best["epoch"],
               "train_img_per_s": float(np.median([r["images_per_s"] for r in res.history])),
               "infer_img_per_s": infer, "wall_s": wall, "threads": torch.get_num_threads()}
        rows.append(row)
        print(json.dumps(row), flush=True)

    (args.out / "candidates.json").write_text(json.dumps(
        {"config": str(args.config), "n_train": n, "epochs": args.epochs, "val_split": full.info.get("val_split"),
         "n_val": len(full.val), "rows": rows}, indent=1))
    lines = [f"Config `{args.config}`, {args.epochs} epochs on a seeded sample of {n} training images, "
             f"scored on the validation split ({full.info.get('val_split')}, {len(full.val)} images); "
             f"{rows[0]['threads'] if rows else '?'} CPU thread(s).", "",
             "| arch | params (M) | MFLOPs | val acc | val mean class acc | val macro-F1 | train img/s | infer img/s (batch 64) | wall (s) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| `{r['arch']}` | {r['params_m']:.3f} | {r['mflops']:.1f} | {100 * r['val_acc']:.2f} % | "
                     f"{100 * r['val_mean_class_acc']:.2f} % | {100 * r['val_macro_f1']:.2f} % | "
                     f"{r['train_img_per_s']:.0f} | {r['infer_img_per_s']:.0f} | {r['wall_s']:.0f} |")
    (args.out / "candidates.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
