"""The papers' structure, pinned where the papers define it (issue: faithful to the papers).

I-MobileNetV2: 3 x 48 x 48 input, MobileNetV2's table with stem stride 2 (down-sampling
only in the first block of a stage).  A-MobileNet: CBAM where its Table 1 puts it.
``model.init_from``: a real weight file with a mismatched head.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from litefer.models import create_model, model_info
from litefer.models import layers as L
from litefer.models.i_mobilenetv2 import MBV2_SETTINGS
from litefer.models.pretrained import InitError, init_from
from conftest import require_dataset


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# ----------------------------------------------------------------------- I-MobileNetV2
def _stage_maps(model, x):
    """(channels, height, width) after the stem and after every inverted residual."""
    out = []
    y = model.stem(x)
    out.append(tuple(y.shape[1:]))
    for b in model.blocks:
        y = b(y)
        out.append(tuple(y.shape[1:]))
    return out


def test_i_mobilenetv2_is_the_papers_3x48x48_stride2_table():
    info = model_info("i_mobilenetv2")
    assert info.default_input == (3, 48)
    m = create_model("i_mobilenetv2").eval()
    assert m.in_chans == 3 and m.stem.conv.stride == (2, 2) and m.stem.conv.kernel_size == (3, 3)
    with torch.no_grad():
        maps = _stage_maps(m, torch.randn(1, 3, 48, 48))
    # stem: 3x3 conv stride 2 -> 24 x 24, width 32 * 0.75 = 24
    assert maps[0] == (24, 24, 24)
    # MobileNetV2's table at width 0.75 (channels rounded to multiples of 8) and the
    # resolution each stage must have: down-sampling only in a stage's first block
    expected, size = [], 24
    widths = {16: 16, 24: 24, 32: 24, 64: 48, 96: 72, 160: 120, 320: 240}
    for t, c, n, s in MBV2_SETTINGS:
        for i in range(n):
            if i == 0 and s == 2:
                size = (size + 1) // 2
            expected.append((widths[c], size, size))
    assert maps[1:] == expected
    assert [x[1] for x in maps[1:]] == [24, 12, 12, 6, 6, 6, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2]
    # the strided convs are exactly the first depthwise conv of stages with s = 2
    assert [i for i, b in enumerate(m.blocks) if b.dw.conv.stride == (2, 2)] == [1, 3, 6, 13]
    # top conv to 320, GAP, linear
    assert m.head_conv(torch.randn(1, 240, 2, 2)).shape[1] == 320 == m.num_features
    assert m(torch.randn(2, 3, 48, 48)).shape == (2, 7)


def test_i_mobilenetv2_s1_is_the_named_high_resolution_variant():
    m = create_model("i_mobilenetv2_s1").eval()
    with torch.no_grad():
        maps = _stage_maps(m, torch.randn(1, 3, 48, 48))
    assert maps[0][1:] == (48, 48) and maps[-1][1:] == (3, 3)
    # same parameters as the paper default: only the stem stride differs
    n = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    assert n(m) == n(create_model("i_mobilenetv2"))


def test_reverse_fusion_learned_starts_as_sum_and_learns_per_channel_weights():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 5)
    s = L.ReverseFusionAct(nn.SELU, "sum")
    le = L.ReverseFusionAct(nn.SELU, "learned", channels=4)
    assert torch.allclose(le(x), s(x), atol=1e-6)
    assert {n for n, _ in le.named_parameters()} == {"pos_weight", "neg_weight"}
    with torch.no_grad():
        le.pos_weight[0, 1] = 2.0
        le.neg_weight[0, 1] = 0.5
    ref = 2.0 * torch.selu(x[:, 1]) + 0.5 * torch.selu(-x[:, 1])
    assert torch.allclose(le(x)[:, 1], ref, atol=1e-6)
    assert torch.allclose(le(x)[:, 0], s(x)[:, 0], atol=1e-6)
    with pytest.raises(ValueError, match="channels"):
        L.ReverseFusionAct(nn.SELU, "learned")
    m = create_model("i_mobilenetv2", fusion="learned")
    assert sum(1 for k in m.state_dict() if k.endswith("fuse_act.pos_weight")) == len(m.blocks)
    assert m(torch.randn(2, 3, 48, 48)).shape == (2, 7)


# ------------------------------------------------------------------------- A-MobileNet
def test_a_mobilenet_cbam_where_table_1_puts_it():
    m = create_model("a_mobilenet").eval()
    seen = []   # (what, channels, size) along the body
    y = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        prev, prev_in_chs = None, None
        for layer in m.body:
            y_in = y
            y = layer(y)
            if isinstance(layer, L.CBAM):
                # CBAM follows a pointwise conv directly and keeps the shape
                assert isinstance(prev, L.DepthwiseSeparable) and y.shape == y_in.shape
                seen.append((prev_in_chs, y.shape[1], y.shape[-1]))
            else:
                prev, prev_in_chs = layer, y_in.shape[1]
    # Table 1: after 1x1x128x256 (28x28), after 1x1x256x512 (14x14), after the 5x 512
    # block (14x14), after 1x1x1024x1024 (7x7)
    assert seen == [(128, 256, 28), (256, 512, 14), (512, 512, 14), (1024, 1024, 7)]
    n_dsc = sum(isinstance(layer, L.DepthwiseSeparable) for layer in m.body)
    assert n_dsc == 13
    # the depthwise outputs are linear (BN, no activation)
    dsc = next(layer for layer in m.body if isinstance(layer, L.DepthwiseSeparable))
    assert not any(isinstance(a, (nn.ReLU, nn.ReLU6)) for a in dsc.dw.modules())


# -------------------------------------------------------------------------- init_from
def _big_head_file(tmp_path, fmt):
    torch.manual_seed(1)
    src = create_model("a_mobilenet", num_classes=1000, width=0.25)
    if fmt == "safetensors":
        from safetensors.torch import save_file
        path = tmp_path / "imagenet.safetensors"
        save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    else:
        path = tmp_path / "imagenet.pth"
        torch.save({"state_dict": {"module." + k: v for k, v in src.state_dict().items()}}, path)
    return src, path


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_init_from_real_file_with_mismatched_head(tmp_path, fmt):
    src, path = _big_head_file(tmp_path, fmt)
    torch.manual_seed(2)
    dst = create_model("a_mobilenet", num_classes=7, width=0.25)
    head_before = dst.classifier.weight.detach().clone()
    # the 1000-class head does not fit a 7-class model: refused, nothing loaded
    with pytest.raises(InitError, match=r"classifier\.weight \(model \(7, 256\), file \(1000, 256\)\)"):
        init_from(dst, path)
    assert not torch.equal(dst.body[0].conv.weight, src.body[0].conv.weight)
    # exclude the head: everything else loads, exactly
    rep = init_from(dst, path, exclude=["classifier.*"])
    assert rep.complete and rep.excluded == ["classifier.weight", "classifier.bias"]
    sd, ss = dst.state_dict(), src.state_dict()
    for k in sd:
        if k.startswith("classifier."):
            assert torch.equal(sd[k], head_before if k.endswith("weight") else sd[k])
        else:
            assert torch.equal(sd[k], ss[k]), k
    # or accept a partial load explicitly: the mismatch is reported, not hidden
    dst2 = create_model("a_mobilenet", num_classes=7, width=0.25)
    rep2 = init_from(dst2, path, partial=True)
    assert [k for k, _, _ in rep2.mismatched] == ["classifier.weight", "classifier.bias"]
    assert torch.equal(dst2.body[0].conv.weight, src.body[0].conv.weight)


def test_init_from_reports_missing_and_unexpected_keys(tmp_path):
    from safetensors.torch import save_file
    m = create_model("i_mobilenetv2")
    state = {k: v.contiguous() for k, v in m.state_dict().items()}
    del state["head_conv.conv.weight"]
    state["extra.weight"] = torch.zeros(3)
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    with pytest.raises(InitError) as err:
        init_from(create_model("i_mobilenetv2"), path)
    msg = str(err.value)
    assert "missing from the file: head_conv" in msg and "not in the model: extra.weight" in msg
    rep = init_from(create_model("i_mobilenetv2"), path, partial=True)
    assert rep.missing and rep.unexpected == ["extra.weight"]


def test_init_from_refuses_pickled_code(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": Payload()}}, path)
    with pytest.raises(InitError, match="refused"):
        init_from(create_model("i_mobilenetv2"), path)
    assert not marker.exists()


def test_training_config_init_from_loads_before_training(tmp_path):
    from safetensors.torch import save_file
    from litefer.training.config import ConfigError, config_from_dict
    from litefer.training.trainer import build_model
    torch.manual_seed(3)
    src = create_model("i_mobilenetv2", num_classes=10)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    base = {"data": {"dataset": "synthetic"}, "model": {"arch": "i_mobilenetv2", "in_chans": 3,
                                                        "init_from": str(path)}}
    with pytest.raises(ConfigError, match="model.init_from"):
        build_model(config_from_dict(base), 7)
    base["model"]["init_exclude"] = ["classifier.*"]
    model, _ = build_model(config_from_dict(base), 7)
    assert torch.equal(model.stem.conv.weight, src.stem.conv.weight)
    assert not torch.equal(model.classifier.weight[:7], src.classifier.weight[:7])


# ------------------------------------------------------------------------ CK+ protocols
def test_stratified_holdout_count_is_exact_proportional_and_seeded():
    from litefer.data.splits import stratified_holdout_count
    y = np.repeat(np.arange(7), [135, 54, 177, 75, 207, 84, 249])     # CK+48's class sizes
    tr, te = stratified_holdout_count(y, 99, seed=0)
    assert len(te) == 99 and len(tr) == 882 and not set(tr) & set(te)
    per_class = np.bincount(y[te], minlength=7)
    assert np.all(np.abs(per_class - 99 * np.bincount(y) / len(y)) < 1)
    assert np.array_equal(te, stratified_holdout_count(y, 99, seed=0)[1])
    assert not np.array_equal(te, stratified_holdout_count(y, 99, seed=1)[1])
    with pytest.raises(ValueError, match="1..980"):
        stratified_holdout_count(y, 981)


@pytest.mark.realdata
def test_ckplus_paper_config_gives_the_papers_882_99_split():
    require_dataset("ckplus")
    from litefer.training.config import load_config
    from litefer.training.data import prepare_data
    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "configs" / "i_mobilenetv2_ckplus_paper.yaml")
    # the paper's recipe, as its CK+ section states it
    assert (cfg.train.batch_size, cfg.train.epochs, cfg.optim.name, cfg.optim.lr, cfg.optim.momentum) == \
        (20, 150, "sgd", 0.01, 0.9)
    assert cfg.aug.hflip == 0.5 and cfg.aug.rotation == 0 and cfg.aug.scale == [1.0, 1.0]
    splits = prepare_data(cfg)
    n_tr, n_va, n_te = len(splits.train), len(splits.val), len(splits.test)
    assert n_te == 99 and n_tr + n_va == 882 and abs(n_va - 88) <= 3   # 10 % per class, rounded
    assert not set(splits.test.ids) & (set(splits.train.ids) | set(splits.val.ids))
    # litefer's default protocol stays subject-independent
    cv = load_config(root / "configs" / "i_mobilenetv2_ckplus.yaml")
    assert cv.data.folds == 10 and cv.data.val_by_subject and cv.data.test_holdout is None


# ------------------------------------------------------------- A-MobileNet balancing
def test_oversampled_copies_are_marked_and_only_they_are_augmented():
    from litefer.data.base import FaceArrays
    from litefer.data.sampling import EpochSampler
    from litefer.training.batches import BatchAugment, Normalize, TensorFaces, iterate_batches
    rng = np.random.default_rng(0)
    y = np.array([0] * 12 + [1] * 3 + [2] * 1)
    imgs = rng.integers(0, 256, (len(y), 16, 16), dtype=np.uint8)
    s = EpochSampler(y, shuffle=True, seed=0, oversample=True, ratio=1.0, max_factor=None, mark_copies=True)
    order = s.epoch_indices()
    assert len(order) == 36 and (order >= len(y)).sum() == 36 - 16           # 9 + 11 copies
    assert set(order[order < len(y)]) == set(range(len(y)))                  # every original once
    assert np.all(y[order[order >= len(y)] - len(y)] != 0)                   # no copies of the largest class
    arr = FaceArrays(images=imgs, targets=y, labels=("angry", "disgust", "fear"), ids=[str(i) for i in range(len(y))])
    data = TensorFaces(arr, 16, 1)
    norm = Normalize(1, [0.5], [0.5])
    aug = BatchAugment(1, [0.5], [0.5], hflip=0.0, rotation=20, scale=(0.64, 1.0), translate=0.1)
    (x, yb), = list(iterate_batches(data, order, 36, False, aug, norm, copies_only=True))
    plain = norm(data.images.index_select(0, torch.as_tensor(order % len(y))))
    is_copy = torch.as_tensor(order >= len(y))
    assert torch.equal(x[~is_copy], plain[~is_copy])                         # originals untouched
    assert (x[is_copy] - plain[is_copy]).abs().flatten(1).amax(1).min() > 0  # every copy augmented
    assert torch.equal(yb, torch.as_tensor(y[order % len(y)]))


def test_a_mobilenet_configs_follow_the_papers_balancing():
    from litefer.training.config import ConfigError, load_config
    root = Path(__file__).resolve().parents[1]
    for name in ("a_mobilenet_ferplus", "a_mobilenet_rafdb"):
        c = load_config(root / "configs" / f"{name}.yaml")
        assert c.aug.apply_to == "oversampled" and c.train.oversample.enabled
        assert c.train.oversample.ratio == 1.0 and c.train.oversample.max_factor is None
        assert c.aug.rotation == 20 and c.aug.scale == [0.64, 1.0] and c.aug.hflip == 0.0
        assert (c.optim.name, c.optim.lr, c.train.epochs, c.train.batch_size) == ("adam", 1e-4, 100, 64)
    with pytest.raises(ConfigError, match="aug.apply_to"):
        load_config(root / "configs" / "a_mobilenet_ferplus.yaml", overrides=["train.oversample.enabled=false"])


# ------------------------------------------------------------- litefer models: papers' figures
def test_models_command_shows_papers_figures_beside_counted_ones():
    import json

    from typer.testing import CliRunner

    from litefer.cli import app
    from litefer.cli.models import paper_figures
    res = CliRunner().invoke(app, ["models", "a_mobilenet", "i_mobilenetv2", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in map(json.loads, res.output.splitlines())}
    a = rows["a_mobilenet"]
    assert a["paper_params_m"] == 3.4 and abs(a["params_m"] - 3.419) < 1e-3 and abs(a["gmacs"] - 0.568) < 1e-3
    assert paper_figures(a) == "3.4 M"
    # the text does not fix I-MobileNetV2's size: the reported figure is starred
    assert paper_figures(rows["i_mobilenetv2"]) == "3.26 M*"
    assert paper_figures({"paper_params_m": 2.68, "paper_flops": "397.35 M FLOPs"}) == "2.68 M, 397.35 M FLOPs"
    table = CliRunner().invoke(app, ["models", "a_mobilenet"], env={"COLUMNS": "100"})
    assert "paper reports" in table.output and "3.419" in table.output and "3.4 M" in table.output
