#!/usr/bin/env python
"""Reproduce the papers' runs on a GPU within a time budget (``scripts/gpu_reproduce.sh``).

For every config (default: the paper configs whose data is here):

- the data goes to the GPU once, as uint8 tensors (the trainer's data path), batches are
  augmented there; mixed precision (``train.amp``), channels_last;
- a large batch (``--batch``, default 512) with the learning rate scaled from the
  config's batch (``optim.lr_base_batch``: linear for SGD, square root for Adam/AdamW);
- the schedule is sized to the budget: a short probe measures images/s, and each run gets
  ``min(paper epochs, what fits its share of --budget-hours)`` epochs (warm-up and step
  milestones scale with it);
- everything goes to one folder: ``OUT/<config name>/`` (the usual run folder: best.pt,
  last.pt, metrics.csv, result.json, status.json), ``OUT/plan.json`` and ``OUT/summary.md``;
  rerunning the same command resumes unfinished runs from their last.pt;
- a distillation config (``data.teacher``) needs its teacher's predictions over the training
  split: with ``--teacher MODEL`` (a bundled name or a checkpoint) the ones that are missing are
  written first, on the same device (``litefer evaluate MODEL --split TRAIN --out DIR`` does the
  same); an existing file is used as it is, never overwritten.

The CPU path of litefer does not depend on this script.  ``--device cpu`` runs the same
code on the CPU (slow; for checking the script), ``--dry-run`` only prints the plan.

    scripts/gpu_reproduce.sh --budget-hours 6 --out runs/gpu
    .venv/bin/python scripts/gpu_reproduce.py --configs configs/se_sepnet_fer2013.yaml --budget-hours 1 --dry-run
    scripts/gpu_reproduce.sh --configs configs/i_mobilenetv2_fer2013.yaml --set train.seed=1 --out runs/gpu_s1
    scripts/gpu_reproduce.sh --configs configs/se_sepnet_fer2013_distill.yaml --teacher fer2013 --out runs/gpu
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PAPER_CONFIGS = ("configs/i_mobilenetv2_fer2013.yaml", "configs/se_sepnet_fer2013.yaml",
                 "configs/a_mobilenet_ferplus.yaml", "configs/mini_xception_fer2013.yaml",
                 "configs/default_ferplus.yaml", "configs/i_mobilenetv2_ckplus.yaml")


def sized_config(cfg, *, batch: int, device: str, epochs: int):
    """``cfg`` for the GPU: batch with LR scaling, AMP, channels_last, ``epochs`` with the
    warm-up / step milestones / early stopping scaled in proportion."""
    from litefer.training.budget import scale_schedule
    c = copy.deepcopy(cfg)
    if not c.optim.lr_base_batch:
        c.optim.lr_base_batch = c.train.batch_size
        c.optim.lr_scaling = "linear" if c.optim.name == "sgd" else "sqrt"
    c.train.batch_size = int(batch)
    c.train.eval_batch_size = max(int(batch), 256)
    c.train.device = device
    c.train.amp = True
    c.train.channels_last = True
    c.train.progress = False
    c.train.deterministic = False
    return scale_schedule(c, epochs)


def probe_images_per_s(cfg, data, steps_images: int, out: Path) -> float:
    """Training images/s of ``cfg`` on a short run over ``steps_images`` faces."""
    import numpy as np
    from litefer.training import train
    from litefer.training.data import DataSplits
    n = min(len(data.train), max(steps_images, cfg.train.batch_size * 3))
    pick = np.random.default_rng(0).choice(len(data.train), n, replace=False)
    small = DataSplits(data.train.subset(np.sort(pick)), data.val.subset(np.arange(min(len(data.val), 256))), None,
                       dict(data.info))
    c = copy.deepcopy(cfg)
    c.train.epochs, c.sched.warmup_epochs, c.train.early_stopping = 2, 0.0, 0
    c.sched.milestones = [m for m in c.sched.milestones if m < 2] or ([1] if c.sched.name == "multistep" else [])
    res = train(c, out, data=small, quiet=True)
    return float(res.history[-1]["images_per_s"])        # the second epoch: warm


def write_teacher_predictions(config_files, teacher: str, *, device: str, overrides: list[str] | None = None,
                              log=print) -> list[Path]:
    """For each config with a ``data.teacher`` file that does not exist yet: ``teacher``'s
    predictions over the config's training split, written to that path (the layout of
    ``litefer evaluate --out DIR``: DIR/predictions.csv). Existing files are left as they are.
    Returns the files written."""
    import shutil
    import tempfile
    from litefer.data.base import DatasetError
    from litefer.evaluation import evaluate
    from litefer.models.checkpoint import CheckpointError
    from litefer.training import load_config
    from litefer.training.config import ConfigError
    from litefer.training.data import load_split
    written: list[Path] = []
    for f in config_files:
        try:
            cfg = load_config(f, overrides or None)
        except ConfigError:
            continue                                   # plan_runs reports it
        if cfg.data.teacher is None:
            continue
        dest = Path(cfg.data.teacher).expanduser()
        if dest.exists():
            log(f"{cfg.name}: teacher predictions {dest} exist; used as they are")
            continue
        try:
            arrays = load_split(cfg, cfg.data.train_split, "train")
        except (ConfigError, DatasetError) as exc:
            log(f"{cfg.name}: no teacher predictions written: {exc}")
            continue
        t0 = time.time()
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".teacher-") as tmp:
            try:
                res = evaluate(teacher, arrays, device=device, out_dir=tmp)
            except (CheckpointError, ValueError) as exc:
                raise SystemExit(f"error: --teacher {teacher} on {cfg.data.dataset}/{cfg.data.train_split}: {exc}")
            shutil.move(str(Path(tmp) / "predictions.csv"), dest)
        written.append(dest)
        log(f"{cfg.name}: wrote {teacher}'s predictions on {len(arrays)} {cfg.data.dataset}/{cfg.data.train_split} "
            f"faces to {dest} ({time.time() - t0:.0f} s; its top class is the label for "
            f"{100 * res.metrics['accuracy']:.1f} %)")
    return written


def plan_runs(config_files, *, budget_hours: float, batch: int, device: str, out: Path, probe_images: int,
              limit: int | None = None, overrides: list[str] | None = None, log=print) -> list[dict]:
    """One entry per config (``overrides``, ``key=value`` as in ``litefer train --set``, applied to
    each): its sized config, data and estimated minutes."""
    import numpy as np
    from litefer.data.base import DatasetError
    from litefer.training import load_config
    from litefer.training.config import ConfigError
    from litefer.training.data import DataSplits, prepare_data
    entries = []
    for f in config_files:
        try:
            cfg = load_config(f, overrides or None)
            data = prepare_data(cfg)
        except (ConfigError, DatasetError) as exc:
            log(f"skip {f}: {exc}")
            continue
        if limit:
            rng = np.random.default_rng(0)
            sub = lambda a: a.subset(np.sort(rng.choice(len(a), min(limit, len(a)), replace=False)))  # noqa: E731
            data = DataSplits(sub(data.train), sub(data.val), sub(data.test) if data.test is not None else None,
                              dict(data.info))
        entries.append({"config": str(f), "name": cfg.name, "cfg": cfg, "data": data,
                        "paper_epochs": cfg.train.epochs})
    if not entries:
        return []
    share_s = budget_hours * 3600 / len(entries)
    for e in entries:
        probe_cfg = sized_config(e["cfg"], batch=batch, device=device, epochs=e["paper_epochs"])
        ips = probe_images_per_s(probe_cfg, e["data"], probe_images, out / ".probe" / e["name"])
        n = len(e["data"].train) * (1 + 0.15)                 # + validation, roughly
        fit = max(1, math.floor(share_s * ips / n))
        e["images_per_s"] = ips
        e["epochs"] = min(e["paper_epochs"], fit)
        e["sized"] = sized_config(e["cfg"], batch=batch, device=device, epochs=e["epochs"])
        e["minutes"] = e["epochs"] * n / ips / 60
        log(f"{e['name']}: {ips:.0f} img/s at batch {batch} -> {e['epochs']} of {e['paper_epochs']} epochs "
            f"(~{e['minutes']:.0f} min), lr {e['sized'].optim.lr:g} x ({batch}/{e['sized'].optim.lr_base_batch})"
            f"{'^0.5' if e['sized'].optim.lr_scaling == 'sqrt' else ''}")
    return entries


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="*", default=list(PAPER_CONFIGS))
    ap.add_argument("--budget-hours", type=float, default=6.0, help="total wall time for all runs")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (to check the script)")
    ap.add_argument("--out", type=Path, default=Path("runs/gpu"))
    ap.add_argument("--probe-images", type=int, default=8192, help="faces per probe epoch")
    ap.add_argument("--limit", type=int, default=None, help="use at most this many faces per split (tests)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a value in every config, as litefer train --set (repeatable), "
                         "e.g. --set train.seed=1; the sized epochs stay min(config, what fits)")
    ap.add_argument("--teacher", default=None, metavar="MODEL",
                    help="for distillation configs (data.teacher) whose predictions file is missing: write it "
                         "first with this model (a bundled name such as fer2013, or a checkpoint)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan, train nothing")
    args = ap.parse_args(argv)
    from litefer.training.config import ConfigError, TrainConfig, apply_overrides
    try:                 # a key that exists in no config is the user's typo: stop before any run
        apply_overrides(TrainConfig(), args.overrides, validate_after=False)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import torch
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: no CUDA device here; pass --device cpu to run this script on the CPU", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    files = [REPO / f if not Path(f).is_absolute() and not Path(f).exists() else Path(f) for f in args.configs]
    if args.teacher is not None:
        write_teacher_predictions(files, args.teacher, device=args.device, overrides=args.overrides,
                                  log=lambda m: print(m, file=sys.stderr, flush=True))
    entries = plan_runs(files, budget_hours=args.budget_hours, batch=args.batch, device=args.device, out=args.out,
                        probe_images=args.probe_images, limit=args.limit, overrides=args.overrides,
                        log=lambda m: print(m, file=sys.stderr, flush=True))
    plan = [{k: e[k] for k in ("config", "name", "paper_epochs", "epochs", "images_per_s", "minutes")}
            | {"batch": args.batch, "lr": e["sized"].optim.lr, "lr_base_batch": e["sized"].optim.lr_base_batch,
               "lr_scaling": e["sized"].optim.lr_scaling} for e in entries]
    (args.out / "plan.json").write_text(json.dumps({"budget_hours": args.budget_hours, "device": args.device,
                                                    "overrides": args.overrides, "runs": plan}, indent=2))
    if args.dry_run or not entries:
        print(json.dumps(plan, indent=2))
        return 0 if entries else 1
    from litefer.training import train
    rows = []
    for e in entries:
        run_dir = args.out / e["name"]
        resume = run_dir / "last.pt" if (run_dir / "last.pt").is_file() and not (run_dir / "result.json").is_file() \
            else None
        if (run_dir / "result.json").is_file():
            res_json = json.loads((run_dir / "result.json").read_text())
            print(f"{e['name']}: finished already", file=sys.stderr)
        else:
            t0 = time.time()
            train(e["sized"], run_dir, resume=resume, data=e["data"])
            res_json = json.loads((run_dir / "result.json").read_text())
            res_json["wall_min"] = (time.time() - t0) / 60
        rows.append((e, res_json))
    lines = [f"# GPU reproduction ({args.budget_hours:g} h budget, batch {args.batch}, {args.device})", "",
             "| config | epochs (paper) | best epoch | val acc % | test acc % | wall (min) |", "|---|---|---|---|---|---|"]
    for e, r in rows:
        va = (r.get("val") or {}).get("accuracy")
        te = (r.get("test") or {}).get("accuracy")
        lines.append(f"| {e['config']} | {e['epochs']} ({e['paper_epochs']}) | {r.get('best_epoch')} | "
                     f"{'—' if va is None else f'{100 * va:.2f}'} | {'—' if te is None else f'{100 * te:.2f}'} | "
                     f"{r.get('wall_min', float('nan')):.0f} |")
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
