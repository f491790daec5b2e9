"""Score every ensemble of trained runs on a validation split, to choose one before testing.

    python scripts/select_ensemble.py runs/a runs/b runs/c --dataset fer2013 --split publictest \
        --out docs/results/fer2013-ensemble-selection.json

Evaluates each run's ``best.pt`` once plain and once mirrored (``litefer.evaluation.selection``),
prints a markdown table of every subset x {no flip, flip}, best first, and writes it as JSON.
Never point it at a test split: the chosen ensemble's test number is measured once, afterwards
(``litefer combine`` + ``litefer evaluate``, or ``scripts/make_bundle.py --member ... --flip``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from litefer.data import load_dataset
from litefer.evaluation.selection import compare_ensembles


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", type=Path, nargs="+", help="run folders (each with best.pt)")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--split", required=True, help="a validation split (e.g. publictest)")
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = ap.parse_args()
    if "test" in args.split and args.split != "publictest":
        raise SystemExit(f"--split {args.split}: choose on a validation split, not a test split")
    arrays = load_dataset(args.dataset, split=args.split)
    rows = compare_ensembles([r / "best.pt" for r in args.runs], arrays, names=[r.name for r in args.runs])
    print(f"| members | flip | {args.dataset} {args.split} accuracy | macro-F1 | mean class acc |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {' + '.join(r['members'])} | {'yes' if r['flip'] else 'no'} | {100 * r['accuracy']:.2f} % | "
              f"{100 * r['macro_f1']:.2f} % | {100 * r['mean_class_acc']:.2f} % |")
    if args.out:
        args.out.write_text(json.dumps({"dataset": args.dataset, "split": args.split, "n": rows[0]["n"],
                                        "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
