"""A-MobileNet: Nan, Ju, Hua, Zhang, Wang, "A-MobileNet: An approach of facial expression
recognition", Alexandria Engineering Journal 61 (2022).  Reported: 3.4 M parameters;
trained with softmax + center loss (``litefer.losses.center``), which uses this model's
1024-d ``forward_features``.

Architecture (the paper's Table 1, which follows MobileNetV1's Table 1):

- 3x3 conv 32, stride 2, BN + ReLU6;
- 13 depthwise-separable layers (64, 128/2, 128, 256/2, 256, 512/2, 5x 512,
  1024/2, 1024).  The depthwise conv is *linear* (BN, no activation: the paper removes
  the non-linearity after the depthwise conv to keep information in the low-dimensional
  per-channel maps), the pointwise conv is followed by BN + ReLU6;
- CBAM (Woo et al. 2018; channel MLP with reduction 16, 7x7 spatial conv) inserted where
  the paper's Table 1 lists it: right after the 128 -> 256 pointwise conv (28x28x256),
  after the 256 -> 512 pointwise conv (14x14x512), after the 5x 512 block (14x14x512),
  and after the last 1024 -> 1024 pointwise conv (7x7x1024) — "9 DSC layers and 4
  improved DSC layers" in the text;
- global average pooling, dropout 0.5 (the paper's "dropout was 0.5"), fully connected layer.

Ambiguities and our choices:

- MobileNetV1's Table 1 gives the second-to-last depthwise conv stride 2 at 7x7, a
  well-known typo; the A-MobileNet table lists it as "Conv dw/s1" and so do we.
- CBAM's reduction ratio is not restated in the paper; we use CBAM's default 16.
- Input: 224x224 RGB by default (Table 1's sizes).  Smaller inputs work (the network is
  fully convolutional up to global pooling); at 48x48 the last map is 2x2.  The paper
  fed FER+'s 48x48 and RAF-DB's 100x100 crops (its section 3.1) without saying how they
  reach Table 1's 224x224; litefer's configs resize to 224.
- The paper initialises from ImageNet-pretrained weights ("use the pre-training
  parameters on the ImageNet").  litefer cannot download any, so its own runs start
  from scratch; a user who has such weights sets ``model.init_from: PATH`` in the
  training config (see ``litefer.models.checkpoint.init_from``).

7 classes: 3.42 M parameters (paper: 3.4 M), 0.568 G MACs at 224x224 (counted by
``litefer.deploy.profile``; the paper reports no FLOPs).
"""
from __future__ import annotations

import torch.nn as nn

from litefer.models._registry import register_model
from litefer.models.baselines import MobileNetV1

PAPER = "A-MobileNet (Nan et al., Alexandria Eng. J. 2022)"

#: indices into MobileNetV1's 13 depthwise-separable layers (``MBV1_CFG``) after which CBAM is
#: inserted (the paper's Table 1): the 128 -> 256 pointwise conv (28x28x256), the 256 -> 512
#: one (14x14x512), the end of the 5x block, the last 1024 -> 1024 one (7x7x1024)
CBAM_AFTER = (3, 5, 10, 12)


class AMobileNet(MobileNetV1):
    """MobileNetV1 with a linear depthwise output, ReLU6 after the stem and every pointwise
    conv, CBAM after the four layers of ``cbam_after`` and dropout 0.5 before the classifier."""

    name = "a_mobilenet"

    def __init__(self, num_classes: int = 7, in_chans: int = 3, width: float = 1.0,
                 cbam_after=CBAM_AFTER, cbam_reduction: int = 16, drop_rate: float = 0.5):
        super().__init__(num_classes, in_chans, width=width, drop_rate=drop_rate, act=nn.ReLU6,
                         dw_act=None, cbam_after=cbam_after, cbam_reduction=cbam_reduction)


@register_model("a_mobilenet", paper=PAPER, default_input=(3, 224), paper_params=3.4,
                paper_defines_arch=True)
def a_mobilenet(num_classes: int = 7, in_chans: int = 3, **kw) -> AMobileNet:
    """A-MobileNet: MobileNetV1 with linear depthwise outputs, ReLU6 and four CBAMs."""
    return AMobileNet(num_classes, in_chans, **kw)
