#!/usr/bin/env python
"""Training speed on this CPU: the bare step, ``litefer train`` end to end, and the trainer
as it was before the fast data path (commit ``--baseline``), in one run.

For each model (at its config's training input, on real FER2013 / FER+ faces):

(a) **bare step**: forward + loss + backward + optimizer step of the config's model, loss
    and optimizer on random tensors already in memory — the ceiling — in fp32, with
    channels_last, and (where the CPU has AVX512-BF16 / AMX) with bf16 autocast; with
    ``--compile`` also ``torch.compile``; with ``--micro`` also channels_last (and bf16 +
    channels_last) with each batch in slices, gradients accumulated (``train.micro_batch``;
    add ``--set train.micro_batch=auto`` to let (b) choose it too);
(b) **litefer train** end to end (this tree): one epoch over ``--images`` training faces,
    training images/s as the trainer logs it (data, augmentation, step; the step options
    it chose by measurement), and the epoch time with validation on ``--val-images``;
(c) **the old trainer**: ``litefer/training/trainer.py`` of commit ``--baseline`` (read
    with ``git show``, run against this tree's models, losses and data readers, so the
    architecture is identical), same config, same faces.

It prints a markdown table (and ``--json`` writes every number): images/s of (a), (b), (c),
(b)/(c) (the speed-up) and (b)/(a) (how close the trainer gets to its own step), plus the
FER2013 epoch time (28,709 training + 3,589 validation faces) extrapolated from (b).

    .venv/bin/python benchmarks/bench_train.py                               # all paper models, 2 threads
    .venv/bin/python benchmarks/bench_train.py --models mini_xception --images 256 --val-images 128
    .venv/bin/python benchmarks/bench_train.py --threads 2 --images 2048 --json out/bench_train.json
    .venv/bin/python benchmarks/bench_train.py --models mini_xception --images 8000 --val-images 3589 \
        --bf16-parity-epochs 5 --no-baseline                             # bf16 vs fp32 accuracy

Run it on an otherwise idle machine (the load average at start and end is recorded).
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BASELINE = "325461ec5f81ae131176f133c490e83938ca482a"   # the trainer before the fast data path
#: model -> (config, extra overrides): each paper model with its paper recipe
MODELS = {
    "i_mobilenetv2": ("configs/i_mobilenetv2_fer2013.yaml", []),
    # the I-MobileNetV2 configuration litefer had before the fidelity audit (1 x 48 x 48,
    # stem stride 1): the same architecture timed under the old and the new trainer
    "i_mobilenetv2_s1_grey": ("configs/i_mobilenetv2_fer2013.yaml", ["model.arch=i_mobilenetv2_s1",
                                                                      "model.in_chans=1"]),
    "se_sepnet": ("configs/se_sepnet_fer2013.yaml", []),
    "mini_xception": ("configs/mini_xception_fer2013.yaml", []),
    "a_mobilenet": ("configs/a_mobilenet_ferplus.yaml", []),
    "lfnsb": ("configs/lfnsb_rafdb.yaml", []),
    "lfn": ("configs/lfnsb_rafdb.yaml", ["model.arch=lfn", "loss.cosine_harmony.weight=0"]),
}
FER2013_TRAIN, FER2013_VAL = 28709, 3589


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_old_trainer(commit: str):
    """The trainer module of ``commit``, importable beside this tree's litefer."""
    src = subprocess.run(["git", "-C", str(REPO), "show", f"{commit}:litefer/training/trainer.py"],
                         capture_output=True, text=True, check=True).stdout
    d = Path(tempfile.mkdtemp(prefix="old_trainer_"))
    f = d / "old_trainer.py"
    f.write_text(src)
    spec = importlib.util.spec_from_file_location("litefer_old_trainer", f)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def config_for(name: str, extra: list[str]):
    from litefer.training import load_config
    cfg_file, over = MODELS[name]
    over = [*over, "train.epochs=1", "train.early_stopping=0", "sched.warmup_epochs=0", "train.progress=false",
            "train.tensorboard=false", "data.test_split=null", *extra]
    return load_config(REPO / cfg_file, over)


def real_data(cfg, n_train: int, n_val: int, seed: int = 0):
    """A seeded subset of the config's data (FER2013 / FER+), or FER2013 when the config's
    dataset (RAF-DB, AffectNet) is not here; the model's preprocessing resizes it."""
    from litefer.training.data import DataSplits, prepare_data
    c = copy.deepcopy(cfg)
    if c.data.dataset not in ("fer2013", "ferplus"):
        c.data.dataset, c.data.val_split, c.data.label_mode, c.data.num_classes = "fer2013", "publictest", None, None
        c.data.options = {}
        c.train.oversample.enabled = c.train.oversample.enabled
    full = prepare_data(c)
    rng = np.random.default_rng(seed)
    tr = full.train.subset(np.sort(rng.choice(len(full.train), min(n_train, len(full.train)), replace=False)))
    va = full.val.subset(np.sort(rng.choice(len(full.val), min(n_val, len(full.val)), replace=False)))
    return c, DataSplits(tr, va, None, {**full.info, "n_train": len(tr), "n_val": len(va), "n_test": 0})


def bare_steps(cfg, num_classes: int, batches: int, compile_: bool, micro: bool = False) -> dict:
    """images/s of the config's model + loss + optimizer on random tensors, per variant
    (``name/N``: the batch in slices of N, gradients accumulated)."""
    import torch
    from litefer.training.build import _Step, build_criterion, build_model, build_optimizer
    from litefer.training.speed import batch_slices, cpu_has_bf16, micro_batch_candidates, vet_in_child
    bs = cfg.train.batch_size
    out = {}
    variants = [("fp32", False, False, False, 0), ("channels_last", True, False, False, 0)]
    if cpu_has_bf16():
        variants += [("bf16", False, True, False, 0), ("bf16+channels_last", True, True, False, 0)]
    if compile_:
        variants += [("compile+channels_last", True, False, True, 0)]
    if micro:
        for mb in micro_batch_candidates(bs):
            variants += [(f"channels_last/{mb}", True, False, False, mb)]
            if cpu_has_bf16():
                variants += [(f"bf16+channels_last/{mb}", True, True, False, mb)]
    for name, cl, bf, comp, mb in variants:
        torch.manual_seed(0)
        model, pre = build_model(cfg, num_classes)
        crit = build_criterion(cfg, num_classes, getattr(model, "num_features", None), np.ones(num_classes))
        opt = build_optimizer(cfg, model, crit.model_params())
        cen = crit.centers_optimizer()
        x = torch.randn(bs, pre["channels"], pre["size"], pre["size"])
        y = torch.randint(0, num_classes, (bs,))
        if (cl or bf) and not vet_in_child(model, x, y, channels_last=cl, bf16=bf):
            out[name] = {"crashed": True}
            log(f"  bare {name}: crashes this process (heap corruption in a PyTorch CPU kernel); skipped")
            continue
        if cl:
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        step = _Step(model, crit).train()
        fn = torch.compile(step) if comp else step

        def one(parts=batch_slices(bs, mb)):
            opt.zero_grad(set_to_none=True)
            if cen is not None:
                cen.zero_grad(set_to_none=True)
            for s in parts:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf):
                    loss, _, _ = fn(x[s], y[s], y) if len(parts) > 1 else fn(x, y)
                (loss * (len(y[s]) / bs)).backward()
            opt.step()
            if cen is not None:
                cen.step()
        t_w = time.perf_counter()
        for _ in range(2 if not comp else 3):
            one()
        warm = time.perf_counter() - t_w
        times = []
        for _ in range(batches):
            t0 = time.perf_counter()
            one()
            times.append(time.perf_counter() - t0)
        med = float(np.median(times))
        out[name] = {"images_per_s": bs / med, "s_per_step": med, "warmup_s": warm}
        log(f"  bare {name}: {bs / med:.1f} img/s")
    return out


def run_trainer(train_fn, cfg, data, out: Path) -> dict:
    t0 = time.perf_counter()
    res = train_fn(cfg, out, data=data, quiet=True)
    wall = time.perf_counter() - t0
    h = res.history[0]
    d = {"images_per_s": h["images_per_s"], "epoch_s": h["time_s"], "wall_s": wall,
         "train_s": len(data.train) / h["images_per_s"]}
    rj = out / "result.json"
    if rj.is_file():
        d["step_options"] = json.loads(rj.read_text()).get("step_options")
    return d


def bf16_parity_run(name: str, cfg, data, epochs: int, tmp: Path) -> dict:
    """The same short run in fp32 and with bf16 autocast: validation accuracy per epoch and
    images/s of each (the accuracy check bf16 needs before it becomes a default)."""
    from litefer.training import train
    out = {}
    for mode in ("off", "on"):
        c = copy.deepcopy(cfg)
        c.train.epochs, c.train.cpu_bf16, c.train.autotune = epochs, mode, False
        res = train(c, tmp / f"{name}-bf16-{mode}", data=data, quiet=True)
        out["fp32" if mode == "off" else "bf16"] = {
            "val_acc": [r["val_acc"] for r in res.history],
            "images_per_s": float(np.median([r["images_per_s"] for r in res.history]))}
        log(f"  {'fp32' if mode == 'off' else 'bf16'}: val acc {out['fp32' if mode == 'off' else 'bf16']['val_acc']}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated, from: " + ", ".join(MODELS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=1024, help="training faces per end-to-end epoch")
    ap.add_argument("--val-images", type=int, default=512)
    ap.add_argument("--bare-steps", type=int, default=10, help="timed bare steps per variant")
    ap.add_argument("--baseline", default=BASELINE, help="commit of the old trainer")
    ap.add_argument("--no-baseline", action="store_true", help="skip (c)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (minutes of warm-up)")
    ap.add_argument("--micro", action="store_true", help="also time the bare step with the batch in slices")
    ap.add_argument("--set", action="append", default=[], help="extra config override for every model")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--bf16-parity-epochs", type=int, default=0,
                    help="also train each model this many epochs in fp32 and in bf16 on the same faces and "
                         "compare validation accuracy (use --images in the thousands)")
    args = ap.parse_args(argv)

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch
    torch.set_num_threads(args.threads)
    from litefer.training import setup as run_setup
    from litefer.training import trainer as new_trainer
    from litefer.training.speed import cpu_flags, cpu_name
    run_setup.AUTOTUNE_MIN_ITERS = 0          # let the trainer measure its step options on short runs too
    old = None if args.no_baseline else load_old_trainer(args.baseline)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in names if m not in MODELS]
    if bad:
        ap.error(f"unknown model(s) {bad}; known: {', '.join(MODELS)}")
    meta = {"cpu": cpu_name(), "bf16_flags": sorted({"avx512_bf16", "amx_bf16"} & cpu_flags()),
            "threads": args.threads, "torch": torch.__version__, "python": platform.python_version(),
            "baseline": None if old is None else args.baseline, "images": args.images,
            "val_images": args.val_images, "load_start": os.getloadavg()}
    rows = {}
    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
    for name in names:
        log(f"{name}:")
        cfg = config_for(name, args.set)
        cfg, data = real_data(cfg, args.images, args.val_images)
        k = len(data.train.labels)
        r = {"config": MODELS[name][0], "batch": cfg.train.batch_size, "dataset": cfg.data.dataset}
        r["bare"] = bare_steps(cfg, k, args.bare_steps, args.compile, args.micro)
        r["new"] = run_trainer(new_trainer.train, cfg, data, tmp / f"{name}-new")
        log(f"  litefer train: {r['new']['images_per_s']:.1f} img/s ({r['new'].get('step_options')})")
        if old is not None:
            r["old"] = run_trainer(old.train, cfg, data, tmp / f"{name}-old")
            log(f"  old trainer:   {r['old']['images_per_s']:.1f} img/s")
        so = r["new"].get("step_options") or {}
        chosen = ("bf16" if so.get("bf16") else "") + ("+" if so.get("bf16") and so.get("channels_last") else "") + \
            ("channels_last" if so.get("channels_last") else "")
        chosen = (chosen or "fp32") + (f"/{so['micro_batch']}" if so.get("micro_batch") else "")
        r["bare_chosen"] = chosen
        bare_ref = r["bare"].get(chosen, r["bare"]["fp32"]).get("images_per_s") or r["bare"]["fp32"]["images_per_s"]
        r["efficiency"] = r["new"]["images_per_s"] / bare_ref
        if old is not None:
            r["speedup"] = r["new"]["images_per_s"] / r["old"]["images_per_s"]
        ratio = r["new"]["epoch_s"] / r["new"]["train_s"]               # (train + val) / train on the sample
        val_per_img = (r["new"]["epoch_s"] - r["new"]["train_s"]) / max(len(data.val), 1)
        r["fer2013_epoch_min"] = (FER2013_TRAIN / r["new"]["images_per_s"] + FER2013_VAL * max(val_per_img, 0)) / 60
        r["_ratio"] = ratio
        if args.bf16_parity_epochs:
            r["bf16_parity"] = bf16_parity_run(name, cfg, data, args.bf16_parity_epochs, tmp)
        rows[name] = r
    meta["load_end"] = os.getloadavg()

    print(f"\nCPU: {meta['cpu']} ({args.threads} threads; bf16 flags: {', '.join(meta['bf16_flags']) or 'none'}); "
          f"load average start {meta['load_start'][0]:.1f}, end {meta['load_end'][0]:.1f}; "
          f"{args.images} training / {args.val_images} validation faces per end-to-end epoch\n")
    print("| model | batch | bare fp32 | bare channels_last | bare bf16 | bare bf16+cl | trainer chose | "
          "litefer train | old trainer | speed-up | trainer / bare | FER2013 epoch (min) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    f = lambda d, k: (f"{d[k]['images_per_s']:.0f}" if "images_per_s" in d[k] else "crash") if k in d else "—"  # noqa: E731
    for name, r in rows.items():
        b = r["bare"]
        print(f"| {name} | {r['batch']} | {f(b, 'fp32')} | {f(b, 'channels_last')} | {f(b, 'bf16')} | "
              f"{f(b, 'bf16+channels_last')} | {r['bare_chosen']} | {r['new']['images_per_s']:.0f} | "
              f"{r['old']['images_per_s']:.0f} | {r['speedup']:.2f}x | " if 'old' in r else
              f"| {name} | {r['batch']} | {f(b, 'fp32')} | {f(b, 'channels_last')} | {f(b, 'bf16')} | "
              f"{f(b, 'bf16+channels_last')} | {r['bare_chosen']} | {r['new']['images_per_s']:.0f} | — | — | ",
              end="")
        print(f"{100 * r['efficiency']:.0f} % | {r['fer2013_epoch_min']:.1f} |")
    sliced = {n: {k: v for k, v in r["bare"].items() if "/" in k} for n, r in rows.items()}
    if any(sliced.values()):
        print("\nbare step with the batch in slices (`name/N`: slices of N samples, gradients accumulated):\n")
        for n, d in sliced.items():
            print(f"- {n}: " + ", ".join(f"{k} {f(d, k)}" for k in d) + " img/s")
    par = {n: r["bf16_parity"] for n, r in rows.items() if "bf16_parity" in r}
    if par:
        print(f"\nbf16 parity ({args.bf16_parity_epochs} epochs on {args.images} faces, validation on "
              f"{args.val_images}):\n")
        print("| model | fp32 val acc % (last / best) | bf16 val acc % (last / best) | fp32 img/s | bf16 img/s |")
        print("|---|---|---|---|---|")
        for n, p in par.items():
            a, b = p["fp32"], p["bf16"]
            print(f"| {n} | {100 * a['val_acc'][-1]:.2f} / {100 * max(a['val_acc']):.2f} | "
                  f"{100 * b['val_acc'][-1]:.2f} / {100 * max(b['val_acc']):.2f} | {a['images_per_s']:.0f} | "
                  f"{b['images_per_s']:.0f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "models": rows}, indent=2, default=str))
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
