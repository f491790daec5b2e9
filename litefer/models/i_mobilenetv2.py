"""I-MobileNetV2: Zhu, Zhuang, Zhao, Xu, Meng, "A study on expression recognition based
on improved MobileNetV2 network", Scientific Reports 14 (2024).

What the paper states (``shared/papers/000_…txt``; its figures are not in the text):

- "An image of size 3 x 48 x 48 is input into the network model"; a 3x3 stem conv, then
  the inverted-residual stack of "Table 1 ... the network structure of MobilenetV2"
  (t, c, n, s; "Down sampling is only used in the first inverted residual structure of
  each bottleneck layer"), global average pooling and a fully connected layer; BN after
  every conv.  "we make alpha = 0.75 and reduce the highest output dimension of the
  network to 320".
- SE channel attention (its Eqs. 6-8: GAP, FC-ReLU-FC-sigmoid, channel scaling) in the
  improved inverted residual (Fig. 6, not in the text).
- Reverse fusion (section "Reverse fusion methods"): "The feature map obtained from the
  deep convolutional layer is passed ... through the deep convolutional inversion layer
  for the inversion operation, and it is passed to the next convolutional block along
  with the feature information of the original feature map through the deep
  convolutional fusion layer for the feature summation"; contribution (ii): "inverse and
  fusion operations are performed on the feature map, which is conducted to the next
  layer by deep fusion convolution to avoid the loss of negative value information when
  passing through the activation function".
- SELU instead of ReLU6.  FER2013 68.62 %, CK+ 95.96 %; "only 3.26 M" parameters.

What litefer computes, and the choices where the text is silent:

1. **Input and strides** (default): 3 x 48 x 48, stem stride 2 and MobileNetV2's table
   unchanged, so the maps are 24 -> 24 -> 12 -> 6 -> 3 -> 3 -> 2 -> 2 (total stride 32,
   a 2x2 last map).  ``stem_stride=1`` (registered as ``i_mobilenetv2_s1``) is litefer's
   higher-resolution variant (total stride 16, 3x3 last map, 3.4x the MACs); see
   docs/results.md for the two measured side by side.  Grey images are replicated to
   three channels by the data pipeline (``model.in_chans: 3``).
2. **Reverse fusion.**  The text names an inversion (``-x``) and a "fusion" layer that
   sums, placed so negative values survive the activation; it gives no formula.
   ``fusion="sum"`` (default, parameter-free): ``SELU(x) - SELU(-x)`` — the activation
   applied to the map and to its inversion, summed with the inversion's sign restored
   so the result stays an odd function of ``x`` (plain ``SELU(x) + SELU(-x)`` would be
   even and erase the sign).  ``fusion="learned"``: the "deep(wise) fusion convolution"
   read literally, a learned per-channel 1x1 (depthwise) combination
   ``a_c * SELU(x) + b_c * SELU(-x)``, initialised at ``a = 1, b = -1`` (= ``sum``).
   ``fusion="concat"`` passes ``[SELU(x), SELU(-x)]`` to the projection, which is then a
   learned 1x1 conv over the concatenation (CReLU-style; used by the paper-size
   variant).  Ablation in docs/results.md.
3. **Size.**  The stated architecture (width 0.75, top width 320, 7 classes) counts
   1.45 M parameters with ``sum``/``learned`` fusion, not 3.26 M; the paper also quotes
   its comparisons in "MB" ("reduced by 16.84 MB and 18.42 MB"), so its unit is unclear.
   ``i_mobilenetv2_paper_size`` (1280-wide top conv, concatenating fusion) counts 3.20 M.
   Trained alike on FER2013 (litefer's recipe, 31 vs 33 epochs), it scored 62.66 % PrivateTest
   against 60.88 % for the 1.45 M default: the size is worth part of the gap to the paper's
   68.62 %, not most of it (docs/results.md).  Distilled from litefer's 69.32 % FER2013 ensemble
   (same recipe and budget, 0.8 teacher + 0.2 label) it reached 65.20 %, and 66.90 % after a
   second cosine stage from those weights (65 epochs in all): the capacity is there; the labels
   and the schedule, not the size, limit the label-trained runs.
4. **Where SE sits.**  After the fused depthwise activation, before the linear
   projection (the MobileNetV3 placement), SENet's reduction r = 16, ReLU and sigmoid
   (the paper's Eq. 7: delta = ReLU, sigma = sigmoid).
5. **Where SELU replaces ReLU6.**  Everywhere ReLU6 was: stem, expansion convs, the
   depthwise activation (inside reverse fusion) and the top conv.  Projections stay
   linear as in MobileNetV2.
6. **Classifier.**  Global average pooling, dropout 0.2 (MobileNetV2's; the paper names
   none), linear layer.
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
        self.fuse_act = ReverseFusionAct(act, fusion, channels=hidden)
        fused = hidden * (2 if fusion == "concat" else 1)  # "learned" keeps the width
        self.se = SqueezeExcite(fused, se_ratio) if se_ratio else nn.Identity()
        self.project = ConvBNAct(fused, out_chs, 1, act=None)

    def forward(self, x):
        y = self.project(self.se(self.fuse_act(self.dw(self.expand(x)))))
        return x + y if self.use_res else y


class IMobileNetV2(FERNet):
    def __init__(self, num_classes: int = 7, in_chans: int = 3, width: float = 0.75,
                 head_width: int = 320, fusion: str = "sum", stem_stride: int = 2,
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


@register_model("i_mobilenetv2", paper=PAPER, default_input=(3, 48), paper_params=3.26,
                paper_defines_arch=False)
def i_mobilenetv2(num_classes: int = 7, in_chans: int = 3, **kw) -> IMobileNetV2:
    """The architecture as the paper's text states it: 3 x 48 x 48 input, MobileNetV2's
    table with stem stride 2, width 0.75, top width 320, parameter-free reverse fusion
    (``fusion="learned"`` for the learned fusion).  1.45 M parameters: the paper's 3.26 M
    does not follow from its text (see the module docstring), hence
    ``paper_defines_arch=False``."""
    return IMobileNetV2(num_classes, in_chans, **kw)


@register_model("i_mobilenetv2_s1", paper=PAPER, default_input=(3, 48), paper_params=None,
                paper_defines_arch=False)
def i_mobilenetv2_s1(num_classes: int = 7, in_chans: int = 3, **kw) -> IMobileNetV2:
    """litefer's higher-resolution variant (not the paper's): stem stride 1, so a 48 x 48
    input keeps a 3 x 3 last map (total stride 16) at 3.4x the MACs; otherwise the
    same as ``i_mobilenetv2``."""
    kw.setdefault("stem_stride", 1)
    return IMobileNetV2(num_classes, in_chans, **kw)


@register_model("i_mobilenetv2_paper_size", paper=PAPER, default_input=(3, 48), paper_params=3.26,
                paper_defines_arch=True)
def i_mobilenetv2_paper_size(num_classes: int = 7, in_chans: int = 3, **kw) -> IMobileNetV2:
    """The variant matching the paper's reported 3.26 M parameters: width 0.75, a
    1280-wide top conv and concatenating (CReLU-style) reverse fusion: 3.20 M parameters
    with 7 classes (-1.8 %)."""
    kw.setdefault("head_width", 1280)
    kw.setdefault("fusion", "concat")
    return IMobileNetV2(num_classes, in_chans, **kw)
