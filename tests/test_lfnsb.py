"""LFNSB / LFN / MFN against the paper (shared/papers/002_…txt): Spatial Bias without
BN + ReLU after its 1-D conv, Table 1 vs the released widths, the paper's figures."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from litefer.deploy import fuse
from litefer.deploy.profile import count_macs, count_params
from litefer.models import create_model, model_info
from litefer.models.layers import SpatialBias


def _randomize_bn(m: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    for b in m.modules():
        if isinstance(b, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = b.num_features
            b.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            b.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            b.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            b.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return m


def test_spatial_bias_has_nothing_after_its_1d_conv_by_default():
    torch.manual_seed(0)
    sb = SpatialBias(16, sb_chs=4, pool=3).eval()
    assert sb.bn is None and isinstance(sb.act, nn.Identity) and sb.conv.bias is not None
    x = torch.randn(2, 16, 6, 6)
    with torch.no_grad():
        ctx = sb.context(x)
        # the context is the 1-D conv's output itself: it can be negative (no ReLU)
        assert (ctx < 0).any()
        pooled = nn.functional.adaptive_avg_pool2d(sb.reduce(x), 3).flatten(2).transpose(1, 2)
        assert torch.allclose(ctx, sb.conv(pooled).transpose(1, 2).reshape(2, 4, 3, 3), atol=1e-6)
    # the option keeps litefer's former BN + ReLU, and fusing folds that BN
    old = _randomize_bn(SpatialBias(16, sb_chs=4, pool=3, norm_act=True)).eval()
    assert isinstance(old.bn, nn.BatchNorm1d) and isinstance(old.act, nn.ReLU) and old.conv.bias is None
    with torch.no_grad():
        assert (old.context(x) >= 0).all()
        f = fuse(old)
        assert not any(isinstance(m, nn.BatchNorm1d) for m in f.modules())
        assert torch.allclose(f(x), old(x), atol=1e-5)


def test_lfnsb_option_reaches_both_heads():
    assert create_model("lfnsb").sb.bn is None
    assert isinstance(create_model("lfnsb", sb_norm_act=True).sb.bn, nn.BatchNorm1d)
    assert isinstance(create_model("lfnsb", head="released", sb_norm_act=True).sb.bn, nn.BatchNorm1d)


def test_table1_and_released_widths_counted():
    """Only the released code's widths give the paper's 2.676 M (its Table 2); the
    paper's Table 1 read literally gives 4.37 M."""
    released = create_model("lfnsb", head="released")
    table1 = create_model("lfnsb", head="released", stages="table1")
    assert round(count_params(released) / 1e6, 3) == 2.676
    assert round(count_params(table1) / 1e6, 3) == 4.374
    # Table 1's channels: c = 128 after the first 28x28 block, expansion t x input channels
    widths = [(b.expand.conv.out_channels, b.project.conv.out_channels) for b in table1.body]
    assert widths[:3] == [(128, 64), (128, 128), (256, 128)]
    assert widths[10] == (512, 128) and widths[27] == (1024, 256) and widths[28] == (512, 256)
    assert len(widths) == 1 + 9 + 1 + 16 + 1 + 6
    assert abs(count_macs(released, (3, 112)) / 1e6 - 387.5) < 0.5
    with pytest.raises(ValueError, match="stages"):
        create_model("lfnsb", stages="table2")


def test_registry_carries_the_papers_figures():
    lfnsb, mfn, lfn = model_info("lfnsb"), model_info("mfn"), model_info("lfn")
    assert (lfnsb.paper_params, lfnsb.paper_flops) == (2.676, "397.35 M FLOPs")
    assert (mfn.paper_params, mfn.paper_flops) == (3.973, "550.74 M FLOPs") and not mfn.paper_defines_arch
    assert lfn.paper_params is None


def test_litefer_models_shows_paper_figures_beside_counts():
    from litefer.cli.models import paper_figures, zoo_rows
    rows = {r["name"]: r for r in zoo_rows(["lfnsb", "mfn"], flops=False)}
    assert round(rows["lfnsb"]["params_m"], 3) == 2.764
    assert paper_figures(rows["lfnsb"]) == "2.676 M, 397.35 M FLOPs"
    assert paper_figures(rows["mfn"]) == "3.973 M*, 550.74 M FLOPs"
