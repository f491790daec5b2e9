"""Runs that outlive their process: mid-epoch checkpoints, SIGINT / SIGTERM, exact resume,
``litefer runs``, and best.pt / last.pt / result.json consistent under a crash at any write."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from litefer.training import config_from_dict, train
from litefer.training import state as S
from litefer.training.trainer import TrainingInterrupted, _sha256

from fixtures.models import TINY

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _tiny_registered(tiny_arch):
    assert tiny_arch == TINY


def _cfg(**train_kw):
    return config_from_dict({
        "data": {"dataset": "synthetic", "num_classes": 4, "val_split": "val", "test_split": "test",
                 "options": {"n_train": 160, "n_val": 48, "n_test": 48, "size": 24}},
        "model": {"arch": TINY, "in_chans": 1, "input_size": 24, "kwargs": {"drop_rate": 0.3}},
        "optim": {"name": "adam", "lr": 3e-3},
        "sched": {"name": "cosine", "warmup_epochs": 1},
        "loss": {"label_smoothing": 0.1, "center": {"weight": 0.01}},
        "train": {"epochs": 3, "batch_size": 16, "progress": False, "tensorboard": False, "seed": 0, **train_kw},
        "aug": {"hflip": 0.5, "rotation": 10, "scale": [0.8, 1.0], "translate": 0.1, "erasing": 0.5,
                "brightness": 0.2, "contrast": 0.2},
    }, name="r")


ITERS = 10          # 160 images / batch 16


def _same_run(a, b) -> None:
    """Two finished runs are bit-identical: weights, loss centres, per-epoch history."""
    la = torch.load(a.last_checkpoint, map_location="cpu", weights_only=True)
    lb = torch.load(b.last_checkpoint, map_location="cpu", weights_only=True)
    for k in la["state_dict"]:
        assert torch.equal(la["state_dict"][k], lb["state_dict"][k]), k
    for k in la["training_state"]["criterion"]:
        assert torch.equal(la["training_state"]["criterion"][k], lb["training_state"]["criterion"][k]), k
    drop = ("time_s", "images_per_s")
    strip = lambda h: [{k: v for k, v in r.items() if k not in drop} for r in h]  # noqa: E731
    assert strip(a.history) == strip(b.history)
    assert a.test_metrics == b.test_metrics and a.best_epoch == b.best_epoch


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    return train(_cfg(), out_dir=tmp_path_factory.mktemp("straight"), quiet=True)


def _kill_at(epoch: int, iteration: int, signum=signal.SIGTERM):
    def hook(e, i):
        if (e, i) == (epoch, iteration):
            os.kill(os.getpid(), signum)
    return hook


@pytest.mark.parametrize("epoch,iteration,signum", [(0, 4, signal.SIGTERM), (1, 7, signal.SIGINT),
                                                    (1, ITERS, signal.SIGTERM)])
def test_signal_mid_epoch_checkpoints_and_resumes_exactly(straight, tmp_path, epoch, iteration, signum):
    with pytest.raises(TrainingInterrupted) as ei:
        train(_cfg(), out_dir=tmp_path, quiet=True, on_step=_kill_at(epoch, iteration, signum))
    exc = ei.value
    assert isinstance(exc, KeyboardInterrupt) and exc.signum == signum
    assert (exc.epoch, exc.iteration) == (epoch, iteration) and exc.checkpoint == tmp_path / "last.pt"
    raw = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=True)
    assert raw["training_state"]["position"] == {"epoch": epoch, "iter": iteration}
    assert len(raw["training_state"]["history"]) == epoch
    st = json.loads((tmp_path / "status.json").read_text())
    assert st["state"] == "stopped" and st["epoch"] == epoch and st["iter"] == iteration
    assert not (tmp_path / "result.json").exists()
    resumed = train(_cfg(), out_dir=tmp_path, resume=tmp_path, quiet=True)     # the run folder works too
    _same_run(straight, resumed)
    assert json.loads((tmp_path / "status.json").read_text())["state"] == "finished"


def test_periodic_checkpoint_survives_a_hard_kill(straight, tmp_path):
    """With checkpoint_minutes tiny, last.pt is rewritten after every step: the file a
    kill -9 at (epoch 1, iteration 3) would leave resumes to the identical run."""
    saved = tmp_path / "killed"
    saved.mkdir()

    def grab(e, i):
        if (e, i) == (1, 4):          # on_step runs before that step's checkpoint: last.pt is at (1, 3)
            shutil.copy(tmp_path / "a" / "last.pt", saved / "last.pt")
    train(_cfg(checkpoint_minutes=1e-9), out_dir=tmp_path / "a", quiet=True, on_step=grab)
    raw = torch.load(saved / "last.pt", map_location="cpu", weights_only=True)
    assert raw["training_state"]["position"] == {"epoch": 1, "iter": 3}
    resumed = train(_cfg(), out_dir=tmp_path / "b", resume=saved / "last.pt", quiet=True)
    _same_run(straight, resumed)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    """A failure while writing leaves the previous file untouched and no temp file behind."""
    p = tmp_path / "last.pt"
    S.save_checkpoint({"a": torch.ones(3)}, p)

    def boom(obj, fh):
        fh.write(b"partial")
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        S.save_checkpoint({"a": torch.zeros(3)}, p)
    monkeypatch.undo()
    assert torch.equal(torch.load(p, weights_only=True)["a"], torch.ones(3))
    assert [f.name for f in tmp_path.iterdir()] == ["last.pt"]


def _consistent(out: Path, straight) -> None:
    res = json.loads((out / "result.json").read_text())
    best = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    assert res["best_epoch"] == best["epoch"] == straight.best_epoch
    assert res["best_sha256"] == _sha256(out / "best.pt")
    assert best["metrics"]["test"] == res["test"] == straight.test_metrics
    ref = torch.load(straight.best_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.equal(best["state_dict"][k], ref[k]) for k in ref)


def test_crash_at_any_write_leaves_best_last_result_consistent(straight, tmp_path, monkeypatch):
    real = S.atomic_write
    writes: list[str] = []

    def counting(path, data):
        if Path(path).name != S.STATUS_FILE:
            writes.append(Path(path).name)
        return real(path, data)
    monkeypatch.setattr(S, "atomic_write", counting)
    train(_cfg(), out_dir=tmp_path / "count", quiet=True)
    n = len(writes)
    assert writes[-1] == "result.json" and writes[-2] == "best.pt" and n >= 5
    for k in range(n):
        out = tmp_path / f"crash{k}"
        calls = [0]

        def crashing(path, data):
            if Path(path).name != S.STATUS_FILE:
                calls[0] += 1
                if calls[0] == k + 1:
                    raise RuntimeError(f"injected crash at write {k + 1} ({Path(path).name})")
            return real(path, data)
        monkeypatch.setattr(S, "atomic_write", crashing)
        with pytest.raises(RuntimeError, match="injected"):
            train(_cfg(), out_dir=out, quiet=True)
        monkeypatch.setattr(S, "atomic_write", real)
        assert not (out / "result.json").exists()
        if (out / "last.pt").exists():
            train(_cfg(), out_dir=out, resume=out / "last.pt", quiet=True)
        else:
            train(_cfg(), out_dir=out, quiet=True)
        _consistent(out, straight)


def test_cli_sigterm_checkpoints_prints_hint_and_resumes(tmp_path):
    """A real process: SIGTERM mid-epoch -> last.pt + resume hint + exit 143; `litefer runs`
    shows it stopped; `litefer train RUN_DIR` finishes it."""
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("""
data: {dataset: synthetic, num_classes: 3, val_split: val, test_split: null,
       options: {n_train: 1600, n_val: 32, size: 24}}
model: {arch: mini_xception, input_size: 24}
optim: {name: adam, lr: 0.001}
train: {epochs: 1, batch_size: 8, checkpoint_minutes: 1.0e-9, progress: false, tensorboard: false, autotune: false}
""")
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    p = subprocess.Popen([sys.executable, "-m", "litefer", "train", str(cfg_file), "--out", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path, text=True)
    try:
        t0 = time.time()
        while not (out / "last.pt").exists() and time.time() - t0 < 120 and p.poll() is None:
            time.sleep(0.2)
        assert p.poll() is None, p.communicate()
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM" in err and f"litefer train {out}" in " ".join(err.split())
    raw = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    pos = raw["training_state"]["position"]
    assert pos["epoch"] == 0 and 0 < pos["iter"] < 200
    from typer.testing import CliRunner
    from litefer.cli import app
    runner = CliRunner()
    r = runner.invoke(app, ["runs", str(tmp_path), "--json"])
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert r.exit_code == 0 and len(rows) == 1 and rows[0]["state"] == "stopped"
    assert rows[0]["arch"] == "mini_xception" and 0 < rows[0]["epoch"] < 1 and rows[0]["epochs"] == 1
    r = runner.invoke(app, ["train", str(out), "--set", "train.checkpoint_minutes=10"])
    assert r.exit_code == 0, r.output
    assert f"resumed from {out / 'last.pt'} at epoch 1, iteration {pos['iter']}" in " ".join(r.output.split())
    assert json.loads(r.stdout.strip().splitlines()[-1])["epochs_run"] == 1
    r = runner.invoke(app, ["runs", str(tmp_path)])
    assert "finished" in r.stdout and "mini_xception" in r.stdout


def test_runs_lists_a_killed_process_as_stopped(tmp_path):
    run = tmp_path / "x"
    run.mkdir()
    S.write_json(run / "status.json", {"name": "x", "arch": "se_sepnet", "dataset": "fer2013", "train_split": "train",
                                       "state": "running", "epoch": 3, "iter": 50, "iters": 100, "epochs": 10,
                                       "best_value": 0.61, "best_epoch": 3, "monitor": "val_acc",
                                       "images_per_s": 300.0, "eta_s": 1000.0, "pid": 2 ** 22 + 12345,
                                       "host": os.uname().nodename})
    from litefer.training.runs import list_runs
    (r,) = list_runs(tmp_path)
    assert r.state == "stopped" and r.epoch == pytest.approx(3.5) and r.eta_s is None
    assert r.data == "fer2013/train" and r.best_value == 0.61


def test_run_folder_stopped_before_its_first_step_starts_again(tmp_path):
    """A run stopped while loading data (no step, so no last.pt) is started afresh by
    `litefer train RUN_DIR` from the config.yaml it wrote, instead of an error."""
    from typer.testing import CliRunner
    from litefer.cli import app
    from litefer.training.config import dump_config
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(dump_config(_cfg()))
    assert not (run / "last.pt").exists()
    r = CliRunner().invoke(app, ["train", str(run)])
    assert r.exit_code == 0, r.output
    assert "resumed from" not in r.output
    assert json.loads(r.stdout.strip().splitlines()[-1])["epochs_run"] == 3
    assert (run / "last.pt").is_file() and (run / "best.pt").is_file()


def test_sliced_batches_resume_exactly(tmp_path):
    """``train.micro_batch``: a run stopped mid-epoch resumes to the run that never stopped
    (BatchNorm per slice, dropout and augmentation included)."""
    straight = train(_cfg(micro_batch=6), out_dir=tmp_path / "straight", quiet=True)
    with pytest.raises(TrainingInterrupted):
        train(_cfg(micro_batch=6), out_dir=tmp_path / "r", quiet=True, on_step=_kill_at(1, 5))
    resumed = train(_cfg(micro_batch=6), out_dir=tmp_path / "r", resume=tmp_path / "r", quiet=True)
    _same_run(straight, resumed)
