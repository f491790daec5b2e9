"""Online distillation (``data.teacher_model``): the teacher labels every augmented training
batch; its input is the student's view converted to the teacher's preprocessing; classes are
matched by name; the student learns what the teacher says; runs resume exactly; the run
records the teacher."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from litefer.models.checkpoint import ModelMeta, read_checkpoint, save_safetensors
from litefer.training import ConfigError, config_from_dict, prepare_data, train
from litefer.training.batches import Normalize
from litefer.training.teacher import OnlineTeacher, TeacherError

from fixtures.models import TINY, build_tiny


@pytest.fixture(autouse=True, scope="module")
def _tiny_registered(tiny_arch):
    assert tiny_arch == TINY


def _cfg(epochs=4, **data):
    return config_from_dict({
        "data": {"dataset": "synthetic", "num_classes": 4, "val_split": "val", "test_split": "test",
                 "options": {"n_train": 192, "n_val": 64, "n_test": 64, "size": 24}, **data},
        "model": {"arch": TINY, "in_chans": 1, "input_size": 24},
        "optim": {"name": "adam", "lr": 3e-3},
        "sched": {"name": "cosine"},
        "train": {"epochs": epochs, "batch_size": 32, "progress": False, "seed": 0, "autotune": False,
                  "tensorboard": False},
        "aug": {"hflip": 0.5, "rotation": 10, "erasing": 0.3},
    }, name="online")


LABELS = list(prepare_data(_cfg()).train.labels)         # neutral, happy, surprise, sad


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained on the labels: (its best.pt, its validation accuracy)."""
    res = train(_cfg(), out_dir=tmp_path_factory.mktemp("teacher"), quiet=True)
    return res.out_dir / "best.pt", max(r["val_acc"] for r in res.history)


def _relabelled(src, dst, labels, preprocess=None):
    """``src``'s weights saved with other class names (and preprocessing) in its metadata."""
    meta, state, _ = read_checkpoint(src)
    return save_safetensors(dst, ModelMeta(meta.arch, list(labels), dict(preprocess or meta.preprocess),
                                           dict(meta.arch_kwargs)), state)


def test_the_teacher_sees_the_students_view_in_its_own_preprocessing(tmp_path):
    """Student: 3 channels at 24 px, mean/std 0.5; teacher: grey at 32 px, mean 0.4, std 0.3.
    The teacher's input is the same pixels, resized bilinearly and normalised its way, and
    its probabilities come back in the training labels' order."""
    torch.manual_seed(0)
    model = build_tiny(num_classes=4, in_chans=1).eval()
    t_labels = [LABELS[i] for i in (2, 0, 3, 1)]
    pre_t = {"channels": 1, "size": 32, "mean": [0.4], "std": [0.3], "crop": "fer"}
    f = save_safetensors(tmp_path / "t.safetensors", ModelMeta(TINY, t_labels, pre_t, {}), model.state_dict())
    pre_s = {"channels": 3, "size": 24, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    teacher = OnlineTeacher(str(f), LABELS, pre_s, weight=0.75, temperature=2.0)
    u8 = torch.randint(0, 256, (5, 1, 24, 24), dtype=torch.uint8)
    x = Normalize(3, pre_s["mean"], pre_s["std"])(u8)                 # the student's batch (grey repeated)
    want = (F.interpolate(u8.float() / 255, size=(32, 32), mode="bilinear", align_corners=False) - 0.4) / 0.3
    torch.testing.assert_close(teacher.teacher_input(x), want, atol=1e-5, rtol=0)
    with torch.no_grad():
        p_model = torch.softmax(model(want) / 2.0, dim=1)             # the teacher's own class order
    p = teacher.probs(x)
    for j, c in enumerate(LABELS):
        torch.testing.assert_close(p[:, j], p_model[:, t_labels.index(c)], atol=1e-5, rtol=0)
    y = torch.tensor([0, 1, 2, 3, 0])
    torch.testing.assert_close(teacher(x, y), 0.75 * p + 0.25 * F.one_hot(y, 4).float(), atol=1e-6, rtol=0)
    soft = torch.full((5, 4), 0.25)                                   # a split's own soft targets (FER+ votes)
    torch.testing.assert_close(teacher(x, soft), 0.75 * p + 0.25 * soft, atol=1e-6, rtol=0)
    assert teacher.info["online"] and teacher.info["sha256"] and teacher.info["preprocess"]["size"] == 32


def test_a_teacher_for_other_classes_is_refused_by_name(tmp_path, trained):
    ckpt, _ = trained
    bad = _relabelled(ckpt, tmp_path / "bad.safetensors", [*LABELS[:3], "contempt"])
    with pytest.raises(TeacherError, match=r"lacks \['sad'\].*lacks \['contempt'\]"):
        OnlineTeacher(str(bad), LABELS, {"channels": 1, "size": 24, "mean": [0.5], "std": [0.5]})
    with pytest.raises(ConfigError, match="data.teacher_model.*cannot load the teacher"):
        train(_cfg(teacher_model=str(tmp_path / "missing.pt")), out_dir=tmp_path / "run", quiet=True)
    with pytest.raises(ConfigError, match="data.teacher_model.*give one teacher"):
        _cfg(teacher_model=str(ckpt), teacher=str(tmp_path / "p.csv"))
    _cfg(teacher_model=str(ckpt), teacher_weight=0.5)                 # weight / temperature apply to it


def test_the_student_learns_what_the_online_teacher_says(tmp_path, trained):
    """A teacher whose classes are renamed one place on (it names class k+1 for faces of class
    k): trained on it alone, the student names class k+1 too, so it scores below chance on
    the true validation labels; the run records the teacher and its measured agreement."""
    ckpt, teacher_acc = trained
    assert teacher_acc > 0.6
    liar = _relabelled(ckpt, tmp_path / "liar.safetensors", LABELS[1:] + LABELS[:1])
    res = train(_cfg(teacher_model=str(liar)), out_dir=tmp_path / "student", quiet=True)
    assert res.history[-1]["val_acc"] < 0.2                            # chance is 0.25
    data = prepare_data(_cfg())
    from litefer.evaluation.predict import predict_proba
    pred = predict_proba(res.model, data.val.images, {"channels": 1, "size": 24, "mean": [0.5], "std": [0.5]})
    assert (pred.argmax(1) == (data.val.targets + 1) % 4).mean() > 0.6
    summary = json.loads((res.out_dir / "result.json").read_text())
    t = summary["data"]["teacher"]
    assert t["model"] == str(liar) and t["online"] and t["weight"] == 1.0 and t["images"] == 192
    assert t["agreement"] < 0.2                                         # it disagrees with the labels


def test_online_targets_are_the_teachers_answer_for_the_step_batch_and_resume_exactly(tmp_path, trained,
                                                                                      monkeypatch):
    """Every step's targets are the teacher's answer for the very batch the student steps on
    (augmented, as the student sees it), mixed with the own label; a run stopped mid-epoch
    resumes to the same weights as one never stopped."""
    import os
    import signal
    from litefer.training import loop
    from litefer.training.trainer import TrainingInterrupted
    ckpt, _ = trained
    teacher_calls, steps = [], []
    orig_call, orig_fb = OnlineTeacher.__call__, loop.forward_backward

    def spy_teacher(self, x, y):
        out = orig_call(self, x, y)
        teacher_calls.append((x, y.clone(), out, self))
        return out

    def spy_step(p, x, y):
        steps.append((x, y))
        return orig_fb(p, x, y)
    monkeypatch.setattr(OnlineTeacher, "__call__", spy_teacher)
    monkeypatch.setattr(loop, "forward_backward", spy_step)
    cfg = _cfg(epochs=2, teacher_model=str(ckpt), teacher_weight=0.5)
    straight = train(cfg, out_dir=tmp_path / "a", quiet=True)
    monkeypatch.undo()
    assert len(teacher_calls) == len(steps) == 2 * 6
    for (tx, ty, out, teacher), (sx, sy) in zip(teacher_calls, steps):
        assert sy is out and torch.equal(tx, sx)                      # the student's own batch, labelled
        assert out.shape == (32, 4) and torch.allclose(out.sum(1), torch.ones(32))
        torch.testing.assert_close(out, 0.5 * teacher.probs(sx) + 0.5 * F.one_hot(ty, 4).float())

    def kill(e, i):
        if (e, i) == (1, 3):
            os.kill(os.getpid(), signal.SIGTERM)
    cfg = _cfg(epochs=2, teacher_model=str(ckpt), teacher_weight=0.5)
    with pytest.raises(TrainingInterrupted):
        train(cfg, out_dir=tmp_path / "b", quiet=True, on_step=kill)
    resumed = train(cfg, out_dir=tmp_path / "b", resume=tmp_path / "b", quiet=True)
    la = torch.load(straight.last_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    lb = torch.load(resumed.last_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    for k in la:
        assert torch.equal(la[k], lb[k]), k
    assert np.isclose(straight.history[-1]["val_acc"], resumed.history[-1]["val_acc"])


def test_the_bundled_fer2013_model_online_agrees_with_its_offline_predictions():
    """On real FER2013 training faces, the online teacher given a student's clean batch (grey,
    48 px, I-MobileNetV2's 3 channels) answers what ``litefer evaluate`` writes to
    predictions.csv for the same faces (the offline path): the conversion loses nothing."""
    from conftest import require_dataset
    from litefer.data import load_dataset
    from litefer.evaluation import evaluate
    from litefer.training.batches import TensorFaces
    root = require_dataset("fer2013")
    full = load_dataset("fer2013", root=root, split="train")
    arr = full.subset(np.linspace(0, len(full) - 1, 64).astype(np.int64))
    offline = evaluate("fer2013", arr).probs
    for channels in (1, 3):
        pre = {"channels": channels, "size": 48, "mean": [0.5] * channels, "std": [0.5] * channels}
        t = OnlineTeacher("fer2013", list(arr.labels), pre)
        faces = TensorFaces(arr, 48, channels)
        x = Normalize(channels, pre["mean"], pre["std"])(faces.images)
        np.testing.assert_allclose(t.probs(x).numpy(), offline, atol=1e-4)
        assert t.agreement(faces.images, faces.classes, Normalize(channels, pre["mean"], pre["std"])) > 0.5


def test_a_budget_counts_the_teachers_time(tmp_path, trained, monkeypatch):
    """``--budget`` sizes the schedule to the step *and* the teacher: with the step and the
    teacher each measured at 1 s per epoch of 192 faces (validation 1 s, test 1 s), 7 s fit
    3 epochs without the teacher and 2 with it."""
    from litefer.training import budget as B
    from litefer.training import teacher as T
    import contextlib
    ckpt, _ = trained
    t = OnlineTeacher(str(ckpt), LABELS, {"channels": 1, "size": 24, "mean": [0.5], "std": [0.5]})
    assert T.images_per_s(t, torch.randn(16, 1, 24, 24), contextlib.nullcontext) > 0
    monkeypatch.setattr(B, "measure", lambda *a, **k: (192 / 0.9, 64.0))
    monkeypatch.setattr(T, "images_per_s", lambda *a, **k: 192 / 0.9)
    plain = _cfg(epochs=10)
    plain.train.budget_hours = 7 / 3600
    online = _cfg(epochs=10, teacher_model=str(ckpt), teacher_weight=0.5)
    online.train.budget_hours = 7 / 3600
    assert len(train(plain, tmp_path / "plain", quiet=True).history) == 3
    assert len(train(online, tmp_path / "online", quiet=True).history) == 2


def test_the_teachers_cpu_precision_is_its_own_and_chosen_by_measurement(trained, monkeypatch):
    """On a CPU the teacher runs in the precision chosen for it, whatever autocast the step
    runs under: bf16 set -> the same answer as under an explicit bf16 autocast; fp32 set ->
    the fp32 answer even inside a bf16 autocast. The choice: off -> fp32; auto on a CPU
    without bf16 -> fp32; auto -> bf16 only when measured faster and its logits agree; on ->
    bf16. Measuring leaves the run's RNG alone."""
    from litefer.training import speed
    from litefer.training.teacher import choose_cpu_bf16
    ckpt, _ = trained
    t = OnlineTeacher(str(ckpt), LABELS, {"channels": 1, "size": 24, "mean": [0.5], "std": [0.5]})
    x = torch.randn(8, 1, 24, 24)
    fp32 = t.probs(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = t.probs(x)
    assert not torch.equal(fp32, bf16)                                # bf16 rounding shows
    t.cpu_bf16 = True
    assert torch.equal(t.probs(x), bf16)
    t.cpu_bf16 = False
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(t.probs(x), fp32)

    faster_in = {True: lambda tt, xx: 300.0 if tt.cpu_bf16 else 100.0,     # bf16 3x faster
                 False: lambda tt, xx: 100.0 if tt.cpu_bf16 else 102.0}    # bf16 no faster
    rng = torch.get_rng_state()
    assert choose_cpu_bf16(t, (1, 24, 24), 16, "off", has_bf16=True, measure=faster_in[True])[0] is False
    assert choose_cpu_bf16(t, (1, 24, 24), 16, "auto", has_bf16=False, measure=faster_in[True])[0] is False
    use, why = choose_cpu_bf16(t, (1, 24, 24), 16, "auto", has_bf16=True, measure=faster_in[True])
    assert use is True and t.cpu_bf16 is True and "fp32 100 images/s, bf16 300" in why
    assert choose_cpu_bf16(t, (1, 24, 24), 16, "auto", has_bf16=True, measure=faster_in[False])[0] is False
    assert t.cpu_bf16 is False
    assert choose_cpu_bf16(t, (1, 24, 24), 16, "on", has_bf16=False, measure=faster_in[False])[0] is True
    monkeypatch.setattr(speed, "bf16_parity", lambda *a: 0.5)
    use, why = choose_cpu_bf16(t, (1, 24, 24), 16, "auto", has_bf16=True, measure=faster_in[True])
    assert use is False and "differ from fp32 by 0.500" in why
    assert torch.equal(torch.get_rng_state(), rng)


def test_a_run_keeps_its_teachers_precision_on_resume(tmp_path, trained, monkeypatch):
    """A new run measures the teacher's precision where it measures its step options and
    stores it with them; a resumed run takes it from the checkpoint and does not measure."""
    import os
    import signal
    from litefer.training import setup, teacher as T
    from litefer.training.trainer import TrainingInterrupted
    ckpt, _ = trained
    calls = []

    def choose(teacher, *a, **k):
        calls.append(a)
        teacher.cpu_bf16 = True
        return True, "measured: stand-in"
    monkeypatch.setattr(T, "choose_cpu_bf16", choose)
    monkeypatch.setattr(setup, "AUTOTUNE_MIN_ITERS", 1)
    monkeypatch.setattr(setup, "autotune", lambda *a, **k: setup.StepOptions(reason="stand-in"))
    cfg = _cfg(epochs=2, teacher_model=str(ckpt), teacher_weight=0.5)
    cfg.train.autotune = True

    def kill(e, i):
        if (e, i) == (0, 4):
            os.kill(os.getpid(), signal.SIGTERM)
    with pytest.raises(TrainingInterrupted):
        train(cfg, out_dir=tmp_path / "r", quiet=True, on_step=kill)
    assert calls == [((1, 24, 24), 32, "auto")]
    last = torch.load(tmp_path / "r" / "last.pt", map_location="cpu", weights_only=True)
    assert last["training_state"]["step_options"]["teacher_bf16"] is True
    seen = []
    orig = OnlineTeacher.probs

    def spy(self, x):
        seen.append(self.cpu_bf16)
        return orig(self, x)
    monkeypatch.setattr(OnlineTeacher, "probs", spy)
    res = train(cfg, out_dir=tmp_path / "r", resume=tmp_path / "r", quiet=True)
    assert len(calls) == 1 and seen and set(seen) == {True}
    summary = json.loads((res.out_dir / "result.json").read_text())
    assert summary["step_options"]["teacher_bf16"] is True
