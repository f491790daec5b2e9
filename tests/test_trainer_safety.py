"""The trainer refuses what could hurt: pickle payloads in --resume, nonsense config values,
a label space with a class that has no training images."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from litefer.training import ConfigError, config_from_dict, load_config, train
from litefer.training.data import DataSplits, DataWarning

from fixtures.models import TINY


@pytest.fixture(autouse=True, scope="module")
def _tiny_registered(tiny_arch):
    assert tiny_arch == TINY


def _cfg(**data):
    return config_from_dict({
        "data": {"dataset": "synthetic", "num_classes": 3, "val_split": "val", "test_split": None,
                 "options": {"n_train": 48, "n_val": 24, "size": 24}, **data},
        "model": {"arch": TINY, "in_chans": 1, "input_size": 24},
        "train": {"epochs": 1, "batch_size": 16, "progress": False, "tensorboard": False},
    }, name="s")


class _Payload:
    """Unpickling this runs ``os.mkdir(marker)``: what an attacker's checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _malicious_checkpoint(path, marker):
    torch.save({"arch": TINY, "labels": ["angry", "disgust", "fear"], "state_dict": {},
                "training_state": {"payload": _Payload(marker)}, "epoch": 1}, path)
    # sanity: the file really is dangerous for a plain pickle load
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)
    assert not marker.exists()


def test_malicious_checkpoint_never_runs_in_train_resume(tmp_path):
    evil, marker = tmp_path / "last.pt", tmp_path / "pwned"
    _malicious_checkpoint(evil, marker)
    with pytest.raises(ConfigError, match="refused") as ei:
        train(_cfg(), out_dir=tmp_path / "out", resume=evil, quiet=True)
    assert "pickled Python object" in str(ei.value) and str(ei.value).startswith(str(evil))
    assert "weights_only=False" not in str(ei.value)
    assert not marker.exists()
    # the same file through the CLI: a clear error (exit 2), no traceback, no payload
    from typer.testing import CliRunner
    from litefer.cli import app
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""
data: {{dataset: synthetic, num_classes: 3, val_split: val, test_split: null, options: {{n_train: 48, n_val: 24, size: 24}}}}
model: {{arch: {TINY}, input_size: 24}}
train: {{epochs: 1, batch_size: 16}}
""")
    r = CliRunner().invoke(app, ["train", str(cfg), "--out", str(tmp_path / "o2"), "--resume", str(evil)])
    assert r.exit_code == 2 and "refused" in r.output and "Traceback" not in r.output
    assert not marker.exists()


def test_trainer_checkpoints_load_with_weights_only(tmp_path):
    res = train(_cfg(), out_dir=tmp_path, quiet=True)
    for p in (res.best_checkpoint, res.last_checkpoint):
        raw = torch.load(p, map_location="cpu", weights_only=True)
        assert isinstance(raw["code_version"]["torch"], str) and type(raw["code_version"]["torch"]) is str
    ts = torch.load(res.last_checkpoint, map_location="cpu", weights_only=True)["training_state"]
    assert isinstance(ts["rng_per_rank"][0]["numpy"]["keys"], torch.Tensor)


@pytest.mark.parametrize("override,key", [
    ("optim.lr=nan", "optim.lr"), ("optim.lr=inf", "optim.lr"), ("model.input_size=-48", "model.input_size"),
    ("optim.weight_decay=-5", "optim.weight_decay"), ("optim.momentum=1.5", "optim.momentum"),
    ("optim.betas=[0.9,1.2]", "optim.betas"), ("sched.min_lr=-1", "sched.min_lr"),
    ("aug.rotation=-10", "aug.rotation"), ("train.grad_clip=0", "train.grad_clip"),
    ("loss.center.alpha=nan", "loss.center.alpha"), ("sched.gamma=0", "sched.gamma"),
    ("train.checkpoint_minutes=-1", "train.checkpoint_minutes"), ("aug.translate=2", "aug.translate"),
    ("model.kwargs.num_classes=3", "model.kwargs"), ("train.micro_batch=-8", "train.micro_batch"),
    ("train.micro_batch=1", "train.micro_batch"), ("train.micro_batch=fast", "train.micro_batch"),
])
def test_config_values_are_checked_at_load_time(tmp_path, override, key):
    f = tmp_path / "c.yaml"
    f.write_text("model: {arch: se_sepnet}\n")
    with pytest.raises(ConfigError) as ei:
        load_config(f, [override])
    assert ei.value.key == key and key in str(ei.value)


def test_cli_reports_bad_values_without_traceback(tmp_path):
    from typer.testing import CliRunner
    from litefer.cli import app
    f = tmp_path / "c.yaml"
    f.write_text("optim: {lr: .nan}\n")
    r = CliRunner().invoke(app, ["train", str(f)])
    assert r.exit_code == 2 and "optim.lr" in r.output and "finite" in r.output and "Traceback" not in r.output


def test_a_class_without_training_images_is_refused(tmp_path):
    """An empty / missing class folder must not train a head for a class it never sees."""
    from litefer.data.folder import load_folder
    root = tmp_path / "faces"
    rng = np.random.default_rng(0)
    import cv2
    for cls, n in (("angry", 6), ("happy", 6), ("sad", 0)):
        (root / "train" / cls).mkdir(parents=True)
        (root / "val" / cls).mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(root / "train" / cls / f"{i}.png"), rng.integers(0, 255, (24, 24), dtype=np.uint8))
        for i in range(2 if cls != "happy" else 0):
            cv2.imwrite(str(root / "val" / cls / f"{i}.png"), rng.integers(0, 255, (24, 24), dtype=np.uint8))
    labels = ("angry", "happy", "sad")
    tr = load_folder(root, "train", labels=list(labels), cache=False)
    va = load_folder(root, "val", labels=list(labels), cache=False)
    assert np.bincount(tr.targets, minlength=3)[2] == 0
    cfg = _cfg()
    with pytest.raises(ConfigError, match="no training images for class.*'sad'"):
        train(cfg, out_dir=tmp_path / "o", data=DataSplits(tr, va, None, {}), quiet=True)
    # a class missing from validation only: a warning naming it
    from litefer.training import synthetic_faces
    from litefer.training.data import check_class_coverage
    with pytest.warns(DataWarning, match="happy"):
        check_class_coverage(cfg, synthetic_faces(30, 3, 24), va)


class _Aborts(torch.nn.Module):
    """A step that kills its process (what a heap-corrupting kernel does)."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 2)

    def forward(self, x):
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            os.abort()
        return self.lin(x.mean((2, 3)))


class _Raises(_Aborts):
    """Raises (instead of aborting) on a channels_last input."""

    def forward(self, x):
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            raise RuntimeError("no channels_last here")
        return self.lin(x.mean((2, 3)))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_step_options_are_vetted_in_a_child_process():
    """An option whose kernel aborts the process is detected in a forked child, never in the
    run; a harmless one passes, also after the process has already trained (autograd used).
    Run in a fresh interpreter: the outcome must not depend on what other tests left in
    this process (threads, runtimes)."""
    import subprocess
    import sys
    code = (
        "import sys, torch\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_trainer_safety import _Aborts, _Raises\n"
        "from litefer.training.speed import vet_in_child\n"
        "x, y = torch.randn(4, 4, 6, 6), torch.tensor([0, 1, 0, 1])\n"
        "a = vet_in_child(_Aborts(), x, y, channels_last=False, bf16=False)\n"
        "b = vet_in_child(_Aborts(), x, y, channels_last=True, bf16=False)\n"
        "torch.nn.Linear(2, 1)(torch.randn(3, 2)).sum().backward()   # the process has trained\n"
        "c = vet_in_child(_Aborts(), x, y, channels_last=False, bf16=False)\n"
        "why = []\n"
        "d = vet_in_child(_Raises(), x, y, channels_last=True, bf16=False, log=why.append)\n"
        "vet_in_child(_Aborts(), x, y, channels_last=True, bf16=False, log=why.append)\n"
        "print(a, b, c, d)\n"
        "print('|'.join(why))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    first, why = r.stdout.strip().split("\n")
    assert first.split() == ["True", "False", "True", "False"]
    raised, killed = why.split("|")
    assert raised == "the test step raised RuntimeError: no channels_last here"  # the child's own error
    assert killed == "the test step was killed by signal SIGABRT"
