"""I-MobileNetV2: Zhu, Zhuang, Zhao, Xu, Meng, "A study on expression recognition based
on improved MobileNetV2 network", Scientific Reports 14 (2024).

What the paper states: MobileNetV2 (Sandler et al. 2018) with width multiplier 0.75 and
the top 1x1 conv reduced to 320 channels; a Squeeze-and-Excitation module in every
inverted residual; "reverse fusion" so negative responses are kept (the depthwise
features and their inversion ``-x`` both go through the activation and are fused);
SELU instead of ReLU6; 48x48 input; FER2013 68.62 %, CK+ 95.96 %; 3.26 M parameters.

Ambiguities and our choices:

1. **Size.**  The stated architecture (width 0.75, top width 320, 7 classes) has
   1.45 M parameters with sum fusion, not 3.26 M.  A 1280-wide top conv with
   concatenating (CReLU-style) reverse fusion, which doubles the input of every
   projection conv and of every SE, lands at 3.2 M.  We provide both:
   ``i_mobilenetv2`` = the text, ``i_mobilenetv2_paper_size`` = the size the paper
   reports.  Only the latter is checked against 3.26 M.
2. **How the two activations are fused.**  Not given as a formula.  ``fusion="sum"``
   (text version) returns ``SELU(x) - SELU(-x)``, which keeps the width and the sign;
   ``fusion="concat"`` returns ``[SELU(x), SELU(-x)]`` (paper-size version).
3. **Where SE sits.**  After the fused depthwise activation, before the linear
   projection (the MobileNetV3 placement), with SENet's default reduction r = 16 of the
   width it sees (``se_ratio=1/16``), ReLU and sigmoid gate.  (MobileNetV3's r = 4 would
   give 2.4 M / 7.0 M parameters for the two variants, further from the paper.)
4. **Where SELU replaces ReLU6.**  Everywhere ReLU6 was: stem, expansion convs, the
   depthwise activation (inside reverse fusion) and the top conv.  Projections stay
   linear as in MobileNetV2.
5. **48x48 input.**  MobileNetV2's total stride 32 leaves a 2x2 map at 48x48.  We
   set the stem stride to 1 (``stem_stride`` keyword), so the stride is 16 and the last
   map is 3x3; every other stride is MobileNetV2's.  At 224 use ``stem_stride=2``.
6. **Classifier.**  Global average pooling, dropout 0.2 (MobileNetV2's), linear layer.
"""
from __future__ import annotations

import torch.nn as nn

from litefer.models._registry import register_model
from litefer.models.layers import (ConvBNAct, FERNet, ReverseFusionAct, SqueezeExcite,
                                   check_build_args, init_weights, make_divisible)

PAPER = "I-MobileNetV2 (Zhu et al., Sci. Rep. 2024)"

#: MobileNetV2's stages: expansion t, output channels c, repeats n, first stride s
MBV2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                 (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class InvertedResidualSE(nn.Module):
    """1x1 expand (BN+SELU) -> 3x3 depthwise (BN) -> reverse-fusion SELU -> SE -> 1x1
    linear projection (BN); identity shortcut when the stride is 1 and widths match."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, expand: int, fusion: str = "sum",
                 se_ratio: float = 1 / 16, act=nn.SELU):
        super().__init__()
        hidden = int(round(in_chs * expand))
        self.use_res = stride == 1 and in_chs == out_chs
        self.expand = ConvBNAct(in_chs, hidden, 1, act=act) if expand != 1 else nn.Identity()
        self.dw = ConvBNAct(hidden, hidden, 3, stride, groups=hidden, act=None)
        self.fuse_act = ReverseFusionAct(act, fusion)
        fused = hidden * (2 if fusion == "concat" else 1)
        self.se = SqueezeExcite(fused, se_ratio) if se_ratio else nn.Identity()
        self.project = ConvBNAct(fused, out_chs, 1, act=None)

    def forward(self, x):
        y = self.project(self.se(self.fuse_act(self.dw(self.expand(x)))))
        return x + y if self.use_res else y


class IMobileNetV2(FERNet):
    def __init__(self, num_classes: int = 7, in_chans: int = 1, width: float = 0.75,
                 head_width: int = 320, fusion: str = "sum", stem_stride: int = 1,
                 se_ratio: float = 1 / 16, drop_rate: float = 0.2):
        super().__init__()
        check_build_args("i_mobilenetv2", num_classes, in_chans)
        if width <= 0:
            raise ValueError(f"i_mobilenetv2: width must be > 0, got {width}")
        if stem_stride not in (1, 2):
            raise ValueError(f"i_mobilenetv2: stem_stride must be 1 or 2, got {stem_stride}")
        self.in_chans, self.num_classes, self.num_features = in_chans, num_classes, head_width
        stem = make_divisible(32 * width)
        self.stem = ConvBNAct(in_chans, stem, 3, stem_stride, act=nn.SELU)
        blocks, c_in = [], stem
        for t, c, n, s in MBV2_SETTINGS:
            c_out = make_divisible(c * width)
            for i in range(n):
                blocks.append(InvertedResidualSE(c_in, c_out, s if i == 0 else 1, t, fusion, se_ratio))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.head_conv = ConvBNAct(c_in, head_width, 1, act=nn.SELU)
        self.drop = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(head_width, num_classes)
        init_weights(self)

    def _features(self, x):
        return self.head_conv(self.blocks(self.stem(x))).mean((2, 3))

    def forward_head(self, f):
        return self.classifier(self.drop(f))


@register_model("i_mobilenetv2", paper=PAPER, default_input=(1, 48), paper_params=3.26,
                paper_defines_arch=False)
def i_mobilenetv2(num_classes: int = 7, in_chans: int = 1, **kw) -> IMobileNetV2:
    """The architecture as the paper's text states it (width 0.75, top width 320, sum
    reverse fusion).  1.45 M parameters: the paper's 3.26 M does not follow from its
    text (see the module docstring), hence ``paper_defines_arch=False``."""
    return IMobileNetV2(num_classes, in_chans, **kw)


@register_model("i_mobilenetv2_paper_size", paper=PAPER, default_input=(1, 48), paper_params=3.26,
                paper_defines_arch=True)
def i_mobilenetv2_paper_size(num_classes: int = 7, in_chans: int = 1, **kw) -> IMobileNetV2:
    """The variant matching the paper's reported 3.26 M parameters: width 0.75, a
    1280-wide top conv and concatenating (CReLU-style) reverse fusion: 3.20 M parameters
    with 7 classes (-1.8 %)."""
    kw.setdefault("head_width", 1280)
    kw.setdefault("fusion", "concat")
    return IMobileNetV2(num_classes, in_chans, **kw)
