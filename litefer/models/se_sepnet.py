"""SE-SepNet: Gao & Ma, "A Robust Improved Network for Facial Expression Recognition"
(``../shared/papers/003_…txt``): a CNN with depthwise-separable convolutions,
Squeeze-and-Excitation attention, short (residual) connections, BatchNorm and dropout,
for 48x48 greyscale FER2013 faces (reported test accuracy 65.2 %).

The paper names these ingredients, but its structure figures (Figure 5, the model;
Figure 6, the block) are not in the text, and no widths, depth, reduction ratio or
parameter count are given, so **the layer table here is litefer's choice**: the registry
marks it ``paper_defines_arch=False`` with no size to check against.  It is modelled on
mini-Xception (Arriaga et al. 2017) — *that lineage is litefer's claim, not the
paper's*, which does not mention mini-Xception (it cites Chollet's Xception for
separable convolution).  Paper vs litefer, element by element: docs/models.md.

Our instance (mini-Xception-style residual modules, widened, plus SE):

- stem: 3x3 conv 32 -> 3x3 conv 64 (BN + ReLU each), stride 1 at 48x48;
- three residual modules with 128, 256, 512 channels; each is
  ``sep3x3 -> BN -> ReLU -> sep3x3 -> BN -> SE(r=16) -> maxpool 3x3/2`` added to a
  ``1x1 conv stride 2 -> BN`` shortcut, then ReLU and spatial dropout (0.1);
  the map goes 48 -> 24 -> 12 -> 6;
- global average pooling (the 512-d embedding), dropout 0.5, linear classifier.

About 0.77 M parameters and 0.23 G MACs (counted) at 48x48.
"""
from __future__ import annotations

import torch.nn as nn

from litefer.models._registry import register_model
from litefer.models.layers import (ConvBNAct, FERNet, SeparableConv2d, SqueezeExcite,
                                   check_build_args, init_weights)

PAPER = "SE-SepNet (Gao & Ma, A Robust Improved Network for Facial Expression Recognition)"


class SepResidualSE(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, se_ratio: float = 1 / 16, drop: float = 0.1):
        super().__init__()
        self.sep1 = SeparableConv2d(in_chs, out_chs, 3)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.act1 = nn.ReLU(inplace=True)
        self.sep2 = SeparableConv2d(out_chs, out_chs, 3)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.se = SqueezeExcite(out_chs, se_ratio)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.shortcut = ConvBNAct(in_chs, out_chs, 1, 2, act=None)
        self.act = nn.ReLU(inplace=True)
        self.drop = nn.Dropout2d(drop)

    fuse_pairs = (("sep1", "bn1"), ("sep2", "bn2"))

    def forward(self, x):
        y = self.act1(self.bn1(self.sep1(x)))
        y = self.pool(self.se(self.bn2(self.sep2(y))))
        return self.drop(self.act(y + self.shortcut(x)))


class SESepNet(FERNet):
    def __init__(self, num_classes: int = 7, in_chans: int = 1, widths=(128, 256, 512),
                 stem=(32, 64), se_ratio: float = 1 / 16, drop_rate: float = 0.5,
                 block_drop: float = 0.1):
        super().__init__()
        check_build_args("se_sepnet", num_classes, in_chans)
        if not widths:
            raise ValueError("se_sepnet: widths must list at least one module width")
        self.in_chans, self.num_classes, self.num_features = in_chans, num_classes, widths[-1]
        self.stem = nn.Sequential(ConvBNAct(in_chans, stem[0], 3), ConvBNAct(stem[0], stem[1], 3))
        blocks, c = [], stem[1]
        for w in widths:
            blocks.append(SepResidualSE(c, w, se_ratio, block_drop))
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.drop = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(c, num_classes)
        init_weights(self)

    def _features(self, x):
        return self.blocks(self.stem(x)).mean((2, 3))

    def forward_head(self, f):
        return self.classifier(self.drop(f))


@register_model("se_sepnet", paper=PAPER, default_input=(1, 48), paper_params=None,
                paper_defines_arch=False)
def se_sepnet(num_classes: int = 7, in_chans: int = 1, **kw) -> SESepNet:
    """SE-SepNet at 48x48 greyscale; widths are litefer's choice (see module docstring)."""
    return SESepNet(num_classes, in_chans, **kw)
