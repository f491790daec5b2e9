"""Model averaging (``litefer.models.ensemble``, ``litefer combine``): the ensemble's softmax is
the mean of its members' (and of their mirrored answers), it survives save / load / ONNX,
and bad combinations are refused with the file named."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from litefer.models import create_model
from litefer.models.checkpoint import CheckpointError, ModelMeta, load_model, save_safetensors
from litefer.models.ensemble import combine_checkpoints

from fixtures.models import randomise

FER7 = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear"]
PRE = {"channels": 1, "size": 48, "mean": [0.5], "std": [0.5], "crop": "fer"}

pytestmark = pytest.mark.usefixtures("one_thread")


def _member(path, seed: int, width: int = 1, labels=FER7, pre=PRE):
    model = randomise(create_model("mini_xception", num_classes=len(labels), width=width), seed=seed)
    return save_safetensors(path, ModelMeta("mini_xception", list(labels), dict(pre), {"width": width}),
                            model.state_dict())


@pytest.fixture()
def members(tmp_path):
    return [_member(tmp_path / "a.safetensors", 0), _member(tmp_path / "b.safetensors", 1, width=2)]


def _mean_prob(paths, x, flip):
    probs = []
    with torch.no_grad():
        for p in paths:
            m, _ = load_model(p)
            probs.append(m(x).softmax(1))
            if flip:
                probs.append(m(torch.flip(x, dims=(3,))).softmax(1))
    return torch.stack(probs).mean(0)


@pytest.mark.parametrize("flip", [False, True])
def test_softmax_is_the_mean_of_the_members(members, flip):
    x = torch.randn(3, 1, 48, 48, generator=torch.Generator().manual_seed(0))
    ens, meta = combine_checkpoints(members, flip=flip)
    assert meta.arch == "ensemble" and meta.arch_kwargs["flip"] is flip
    assert [m["kwargs"] for m in meta.arch_kwargs["members"]] == [{"width": 1}, {"width": 2}]
    ref = _mean_prob(members, x, flip)
    with torch.no_grad():
        got = ens(x).softmax(1)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)
    # a single model's answers differ from the average: the test could fail
    single = _mean_prob(members[:1], x, False)
    assert (single - ref).abs().max() > 1e-3
    # mirroring the input of a flip ensemble changes nothing: it averages both views
    if flip:
        with torch.no_grad():
            torch.testing.assert_close(ens(torch.flip(x, dims=(3,))).softmax(1), got, atol=1e-6, rtol=1e-5)


def test_saved_ensemble_loads_and_exports(members, tmp_path):
    from litefer.deploy.export import export_onnx
    from litefer.deploy.onnx_backend import OnnxBackend

    ens, meta = combine_checkpoints(members, flip=True)
    path = save_safetensors(tmp_path / "ens.safetensors", meta, ens.state_dict())
    again, meta2 = load_model(path)
    assert meta2.arch_kwargs == meta.arch_kwargs and meta2.labels == FER7
    assert again.default_input == (1, 48)
    x = torch.randn(4, 1, 48, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = ens(x)
        torch.testing.assert_close(again(x), ref)
    res = export_onnx(path, tmp_path / "ens.onnx")
    got = OnnxBackend(res.path, threads=1).predict(x.numpy())
    np.testing.assert_allclose(got, ref.softmax(1).numpy(), atol=1e-5)


def test_members_must_agree(tmp_path):
    a = _member(tmp_path / "a.safetensors", 0)
    other_labels = _member(tmp_path / "b.safetensors", 1, labels=[*FER7, "contempt"])
    with pytest.raises(CheckpointError, match=r"b\.safetensors: its labels"):
        combine_checkpoints([a, other_labels])
    other_pre = _member(tmp_path / "c.safetensors", 1, pre={**PRE, "mean": [0.4]})
    with pytest.raises(CheckpointError, match=r"c\.safetensors: its preprocess"):
        combine_checkpoints([a, other_pre])
    ens, meta = combine_checkpoints([a, a])
    nested = save_safetensors(tmp_path / "ens.safetensors", meta, ens.state_dict())
    with pytest.raises(CheckpointError, match="already an ensemble"):
        combine_checkpoints([a, nested])


def test_bad_member_specs_are_clear():
    with pytest.raises(ValueError, match="non-empty list"):
        create_model("ensemble", members=[])
    with pytest.raises(ValueError, match=r"members\[1\].*unknown model 'nosuch'"):
        create_model("ensemble", members=[{"arch": "mini_xception"}, {"arch": "nosuch"}])
    with pytest.raises(ValueError, match=r"members\[0\] has unknown field"):
        create_model("ensemble", members=[{"arch": "mini_xception", "widht": 2}])
    with pytest.raises(ValueError, match="input sizes differ"):
        create_model("ensemble", in_chans=3, members=[{"arch": "mobilenet_v2"}, {"arch": "lfn"}])


def test_cli_combine(members, tmp_path):
    from typer.testing import CliRunner

    from litefer.cli import app

    out = tmp_path / "ens.safetensors"
    res = CliRunner().invoke(app, ["combine", *map(str, members), "--flip", "--out", str(out)])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["members"] == 2 and summary["flip"] is True
    ens, meta = load_model(out)
    assert meta.arch == "ensemble" and len(ens.members) == 2
    again = CliRunner().invoke(app, ["combine", *map(str, members), "--out", str(out)])
    assert again.exit_code == 2 and "already exists" in again.output
    bad = CliRunner().invoke(app, ["combine", str(members[0]), str(tmp_path / "missing.pt"),
                                   "--out", str(tmp_path / "x.safetensors")])
    assert bad.exit_code == 2 and "missing.pt" in bad.output


def test_subset_scores_match_the_combined_model(members, tmp_path):
    """compare_ensembles' numbers for a subset are what the combined checkpoint measures."""
    from litefer.data.base import FaceArrays
    from litefer.evaluation import evaluate
    from litefer.evaluation.selection import compare_ensembles

    rng = np.random.default_rng(0)
    arrays = FaceArrays(rng.integers(0, 256, (60, 48, 48), dtype=np.uint8),
                        rng.integers(0, 7, 60), tuple(FER7), [f"img{i}" for i in range(60)], name="toy",
                        split="val")
    rows = compare_ensembles(members, arrays, names=["a", "b"])
    assert len(rows) == 3 * 2                                   # {a, b, a+b} x {plain, flip}
    accs = [r["accuracy"] for r in rows]
    assert accs == sorted(accs, reverse=True)
    for r in rows:
        chosen = [m for m, name in zip(members, ["a", "b"]) if name in r["members"]]
        ens, meta = combine_checkpoints(chosen, flip=r["flip"])
        got = evaluate(ens, arrays, preprocess=meta.preprocess, labels=meta.labels).metrics
        assert got["accuracy"] == pytest.approx(r["accuracy"], abs=1 / 60 + 1e-9), r


# ------------------------------------------------------------------ weight averaging (one network)
def test_weight_average_is_the_mean_of_the_tensors(tmp_path):
    from litefer.models.ensemble import average_weights

    paths = [_member(tmp_path / f"{i}.safetensors", seed=i) for i in range(3)]
    model, meta = average_weights(paths)
    assert meta.arch == "mini_xception" and meta.arch_kwargs == {"width": 1} and meta.labels == FER7
    assert meta.extra["weights_averaged_from"] == [str(p) for p in paths]
    states = [load_model(p)[0].state_dict() for p in paths]
    got = model.state_dict()
    n_float = 0
    for name, value in got.items():
        if value.is_floating_point():
            n_float += 1
            torch.testing.assert_close(value, sum(s[name] for s in states) / 3, atol=1e-6, rtol=1e-6)
        else:   # BatchNorm's num_batches_tracked: the first checkpoint's
            assert torch.equal(value, states[0][name])
    assert n_float > 10
    # not simply one of the members: the test could fail
    assert any(not torch.allclose(got[k], states[0][k]) for k in got if got[k].is_floating_point())
    # a checkpoint averaged with itself is itself, and answers the same
    same, _ = average_weights([paths[0], paths[0]])
    x = torch.randn(2, 1, 48, 48, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(same(x), load_model(paths[0])[0](x))


def test_weight_average_refuses_what_does_not_line_up(tmp_path):
    from litefer.models.ensemble import average_weights

    a = _member(tmp_path / "a.safetensors", 0)
    with pytest.raises(CheckpointError, match="at least two"):
        average_weights([a])
    wider = _member(tmp_path / "w.safetensors", 1, width=2)
    with pytest.raises(CheckpointError, match=r"w\.safetensors: its arch_kwargs"):
        average_weights([a, wider])
    other_labels = _member(tmp_path / "b.safetensors", 1, labels=[*FER7, "contempt"])
    with pytest.raises(CheckpointError, match=r"b\.safetensors: its labels"):
        average_weights([a, other_labels])


def test_cli_combine_weights(tmp_path):
    from typer.testing import CliRunner

    from litefer.cli import app

    paths = [_member(tmp_path / f"{i}.safetensors", seed=i) for i in range(2)]
    out = tmp_path / "soup.safetensors"
    res = CliRunner().invoke(app, ["combine", *map(str, paths), "--weights", "--out", str(out)])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["weights"] is True and summary["arch"] == "mini_xception"
    model, meta = load_model(out)
    assert meta.arch == "mini_xception"
    from litefer.models.ensemble import average_weights
    expected = average_weights(paths)[0].state_dict()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, expected[name])
    both = CliRunner().invoke(app, ["combine", *map(str, paths), "--weights", "--flip",
                                    "--out", str(tmp_path / "x.safetensors")])
    assert both.exit_code == 2 and "--weights and --flip" in both.output
