"""BatchNorm folding and RepVGGDW re-parameterisation (litefer.deploy.fuse)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from litefer.deploy import count_modules, count_params, fuse
from litefer.models import create_model, list_models, model_info
from litefer.models.layers import ConvBNAct, RepVGGDW, SeparableConv2d, SpatialBias

from fixtures.models import randomise_bn as _randomize_bn

_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _n_bn(model: nn.Module) -> int:
    return sum(isinstance(m, _BN) for m in model.modules())


@pytest.mark.parametrize("name", list_models())
def test_fused_equals_unfused(name):
    torch.manual_seed(0)
    model = _randomize_bn(create_model(name)).train()
    n_modules, n_bn = count_modules(model), _n_bn(model)
    assert n_bn > 0
    fused = fuse(model)
    # the original is untouched (still training, still has its BNs)
    assert model.training and _n_bn(model) == n_bn and count_modules(model) == n_modules
    assert not fused.training
    assert count_modules(fused) < n_modules
    assert _n_bn(fused) == 0, f"{name}: BatchNorm left after fusing"
    assert count_params(fused) < count_params(model)
    c, s = model_info(name).default_input
    x = torch.randn(2, c, s, s)
    model.eval()
    with torch.no_grad():
        ref, out = model(x), fused(x)
        assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4), (name, (out - ref).abs().max().item())
        assert torch.allclose(fused.forward_features(x), model.forward_features(x), atol=1e-4, rtol=1e-4)


def test_repvggdw_fuses_to_one_conv():
    torch.manual_seed(0)
    block = _randomize_bn(RepVGGDW(16)).eval()
    conv = block.fuse()
    assert isinstance(conv, nn.Conv2d) and conv.groups == 16 and conv.kernel_size == (3, 3)
    x = torch.randn(2, 16, 9, 9)
    with torch.no_grad():
        assert torch.allclose(conv(x), block(x), atol=1e-5)
    holder = nn.Sequential(block)
    f = fuse(holder)
    assert isinstance(f[0], nn.Conv2d) and count_modules(f) == 2


def test_sequential_linear_and_conv1d_bn_are_folded():
    torch.manual_seed(0)
    m = _randomize_bn(nn.Sequential(ConvBNAct(3, 8, 3), nn.Flatten(), nn.Linear(8 * 25, 6),
                                    nn.BatchNorm1d(6), nn.ReLU()))
    f = fuse(m)
    assert _n_bn(f) == 0
    x = torch.randn(4, 3, 5, 5)
    with torch.no_grad():
        assert torch.allclose(f(x), m.eval()(x), atol=1e-5)
    sb = _randomize_bn(SpatialBias(8, sb_chs=4, pool=3)).eval()
    fsb = fuse(sb)
    assert _n_bn(fsb) == 0
    y = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        assert torch.allclose(fsb(y), sb(y), atol=1e-5)


def test_bn_not_directly_after_a_conv_is_left_alone():
    # conv -> ReLU -> BN: folding would be wrong, so the BN must stay
    m = _randomize_bn(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4)))
    f = fuse(m)
    assert _n_bn(f) == 1
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        assert torch.allclose(f(x), m.eval()(x), atol=1e-6)
    # a separable conv followed by BN in a Sequential folds into its pointwise conv
    s = _randomize_bn(nn.Sequential(SeparableConv2d(4, 6), nn.BatchNorm2d(6)))
    fs = fuse(s)
    assert _n_bn(fs) == 0 and fs[0].pw.bias is not None
    with torch.no_grad():
        assert torch.allclose(fs(x[:, :1].repeat(1, 4, 1, 1)), s.eval()(x[:, :1].repeat(1, 4, 1, 1)), atol=1e-5)


def test_fuse_rejects_non_modules():
    with pytest.raises(TypeError, match="nn.Module"):
        fuse("i_mobilenetv2")


def test_deploy_fuse_name_is_callable_both_ways():
    import litefer.deploy
    from litefer.deploy.fuse import fuse as fuse_fn   # binds litefer.deploy.fuse to the module
    m = _randomize_bn(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)))
    for f in (litefer.deploy.fuse, fuse_fn):
        out = f(m)
        assert _n_bn(out) == 0 and isinstance(out[0], nn.Conv2d)


def test_importing_litefer_deploy_does_not_import_torch():
    import subprocess
    import sys
    code = ("import sys; sys.modules['torch'] = None\n"
            "import litefer.deploy\n"
            "assert 'fuse' in litefer.deploy.__all__\n"
            "try:\n    litefer.deploy.count_params\nexcept ImportError:\n    print('lazy')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "lazy"
