"""LFN, LFNSB and MFN: lightweight face networks built from MixConv + coordinate
attention blocks (Chen & Huang, "A Lightweight Model Enhancing Facial Expression
Recognition with Spatial Bias and Cosine-Harmony Loss", preprint 2024,
``../shared/papers/002_…txt``; authors' code: github.com/1chenchen22/LFNSB, read for the
layer table only — it carries no licence and nothing is copied from it).  Paper vs
litefer, element by element: docs/models.md, section "LFNSB, LFN, MFN".

**LFN body** (112x112x3 input, as the authors' ``LFN.py``; the paper's Table 1 differs —
c = 128 from the 28x28 stage on, expansion factors t = 2, 2, 4, 2, 8, 2 — and gives
4.44 M parameters, not the reported 2.676 M: ``stages="table1"`` builds it for the
comparison, ``stages="released"`` (default) the code's widths below):

- stem: 3x3 conv 3->64 stride 2 + BN, then 3x3 depthwise conv 64 + BN, with *no*
  activation in between or after (``Conv2d_BN`` twice, as in the code);
- blocks (:class:`MixBlock`): 1x1 expansion conv + BN + PReLU -> MixConv depthwise
  (Tan & Le 2019) -> coordinate attention (Hou et al. 2021, reduction 32) -> 1x1 linear
  projection + BN; identity shortcut when stride 1 and widths match.  As in the code,
  the MixConv output has no BN or activation (the attention gate follows directly);
- stages (out channels, expansion width, kernels, repeats):

  ====================  ====  =====  =========  =====
  where                 out   exp.   kernels    reps
  ====================  ====  =====  =========  =====
  56 -> 28 (stride 2)   64    96     3, 5       1
  28x28                 64    96     3          9
  28 -> 14 (stride 2)   128   192    3, 5       1
  14x14                 128   192    3          16
  14 -> 7 (stride 2)    256   768    3, 5, 7    1
  7x7                   256   342    3, 5       6
  ====================  ====  =====  =========  =====

- a re-parameterisable :class:`~litefer.models.layers.RepVGGDW` (256) at 7x7.

MixConv channel split: equal groups, remainder to the first (the MixConv paper's rule);
the authors' code uses unequal splits for the stride-2 blocks (e.g. 64/32 of 96 for
kernels 3/5).  The difference is a few hundred parameters.  Our RepVGGDW normalises
each branch instead of the sum (see its docstring); both fuse to one conv.

**Heads** (the code's heads need BatchNorm on 1x1 maps / pooled vectors, which cannot
train at batch size 1; ours use conv biases instead):

- ``lfn``: the LFN body + MobileFaceNet's GDC (7x7 global depthwise conv + linear 1x1 to
  a 256-d embedding, as ``LFN.py``'s ``embedding_size``) + linear classifier.  The
  code's final BatchNorm1d and l2-normalisation (face-verification leftovers) are
  dropped: classification logits need neither.
- ``lfnsb``: the LFN body + Spatial Bias (Go & Ryu 2023) concatenated to the 7x7 map
  (``sb_chs=32`` bias channels from a 7x7 pooled context, i.e. at full 7x7
  resolution) + GDC embedding + linear classifier.  This is the paper's description
  ("Upsampling and Concatenation": the bias map is upsampled and "concatenated with
  the convolutional feature map along the channel dimension"); ``head="released"``
  instead reproduces the released ``LFNSB2.py`` head: SB with ``pool=2`` and 64
  channels, *no* concatenation, the 2x2x64 context map flattened (256-d) into the
  classifier, GDC unused.  Nothing follows SB's 1-D conv (paper, released code);
  ``sb_norm_act=True`` keeps litefer's former BN + ReLU there.
- ``mfn``: MFN is not defined in the LFNSB paper (it is Ref. [4], Zhang et al.'s
  DDAMFN backbone); the paper's Table 2 reports it at 3.973 M params / 550.74 M FLOPs.
  Ours is a MobileFaceNet-style network with the same blocks (MixConv + coordinate
  attention), larger kernels in the shallow stages, wider expansions and
  MobileFaceNet's 1x1 512 conv + GDC head: 4.14 M params / 544 M MACs counted, near
  but not equal to those figures; ``paper_defines_arch=False``.

``forward_features(x, return_backbone=True)`` also returns the global-average-pooled
backbone map (after RepVGGDW), the tensor the released code gives its Cosine-Harmony
loss (``loss.cosine_harmony.input: backbone``).

Parameter/MAC counts (7 classes, 112x112, counted by ``litefer.deploy.profile``) are in
``docs/models.md``.
"""
from __future__ import annotations

from typing import Sequence

import torch.nn as nn

from litefer.models._registry import register_model
from litefer.models.layers import (GDC, Conv2d_BN, ConvBNAct, CoordAtt, FERNet, MixConv, RepVGGDW,
                                   SpatialBias, check_build_args, init_weights)

PAPER_LFNSB = ("LFNSB (Chen & Huang, A Lightweight Model Enhancing Facial Expression Recognition with "
               "Spatial Bias and Cosine-Harmony Loss, preprint 2024)")

#: (out channels, expansion width, kernels, repeats, stride) of the LFN stages
LFN_STAGES = ((64, 96, (3, 5), 1, 2), (64, 96, (3,), 9, 1),
              (128, 192, (3, 5), 1, 2), (128, 192, (3,), 16, 1),
              (256, 768, (3, 5, 7), 1, 2), (256, 342, (3, 5), 6, 1))

#: MFN: the LFN depth with larger kernels in the shallow stages (3/5/7 at 28x28 and
#: 14x14) and wider expansions (2x at 28x28/14x14, 512 at 7x7); with the 512-wide 1x1
#: conv and a 512-d GDC this gives 4.14 M params / 544 M MACs, next to the 3.973 M params /
#: 550.74 M FLOPs the LFNSB paper's Table 2 reports for MFN
#: the paper's Table 1 read literally (t = expansion factor times the block's *input*
#: channels, c = 128 from the 28x28 stage on): the 28x28 stage's first block widens 64 -> 128
#: (expansion 2 x 64), its other eight 2 x 128; then t = 4, 2, 8, 2.  Only the released
#: code's widths (LFN_STAGES) give the reported 2.676 M parameters; see docs/models.md.
LFN_TABLE1_STAGES = ((64, 128, (3, 5), 1, 2), (128, 128, (3,), 1, 1), (128, 256, (3,), 8, 1),
                     (128, 512, (3, 5), 1, 2), (128, 256, (3,), 16, 1),
                     (256, 1024, (3, 5, 7), 1, 2), (256, 512, (3, 5), 6, 1))

#: named stage tables accepted by ``stages=``
STAGE_TABLES = {"released": LFN_STAGES, "table1": LFN_TABLE1_STAGES}

MFN_STAGES = ((64, 128, (3, 5, 7), 1, 2), (64, 128, (3, 5, 7), 9, 1),
              (128, 256, (3, 5, 7), 1, 2), (128, 256, (3, 5), 16, 1),
              (256, 768, (3, 5, 7), 1, 2), (256, 512, (3, 5), 6, 1))


class MixBlock(nn.Module):
    """1x1 expand (BN + PReLU) -> MixConv depthwise -> coordinate attention -> 1x1
    linear projection (BN), residual when the shapes match."""

    def __init__(self, in_chs: int, out_chs: int, expand_chs: int, kernels: Sequence[int],
                 stride: int = 1, ca_reduction: int = 32):
        super().__init__()
        self.use_res = stride == 1 and in_chs == out_chs
        self.expand = ConvBNAct(in_chs, expand_chs, 1, act=lambda: nn.PReLU(expand_chs))
        self.mix = MixConv(expand_chs, kernels, stride)
        self.ca = CoordAtt(expand_chs, reduction=ca_reduction)
        self.project = ConvBNAct(expand_chs, out_chs, 1, act=None)

    def forward(self, x):
        y = self.project(self.ca(self.mix(self.expand(x))))
        return x + y if self.use_res else y


def _stages(c: int, stages) -> tuple[nn.Sequential, int]:
    blocks = []
    for out, exp, kernels, reps, stride in stages:
        for i in range(reps):
            blocks.append(MixBlock(c, out, exp, kernels, stride if i == 0 else 1))
            c = out
    return nn.Sequential(*blocks), c


class LFN(FERNet):
    """LFN body + a head: ``head`` is ``"gdc"`` (LFN), ``"sb"`` (LFNSB, spatial bias
    concatenated, then GDC) or ``"released"`` (the released LFNSB2 head)."""

    def __init__(self, num_classes: int = 7, in_chans: int = 3, head: str = "gdc",
                 embedding: int = 256, sb_chs: int = 32, sb_pool: int = 7, img_size: int = 112,
                 stages=LFN_STAGES, pre_head_chs: int | None = None, drop_rate: float = 0.0,
                 sb_norm_act: bool = False):
        super().__init__()
        if isinstance(stages, str):
            if stages not in STAGE_TABLES:
                raise ValueError(f"LFN stages must be one of {sorted(STAGE_TABLES)} or a table, got {stages!r}")
            stages = STAGE_TABLES[stages]
        name = {"gdc": "lfn", "sb": "lfnsb", "released": "lfnsb"}.get(head)
        if name is None:
            raise ValueError(f"LFN head must be 'gdc', 'sb' or 'released', got {head!r}")
        check_build_args(name, num_classes, in_chans)
        if img_size % 16 or img_size < 32:
            raise ValueError(f"{name}: img_size must be a multiple of 16 and >= 32, got {img_size}")
        self.in_chans, self.num_classes, self.head = in_chans, num_classes, head
        self.stem = nn.Sequential(Conv2d_BN(in_chans, 64, 3, 2), Conv2d_BN(64, 64, 3, 1, groups=64))
        self.body, c = _stages(64, stages)
        self.rep = RepVGGDW(c)
        # MFN: MobileFaceNet's 1x1 widening conv before the GDC
        self.pre_head = (ConvBNAct(c, pre_head_chs, 1, act=lambda: nn.PReLU(pre_head_chs))
                         if pre_head_chs else nn.Identity())
        c = pre_head_chs or c
        self.num_backbone_features = c
        size = img_size // 16
        if head == "released":
            self.sb = SpatialBias(c, sb_chs=64, pool=2, concat=False, norm_act=sb_norm_act)
            self.gdc = nn.Identity()
            self.num_features = 64 * 2 * 2
        else:
            self.sb = (SpatialBias(c, sb_chs=sb_chs, pool=sb_pool, norm_act=sb_norm_act) if head == "sb"
                       else nn.Identity())
            c = self.sb.out_chs if head == "sb" else c
            self.gdc = GDC(c, embedding, size)
            self.num_features = embedding
        self.drop = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(self.num_features, num_classes)
        init_weights(self)

    def _backbone(self, x):
        """The backbone's feature map (after RepVGGDW; MFN: after its 1x1 widening conv)."""
        return self.pre_head(self.rep(self.body(self.stem(x))))

    def _head_features(self, m):
        if self.head == "released":
            return self.sb(m).flatten(1)
        return self.gdc(self.sb(m))

    def _features(self, x):
        return self._head_features(self._backbone(x))

    def forward_features(self, x, return_backbone: bool = False):
        """``(N, num_features)``; with ``return_backbone=True`` also the global-average-pooled
        backbone map ``(N, num_backbone_features)``, the tensor the released LFNSB code
        gives its Cosine-Harmony loss (one forward pass for both)."""
        self._check_input(x)
        m = self._backbone(x)
        f = self._head_features(m)
        return (f, m.mean((2, 3))) if return_backbone else f

    def forward_backbone(self, x):
        """The global-average-pooled backbone map ``(N, num_backbone_features)``."""
        return self.forward_features(x, return_backbone=True)[1]

    def forward_head(self, f):
        return self.classifier(self.drop(f))


# paper figures: the LFNSB paper's Table 2 (it reports no size for LFN alone)
@register_model("lfn", paper=PAPER_LFNSB, default_input=(3, 112), paper_params=None,
                paper_defines_arch=True)
def lfn(num_classes: int = 7, in_chans: int = 3, **kw) -> LFN:
    """The LFN backbone (no spatial bias) with a GDC embedding and a linear classifier."""
    kw.setdefault("head", "gdc")
    return LFN(num_classes, in_chans, **kw)


@register_model("lfnsb", paper=PAPER_LFNSB, default_input=(3, 112), paper_params=2.676,
                paper_flops="397.35 M FLOPs", paper_defines_arch=True)
def lfnsb(num_classes: int = 7, in_chans: int = 3, **kw) -> LFN:
    """LFN + Spatial Bias + GDC head (``head="released"`` for the released code's head).
    The paper's Table 2 reports 2.676 M params / 397.35 M FLOPs; the released head here
    counts 2.676 M params / 387.5 M MACs, our default head 2.764 M (+3 %)."""
    kw.setdefault("head", "sb")
    return LFN(num_classes, in_chans, **kw)


@register_model("mfn", paper="MFN (Zhang et al. 2023, DDAMFN backbone; size from the LFNSB paper's Table 2)",
                default_input=(3, 112), paper_params=3.973, paper_flops="550.74 M FLOPs",
                paper_defines_arch=False)
def mfn(num_classes: int = 7, in_chans: int = 3, **kw) -> LFN:
    """MobileFaceNet-style MixConv + coordinate-attention network (our layout; see the
    module docstring): 512-wide 1x1 conv, GDC to a 512-d embedding, linear classifier."""
    kw.setdefault("stages", MFN_STAGES)
    kw.setdefault("pre_head_chs", 512)
    kw.setdefault("embedding", 512)
    kw.setdefault("head", "gdc")
    return LFN(num_classes, in_chans, **kw)
