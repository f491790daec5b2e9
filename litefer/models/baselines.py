"""Baseline architectures for comparison, built without pretrained weights.

- ``mini_xception``: Arriaga, Ploeger, Valdenegro, "Real-time Convolutional Neural
  Networks for Emotion and Gender Classification" (2017).  Two 3x3 convs of 8 filters,
  four residual modules (16, 32, 64, 128 channels) of
  ``sep3x3 -> BN -> ReLU -> sep3x3 -> BN -> maxpool 3x3/2`` + ``1x1 conv/2 -> BN``
  shortcut, then a 3x3 conv to the classes and global average pooling; "approximately
  60,000 parameters" (56,951 trainable here with 7 classes; Keras' count, which adds
  BN running statistics, is 58,423).  The paper trains at 48x48 (FER2013) and 64x64
  (IMDB gender); default 48x48 greyscale.  The paper's convs have no bias (as in its
  released Keras code); the stem convs' padding is "valid" in that code, here "same"
  (the text does not say; "same" keeps 48 -> 3 after four halvings).

  *Contract adaptation, exact*: the paper ends in ``conv3x3 -> GAP``.  Because both are
  linear, ``GAP(conv3x3(x)) == W . P(x) + b`` where ``P(x)`` is, for each of the nine
  kernel offsets, the mean of the zero-padded map shifted by that offset (an average
  pool with an ``HxW`` window over the padded map, giving ``(N, 128, 3, 3)``).  So
  ``forward_features`` returns ``P(x)`` flattened (1152-d) and ``forward_head`` is a
  linear layer holding the conv's weights: same function, same parameter count.
  ``forward`` itself takes the paper's route, the classifier's weights applied as that
  3x3 conv and then averaged: equal to ``forward_head(forward_features(x))`` to float
  rounding, and one conv and one mean in an ONNX export instead of nine slice + mean
  pairs (the bundled width-2 model at batch 1 on one AVX2 core, ONNX Runtime: 0.79
  against 0.95 ms per face, 1.12x; eager 1.07x; docs/benchmarks.md).
  ``head="gap"`` instead gives the common PyTorch port (128-d GAP + linear, 49.8 k).

- ``mobilenet_v1``: Howard et al. 2017, Table 1 (ReLU after depthwise and pointwise),
  224x224 RGB default.
- ``mobilenet_v2``, ``mobilenet_v3_small``: torchvision's builders (Sandler et al. 2018;
  Howard et al. 2019), first conv replaced when ``in_chans != 3``; 224x224 RGB default.
  ``mobilenet_v3_small``'s embedding is its 1024-d pre-logit layer (after the first
  classifier linear + hardswish), the last feature before the class layer.
- ``resnet18``: He et al. 2016 via torchvision, FER-adapted: the 7x7/2 stem becomes a
  3x3/1 conv (the max-pool stays), so 48x48 greyscale maps to 24, 12, 6, 3 in the four
  stages instead of collapsing to 1x1.  ``small_input=False`` keeps the ImageNet stem.
- ``vgg13``: the FER+ VGG13 of Barsoum, Zhang, Canton Ferrer, Zhang, "Training Deep
  Networks for Facial Expression Recognition with Crowd-Sourced Label Distribution"
  (ICMI 2016): 10 3x3 convs (64x2, 128x2, 256x3, 256x3) with max-pool + dropout 0.25
  after each group, two 1024-unit FC layers with dropout 0.5, the class layer.  The
  paper trains at 64x64 without BatchNorm; we add BN after each conv (trainable from
  scratch with plain SGD; ``bn=False`` for the original) and default to 48x48
  greyscale with an adaptive average pool to 3x3 before the FC layers (identity at 48,
  so any input size >= 16 works; at 64 the paper's 4x4 map is pooled to 3x3).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.models as tvm

from litefer.models._registry import register_model
from litefer.models.layers import (CBAM, ConvBNAct, DepthwiseSeparable, FERNet, SeparableConv2d,
                                   check_build_args, init_weights)


# --------------------------------------------------------------------------- mini-Xception
class _XceptionModule(nn.Module):
    def __init__(self, in_chs: int, out_chs: int):
        super().__init__()
        self.shortcut = ConvBNAct(in_chs, out_chs, 1, 2, act=None)
        self.sep1 = SeparableConv2d(in_chs, out_chs, 3)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.act1 = nn.ReLU(inplace=True)
        self.sep2 = SeparableConv2d(out_chs, out_chs, 3)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.pool = nn.MaxPool2d(3, 2, 1)

    fuse_pairs = (("sep1", "bn1"), ("sep2", "bn2"))

    def forward(self, x):
        y = self.act1(self.bn1(self.sep1(x)))
        y = self.pool(self.bn2(self.sep2(y)))
        return y + self.shortcut(x)


class MiniXception(FERNet):
    def __init__(self, num_classes: int = 7, in_chans: int = 1, head: str = "paper", width: int = 1):
        super().__init__()
        check_build_args("mini_xception", num_classes, in_chans)
        if head not in ("paper", "gap"):
            raise ValueError(f"mini_xception: head must be 'paper' or 'gap', got {head!r}")
        if not isinstance(width, int) or isinstance(width, bool) or not 1 <= width <= 8:
            raise ValueError(f"mini_xception: width must be an integer from 1 to 8, got {width!r}")
        self.in_chans, self.num_classes, self.head, self.width = in_chans, num_classes, head, width
        c = [8 * width * 2 ** i for i in range(5)]          # the paper's 8, 16, 32, 64, 128 at width 1
        self.stem = nn.Sequential(ConvBNAct(in_chans, c[0], 3), ConvBNAct(c[0], c[0], 3))
        self.blocks = nn.Sequential(*[_XceptionModule(a, b) for a, b in zip(c[:-1], c[1:])])
        self.num_features = c[-1] * 9 if head == "paper" else c[-1]
        self.classifier = nn.Linear(self.num_features, num_classes)
        init_weights(self)

    def _features(self, x):
        x = self.blocks(self.stem(x))
        if self.head == "gap":
            return x.mean((2, 3))
        h, w = x.shape[-2:]
        # mean of the zero-padded map under each of the 3x3 kernel offsets, (N, C, 9);
        # flattened channel-major to match the conv weight's (C, 3, 3) layout.  Slices
        # rather than an HxW average pool, whose kernel size ONNX export needs constant.
        xp = F.pad(x, (1, 1, 1, 1))
        shifted = [xp[:, :, u:u + h, v:v + w].mean((2, 3)) for u in range(3) for v in range(3)]
        return torch.stack(shifted, 2).flatten(1)

    def forward_head(self, f):
        return self.classifier(f)

    def forward(self, x):
        if self.head != "paper":
            return super().forward(x)
        self._check_input(x)
        # the same function as forward_head(forward_features(x)) (see the module docstring),
        # computed as the paper's conv3x3 -> GAP: fewer, larger operations than nine shifted
        # means, so eager PyTorch and ONNX exports of it run faster
        fmap = self.blocks(self.stem(x))
        w = self.classifier.weight.reshape(self.num_classes, -1, 3, 3)
        return F.conv2d(fmap, w, self.classifier.bias, padding=1).mean((2, 3))

    def head_as_conv(self) -> nn.Conv2d:
        """The paper's final 3x3 conv holding the classifier's weights (``head="paper"``)."""
        if self.head != "paper":
            raise ValueError("head_as_conv needs head='paper'")
        chs = self.num_features // 9
        conv = nn.Conv2d(chs, self.num_classes, 3, padding=1)
        conv.weight.data.copy_(self.classifier.weight.detach().reshape(self.num_classes, chs, 3, 3))
        conv.bias.data.copy_(self.classifier.bias.detach())
        return conv


@register_model("mini_xception", paper="mini-Xception (Arriaga et al., 2017)", default_input=(1, 48),
                paper_params=0.06, paper_defines_arch=True)
def mini_xception(num_classes: int = 7, in_chans: int = 1, **kw) -> MiniXception:
    """mini-Xception, ~57 k parameters ("approximately 60,000" in the paper).  ``width``
    (litefer's, not the paper's) multiplies every layer's channels: ``width=2`` has 4x the
    multiply-accumulates and ~0.2 M parameters."""
    return MiniXception(num_classes, in_chans, **kw)


# --------------------------------------------------------------------------- MobileNetV1
#: MobileNetV1 Table 1: (output channels, stride) of each depthwise-separable layer
MBV1_CFG = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
            (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


class MobileNetV1(FERNet):
    """MobileNetV1 (Howard et al., 2017, Table 1) for ``num_classes`` expressions.

    ``dw_act`` / ``act``: the depthwise and the stem/pointwise activations (``dw_act=None``
    makes the depthwise output linear); ``cbam_after``: indices into ``MBV1_CFG`` after whose
    pointwise conv a CBAM is inserted.  The defaults are plain MobileNetV1 (ReLU everywhere, no
    attention); A-MobileNet (``litefer.models.a_mobilenet``) is this network configured."""

    name = "mobilenet_v1"

    def __init__(self, num_classes: int = 7, in_chans: int = 3, width: float = 1.0,
                 drop_rate: float = 0.0, act=nn.ReLU, dw_act=nn.ReLU, cbam_after=(),
                 cbam_reduction: int = 16):
        super().__init__()
        check_build_args(self.name, num_classes, in_chans)
        bad = [i for i in cbam_after if not 0 <= i < len(MBV1_CFG)]
        if bad:
            raise ValueError(f"{self.name}: cbam_after indices must be in 0..{len(MBV1_CFG) - 1}, got {bad}")
        ch = lambda c: max(8, int(c * width))  # noqa: E731
        self.in_chans, self.num_classes = in_chans, num_classes
        layers, c = [ConvBNAct(in_chans, ch(32), 3, 2, act=act)], ch(32)
        for i, (out, s) in enumerate(MBV1_CFG):
            layers.append(DepthwiseSeparable(c, ch(out), 3, s, dw_act=dw_act, pw_act=act))
            c = ch(out)
            if i in cbam_after:
                layers.append(CBAM(c, cbam_reduction))
        self.body = nn.Sequential(*layers)
        self.num_features = c
        self.drop = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(c, num_classes)
        init_weights(self)

    def _features(self, x):
        return self.body(x).mean((2, 3))

    def forward_head(self, f):
        return self.classifier(self.drop(f))


@register_model("mobilenet_v1", paper="MobileNetV1 (Howard et al., 2017)", default_input=(3, 224),
                paper_params=None, paper_defines_arch=True)
def mobilenet_v1(num_classes: int = 7, in_chans: int = 3, **kw) -> MobileNetV1:
    """MobileNetV1 1.0 (4.2 M with the 1000-class ImageNet head; 3.2 M with 7 classes,
    so no paper figure applies to a 7-class head)."""
    return MobileNetV1(num_classes, in_chans, **kw)


# --------------------------------------------------------------------------- torchvision wrappers
def _replace_first_conv(conv: nn.Conv2d, in_chans: int) -> nn.Conv2d:
    if conv.in_channels == in_chans:
        return conv
    new = nn.Conv2d(in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    bias=conv.bias is not None)
    nn.init.kaiming_normal_(new.weight, mode="fan_out")   # torchvision's own init for these convs
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    return new


class MobileNetV2TV(FERNet):
    def __init__(self, num_classes: int = 7, in_chans: int = 3, width: float = 1.0, drop_rate: float = 0.2):
        super().__init__()
        check_build_args("mobilenet_v2", num_classes, in_chans)
        net = tvm.mobilenet_v2(weights=None, num_classes=num_classes, width_mult=width, dropout=drop_rate)
        net.features[0][0] = _replace_first_conv(net.features[0][0], in_chans)
        self.in_chans, self.num_classes = in_chans, num_classes
        self.features = net.features
        self.num_features = net.last_channel
        self.classifier = net.classifier          # Dropout, Linear

    def _features(self, x):
        return self.features(x).mean((2, 3))

    def forward_head(self, f):
        return self.classifier(f)


@register_model("mobilenet_v2", paper="MobileNetV2 (Sandler et al., 2018)", default_input=(3, 224),
                paper_params=None, paper_defines_arch=True)
def mobilenet_v2(num_classes: int = 7, in_chans: int = 3, **kw) -> MobileNetV2TV:
    """torchvision MobileNetV2 1.0 (3.5 M with 1000 classes; 2.2 M with 7)."""
    return MobileNetV2TV(num_classes, in_chans, **kw)


class MobileNetV3SmallTV(FERNet):
    def __init__(self, num_classes: int = 7, in_chans: int = 3, width: float = 1.0, drop_rate: float = 0.2):
        super().__init__()
        check_build_args("mobilenet_v3_small", num_classes, in_chans)
        net = tvm.mobilenet_v3_small(weights=None, num_classes=num_classes, width_mult=width, dropout=drop_rate)
        net.features[0][0] = _replace_first_conv(net.features[0][0], in_chans)
        self.in_chans, self.num_classes = in_chans, num_classes
        self.features = net.features
        # classifier = Linear(576, 1024), Hardswish, Dropout, Linear(1024, classes)
        self.pre_logits = nn.Sequential(net.classifier[0], net.classifier[1])
        self.num_features = net.classifier[0].out_features
        self.drop = net.classifier[2]
        self.classifier = net.classifier[3]

    def _features(self, x):
        return self.pre_logits(self.features(x).mean((2, 3)))

    def forward_head(self, f):
        return self.classifier(self.drop(f))


@register_model("mobilenet_v3_small", paper="MobileNetV3-Small (Howard et al., 2019)",
                default_input=(3, 224), paper_params=None, paper_defines_arch=True)
def mobilenet_v3_small(num_classes: int = 7, in_chans: int = 3, **kw) -> MobileNetV3SmallTV:
    """torchvision MobileNetV3-Small 1.0 (2.5 M with 1000 classes; 1.5 M with 7)."""
    return MobileNetV3SmallTV(num_classes, in_chans, **kw)


class ResNet18(FERNet):
    def __init__(self, num_classes: int = 7, in_chans: int = 1, small_input: bool = True):
        super().__init__()
        check_build_args("resnet18", num_classes, in_chans)
        net = tvm.resnet18(weights=None, num_classes=num_classes)
        if small_input:
            net.conv1 = nn.Conv2d(in_chans, 64, 3, 1, 1, bias=False)
            nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        else:
            net.conv1 = _replace_first_conv(net.conv1, in_chans)
        self.in_chans, self.num_classes, self.num_features = in_chans, num_classes, 512
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.fc = net.fc

    fuse_pairs = (("conv1", "bn1"),)

    def _features(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean((2, 3))

    def forward_head(self, f):
        return self.fc(f)


@register_model("resnet18", paper="ResNet-18 (He et al., 2016), FER stem", default_input=(1, 48),
                paper_params=None, paper_defines_arch=True)
def resnet18(num_classes: int = 7, in_chans: int = 1, **kw) -> ResNet18:
    """ResNet-18 with a 3x3/1 stem for 48x48 faces (11.2 M parameters with 7 classes)."""
    return ResNet18(num_classes, in_chans, **kw)


class VGG13FER(FERNet):
    GROUPS = ((64, 2), (128, 2), (256, 3), (256, 3))

    def __init__(self, num_classes: int = 7, in_chans: int = 1, bn: bool = True, pool_size: int = 3,
                 hidden: int = 1024, drop_rate: float = 0.5, conv_drop: float = 0.25):
        super().__init__()
        check_build_args("vgg13", num_classes, in_chans)
        self.in_chans, self.num_classes, self.num_features = in_chans, num_classes, hidden
        layers, c = [], in_chans
        for width, n in self.GROUPS:
            for _ in range(n):
                layers.append(ConvBNAct(c, width, 3) if bn else
                              nn.Sequential(nn.Conv2d(c, width, 3, padding=1), nn.ReLU(inplace=True)))
                c = width
            layers += [nn.MaxPool2d(2), nn.Dropout(conv_drop)]
        self.body = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.fc = nn.Sequential(nn.Linear(c * pool_size * pool_size, hidden), nn.ReLU(inplace=True),
                                nn.Dropout(drop_rate), nn.Linear(hidden, hidden), nn.ReLU(inplace=True))
        self.drop = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(hidden, num_classes)
        init_weights(self)

    def _features(self, x):
        if min(x.shape[-2:]) < 16:
            raise ValueError(f"vgg13 needs inputs of at least 16x16 (four 2x2 max-pools), got {tuple(x.shape[-2:])}")
        return self.fc(self.pool(self.body(x)).flatten(1))

    def forward_head(self, f):
        return self.classifier(self.drop(f))


@register_model("vgg13", paper="VGG13 for FER+ (Barsoum et al., ICMI 2016)", default_input=(1, 48),
                paper_params=None, paper_defines_arch=True)
def vgg13(num_classes: int = 7, in_chans: int = 1, **kw) -> VGG13FER:
    """The FER+ VGG13 (10 convs + 3 FC) with BN, at 48x48 greyscale (see module docstring)."""
    return VGG13FER(num_classes, in_chans, **kw)
