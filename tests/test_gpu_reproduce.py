"""scripts/gpu_reproduce.py on the CPU: the schedule is sized to the budget, the LR scaled to
the batch, runs land in one folder and a rerun resumes instead of retraining."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("gpu_reproduce", REPO / "scripts" / "gpu_reproduce.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_sized_config_scales_lr_schedule_and_precision():
    from litefer.training import config_from_dict
    mod = _script()
    cfg = config_from_dict({"optim": {"name": "sgd", "lr": 0.01}, "train": {"epochs": 100, "batch_size": 64},
                            "sched": {"name": "multistep", "milestones": [50, 75], "warmup_epochs": 5}})
    c = mod.sized_config(cfg, batch=512, device="cpu", epochs=20)
    assert c.train.epochs == 20 and c.sched.milestones == [10, 15] and c.sched.warmup_epochs == pytest.approx(1.0)
    assert c.optim.lr_base_batch == 64 and c.optim.lr_scaling == "linear" and c.train.amp and c.train.channels_last
    from litefer.training.build import scaled_lr
    assert scaled_lr(c) == pytest.approx(0.08)
    adam = mod.sized_config(config_from_dict({"optim": {"name": "adam", "lr": 1e-3}}), batch=256, device="cpu",
                            epochs=5)
    assert scaled_lr(adam) == pytest.approx(1e-3 * 2.0)          # sqrt(256 / 64)


def _tiny_config(tmp_path, arch: str, n_train: int, n_eval: int) -> Path:
    """A 3-class synthetic config of 50 epochs for ``arch`` (a file, as the script reads)."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(f"""
data: {{dataset: synthetic, num_classes: 3, val_split: val, test_split: test,
       options: {{n_train: {n_train}, n_val: {n_eval}, n_test: {n_eval}, size: 24}}}}
model: {{arch: {arch}, input_size: 24}}
optim: {{name: adam, lr: 0.003}}
train: {{epochs: 50, batch_size: 16, tensorboard: false, autotune: false}}
""")
    return cfg


def test_cpu_fallback_runs_plans_and_resumes(tmp_path, tiny_arch):
    cfg = _tiny_config(tmp_path, tiny_arch, 96, 32)
    mod = _script()
    out = tmp_path / "gpu"
    args = ["--configs", str(cfg), "--device", "cpu", "--batch", "32", "--budget-hours", "0.0003",
            "--probe-images", "64", "--out", str(out)]
    # the probe really runs (measured speed), then the sizing is checked at a fixed speed
    # so the plan does not depend on how fast this machine is: 1.08 s of budget at
    # 300 img/s fits 2 epochs of 96 (+15 %) images
    real_probe = mod.probe_images_per_s
    probed = []

    def fixed_probe(*a, **kw):
        probed.append(real_probe(*a, **kw))
        return 300.0
    mod.probe_images_per_s = fixed_probe
    assert mod.main([*args, "--dry-run"]) == 0
    assert len(probed) == 1 and probed[0] > 0
    plan = json.loads((out / "plan.json").read_text())["runs"]
    assert len(plan) == 1 and plan[0]["epochs"] == 2 and plan[0]["lr_base_batch"] == 16
    assert mod.main(args) == 0
    res = json.loads((out / "tiny" / "result.json").read_text())
    assert res["epochs_run"] >= 1 and (out / "summary.md").is_file()
    mtime = (out / "tiny" / "best.pt").stat().st_mtime_ns
    assert mod.main(args) == 0                                    # finished: not retrained
    assert (out / "tiny" / "best.pt").stat().st_mtime_ns == mtime


def test_set_overrides_every_config_and_refuses_unknown_keys(tmp_path, tiny_arch, capsys):
    cfg = _tiny_config(tmp_path, tiny_arch, 64, 16)
    mod = _script()
    mod.probe_images_per_s = lambda *a, **kw: 1e9                 # everything fits: epochs = the config's
    out = tmp_path / "gpu"
    base = ["--configs", str(cfg), "--device", "cpu", "--batch", "32", "--budget-hours", "1", "--out", str(out),
            "--dry-run"]
    assert mod.main(base) == 0
    assert json.loads((out / "plan.json").read_text())["runs"][0]["paper_epochs"] == 50
    assert mod.main([*base, "--set", "train.epochs=7", "--set", "optim.lr=0.01"]) == 0
    plan = json.loads((out / "plan.json").read_text())
    assert plan["overrides"] == ["train.epochs=7", "optim.lr=0.01"]
    assert plan["runs"][0]["paper_epochs"] == 7 and plan["runs"][0]["epochs"] == 7
    assert plan["runs"][0]["lr"] == pytest.approx(0.01)
    capsys.readouterr()
    (out / "plan.json").unlink()
    assert mod.main([*base, "--set", "train.epoch=7"]) == 2        # typo: nothing planned, the key named
    err = capsys.readouterr().err
    assert "train.epoch" in err and "--set" in err
    assert not (out / "plan.json").exists()


def test_teacher_predictions_written_first_for_distillation_configs(tmp_path, tiny_arch):
    """``--teacher MODEL``: a distillation config whose predictions file is missing gets it
    written from MODEL over the config's training split before the plan (the file ``litefer
    evaluate --out`` writes, read back by the trainer); an existing file is never overwritten;
    without --teacher the config is skipped with the command that makes the file."""
    import numpy as np
    from litefer.data.soft_targets import read_soft_targets
    from litefer.evaluation import evaluate
    from litefer.training import load_config, train
    from litefer.training.data import load_split
    plain = _tiny_config(tmp_path, tiny_arch, 64, 16)
    teacher = train(load_config(plain, ["train.epochs=1", "train.progress=false"]), tmp_path / "teacher", quiet=True)
    ckpt = teacher.out_dir / "best.pt"
    dest = tmp_path / "t" / "predictions.csv"
    cfg = tmp_path / "student.yaml"
    cfg.write_text(plain.read_text().replace("val_split: val,", f"val_split: val, teacher: '{dest}', "
                                                                 "teacher_weight: 0.5,"))
    mod = _script()
    mod.probe_images_per_s = lambda *a, **kw: 1e9
    out = tmp_path / "gpu"
    base = ["--configs", str(cfg), "--device", "cpu", "--batch", "32", "--budget-hours", "1", "--out", str(out),
            "--dry-run"]
    assert mod.main(base) == 1 and not dest.exists()                # nothing to plan: the file is missing
    assert mod.main([*base, "--teacher", str(ckpt)]) == 0
    plan = json.loads((out / "plan.json").read_text())["runs"]
    assert [r["name"] for r in plan] == ["student"]
    arrays = load_split(load_config(cfg), "train", "train")
    ids, probs = read_soft_targets(dest, arrays.labels)
    assert ids == list(arrays.ids)
    np.testing.assert_allclose(probs, evaluate(str(ckpt), arrays).probs, atol=1e-4)
    mtime = dest.stat().st_mtime_ns
    assert mod.main([*base, "--teacher", str(tmp_path / "no_such.pt")]) == 0    # exists: not rewritten
    assert dest.stat().st_mtime_ns == mtime
    dest.unlink()
    with pytest.raises(SystemExit, match="no_such.pt"):
        mod.main([*base, "--teacher", str(tmp_path / "no_such.pt")])
    assert not dest.exists() and [p.name for p in dest.parent.iterdir()] == []   # no temp folder left
