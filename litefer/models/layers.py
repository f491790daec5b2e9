"""Building blocks shared by every model family (one definition each).

Conventions that :func:`litefer.deploy.fuse` relies on:

- a convolution followed by its BatchNorm is either adjacent in an ``nn.Sequential``
  (:class:`ConvBNAct`, :class:`Conv2d_BN` are Sequentials), or declared by the module
  in a class attribute ``fuse_pairs = (("conv1", "bn1"), ...)``: its ``forward``
  applies that BN directly to that conv's output (a :class:`SeparableConv2d` child is
  fused through its pointwise conv);
- blocks that re-parameterise (:class:`RepVGGDW`) have a ``fuse()`` method returning the
  single equivalent ``nn.Conv2d``.

Blocks here contain no BatchNorm on 1x1 maps or on pooled vectors, so every model
trains with batch size 1 (BatchNorm cannot normalise a single value per channel).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

ActLayer = Optional[Callable[[], nn.Module]]


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor`` without losing more than 10 %
    (the rule of the MobileNetV2 reference implementation)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _act(act: ActLayer) -> nn.Module:
    return act() if act is not None else nn.Identity()


def _check_pos(name: str, **vals: int) -> None:
    for k, v in vals.items():
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: {k} must be a positive int, got {v!r}")


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> activation (``act=None``: none, a linear conv)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, act: ActLayer = nn.ReLU, padding: int | None = None,
                 dilation: int = 1):
        _check_pos("ConvBNAct", in_chs=in_chs, out_chs=out_chs, kernel_size=kernel_size,
                   stride=stride, groups=groups)
        if padding is None:
            padding = (kernel_size - 1) // 2 * dilation
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, dilation=dilation,
                              groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = _act(act)


class Conv2d_BN(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d with no activation, as in LFN/RepViT code.

    ``bn_weight_init`` lets a residual branch start as zero (0.0)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1,
                 padding: int | None = None, groups: int = 1, bn_weight_init: float = 1.0):
        _check_pos("Conv2d_BN", in_chs=in_chs, out_chs=out_chs, kernel_size=kernel_size,
                   stride=stride, groups=groups)
        if padding is None:
            padding = (kernel_size - 1) // 2
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        if "bn" not in self._modules:        # already folded by litefer.deploy.fuse
            return self.conv
        return fuse_conv_bn(self.conv, self.bn)


@torch.no_grad()
def fuse_conv_bn(conv: nn.Conv2d | nn.Conv1d | nn.Linear, bn: nn.modules.batchnorm._BatchNorm):
    """A conv (or linear) with the eval-mode BatchNorm that follows it folded in."""
    std = (bn.running_var + bn.eps).sqrt()
    gamma = bn.weight if bn.affine else torch.ones_like(std)
    beta = bn.bias if bn.affine else torch.zeros_like(std)
    scale = gamma / std
    if isinstance(conv, nn.Linear):
        fused = nn.Linear(conv.in_features, conv.out_features, bias=True)
    else:
        fused = type(conv)(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                           conv.padding, conv.dilation, conv.groups, bias=True,
                           padding_mode=conv.padding_mode)
    shape = (-1,) + (1,) * (conv.weight.dim() - 1)
    fused.weight.copy_(conv.weight * scale.reshape(shape))
    b = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.copy_((b - bn.running_mean) * scale + beta)
    return fused.to(conv.weight.device)


class DepthwiseSeparable(nn.Module):
    """Depthwise kxk conv + BN (+``dw_act``) then pointwise 1x1 conv + BN (+``pw_act``).

    ``dw_act=None`` gives the *linear* depthwise output used by A-MobileNet."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1,
                 dw_act: ActLayer = nn.ReLU, pw_act: ActLayer = nn.ReLU):
        super().__init__()
        self.dw = ConvBNAct(in_chs, in_chs, kernel_size, stride, groups=in_chs, act=dw_act)
        self.pw = ConvBNAct(in_chs, out_chs, 1, act=pw_act)

    def forward(self, x):
        return self.pw(self.dw(x))


class SeparableConv2d(nn.Module):
    """Keras-style SeparableConv2D: depthwise kxk then pointwise 1x1, no BN in between
    (Xception / mini-Xception); the caller adds BN after."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1, bias: bool = False):
        super().__init__()
        _check_pos("SeparableConv2d", in_chs=in_chs, out_chs=out_chs, kernel_size=kernel_size)
        self.dw = nn.Conv2d(in_chs, in_chs, kernel_size, stride, (kernel_size - 1) // 2, groups=in_chs, bias=False)
        self.pw = nn.Conv2d(in_chs, out_chs, 1, bias=bias)

    def forward(self, x):
        return self.pw(self.dw(x))


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation (Hu et al., CVPR 2018): GAP -> 1x1 reduce -> act -> 1x1
    expand -> gate, rescaling channels.  ``rd_ratio`` of the *input* channels unless
    ``rd_channels`` is given; no BN (works at batch size 1)."""

    def __init__(self, chs: int, rd_ratio: float = 0.25, rd_channels: int | None = None,
                 act: Callable[[], nn.Module] = nn.ReLU, gate: Callable[[], nn.Module] = nn.Sigmoid,
                 divisor: int = 1):
        super().__init__()
        if rd_channels is None:
            rd_channels = make_divisible(chs * rd_ratio, divisor, 1) if divisor > 1 else max(1, int(round(chs * rd_ratio)))
        self.fc1 = nn.Conv2d(chs, rd_channels, 1)
        self.act = act()
        self.fc2 = nn.Conv2d(rd_channels, chs, 1)
        self.gate = gate()

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


class ChannelAttention(nn.Module):
    """CBAM channel attention: shared MLP over average- and max-pooled descriptors, summed."""

    def __init__(self, chs: int, reduction: int = 16):
        super().__init__()
        rd = max(1, chs // reduction)
        self.fc1 = nn.Conv2d(chs, rd, 1, bias=False)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd, chs, 1, bias=False)

    def forward(self, x):
        avg = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        mx = self.fc2(self.act(self.fc1(x.amax((2, 3), keepdim=True))))
        return x * torch.sigmoid(avg + mx)


class SpatialAttention(nn.Module):
    """CBAM spatial attention: channel-wise mean and max maps -> 7x7 conv -> sigmoid.

    Woo et al. put BN after the 7x7 conv in their code but not in the paper's text; we
    follow the text (conv with no BN), which also keeps batch size 1 trainable."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"SpatialAttention kernel_size must be odd, got {kernel_size}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x):
        s = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
        return x * torch.sigmoid(self.conv(s))


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al., ECCV 2018): channel attention
    then spatial attention, sequentially (the order the paper found best)."""

    def __init__(self, chs: int, reduction: int = 16, spatial_kernel: int = 7):
        super().__init__()
        self.channel = ChannelAttention(chs, reduction)
        self.spatial = SpatialAttention(spatial_kernel)

    def forward(self, x):
        return self.spatial(self.channel(x))


class HSigmoid(nn.Module):
    def forward(self, x):
        return F.relu6(x + 3.0) / 6.0


class CoordAtt(nn.Module):
    """Coordinate attention (Hou, Zhou, Feng, CVPR 2021).

    Pools along W and along H separately, encodes both strips with one shared 1x1 conv
    (``mid = max(8, chs // reduction)``) + BN + h-swish, splits them back and produces a
    height gate and a width gate (1x1 conv + sigmoid) that rescale the input.  The
    shared conv's BN sees ``N x (H+W)`` values per channel, so batch size 1 trains."""

    def __init__(self, chs: int, out_chs: int | None = None, reduction: int = 32):
        super().__init__()
        out_chs = out_chs or chs
        mid = max(8, chs // reduction)
        self.conv1 = nn.Conv2d(chs, mid, 1, bias=True)
        self.bn1 = nn.BatchNorm2d(mid)
        self.act = nn.Hardswish()
        self.conv_h = nn.Conv2d(mid, out_chs, 1)
        self.conv_w = nn.Conv2d(mid, out_chs, 1)

    fuse_pairs = (("conv1", "bn1"),)

    def forward(self, x):
        n, c, h, w = x.shape
        xh = x.mean(3, keepdim=True)                       # (n, c, h, 1)
        xw = x.mean(2, keepdim=True).transpose(2, 3)       # (n, c, w, 1)
        y = self.act(self.bn1(self.conv1(torch.cat([xh, xw], 2))))
        yh, yw = torch.split(y, [h, w], 2)
        ah = torch.sigmoid(self.conv_h(yh))
        aw = torch.sigmoid(self.conv_w(yw.transpose(2, 3)))
        return x * ah * aw


def _split_channels(chs: int, n: int) -> list[int]:
    split = [chs // n] * n
    split[0] += chs - sum(split)
    return split


class MixConv(nn.Module):
    """Mixed depthwise convolution (Tan & Le, BMVC 2019): channels split into equal
    groups (the remainder to the first), group ``i`` convolved depthwise with kernel
    ``kernels[i]``, outputs concatenated.  One kernel is a plain depthwise conv."""

    def __init__(self, chs: int, kernels: Sequence[int] = (3, 5), stride: int = 1):
        super().__init__()
        kernels = list(kernels)
        if not kernels or any(k < 1 or k % 2 == 0 for k in kernels):
            raise ValueError(f"MixConv kernels must be odd positive ints, got {kernels}")
        if chs < len(kernels):
            raise ValueError(f"MixConv: {chs} channels cannot be split into {len(kernels)} groups")
        self.splits = _split_channels(chs, len(kernels))
        self.convs = nn.ModuleList(
            nn.Conv2d(c, c, k, stride, k // 2, groups=c, bias=False) for c, k in zip(self.splits, kernels))

    def forward(self, x):
        if len(self.convs) == 1:
            return self.convs[0](x)
        xs = torch.split(x, self.splits, 1)
        return torch.cat([conv(xi) for conv, xi in zip(self.convs, xs)], 1)


class RepVGGDW(nn.Module):
    """Re-parameterisable depthwise block (RepVGG, Ding et al. CVPR 2021; the depthwise
    form of RepViT, Wang et al. CVPR 2024): at training time
    ``y = BN(dw3x3(x)) + BN(dw1x1(x)) + x``; :meth:`fuse` folds the three branches into
    one 3x3 depthwise conv with bias (exact in eval mode).

    RepViT's code puts one more BN after the sum; we keep the three-branch RepVGG form
    (each branch normalised) which fuses to the same kind of single conv."""

    def __init__(self, chs: int):
        super().__init__()
        self.chs = chs
        self.conv = Conv2d_BN(chs, chs, 3, 1, 1, groups=chs)
        self.conv1 = Conv2d_BN(chs, chs, 1, 1, 0, groups=chs)

    def forward(self, x):
        return self.conv(x) + self.conv1(x) + x

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        c3 = self.conv.fuse()
        c1 = self.conv1.fuse()
        w = c3.weight.clone()
        w += F.pad(c1.weight, (1, 1, 1, 1))
        w[:, 0, 1, 1] += 1.0   # identity branch
        fused = nn.Conv2d(self.chs, self.chs, 3, 1, 1, groups=self.chs, bias=True).to(w.device)
        fused.weight.copy_(w)
        fused.bias.copy_(c3.bias + c1.bias)
        return fused


def _pool_matrix(n_in: int, n_out: int, like: torch.Tensor) -> torch.Tensor:
    """(n_out, n_in) averaging matrix with adaptive pooling's bins:
    ``[floor(i * n_in / n_out), ceil((i + 1) * n_in / n_out))``."""
    m = torch.zeros(n_out, n_in, dtype=like.dtype, device=like.device)
    for i in range(n_out):
        a, b = (i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)
        m[i, a:b] = 1.0 / (b - a)
    return m


def adaptive_avg_pool2d(x: torch.Tensor, size: int) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, size)`` as two matrix products.

    Same result; unlike the ATen op it exports to ONNX with the TorchScript exporter when
    only the batch axis is dynamic (that exporter refuses adaptive pooling once shape
    inference has lost the spatial size)."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    return _pool_matrix(h, size, x) @ x @ _pool_matrix(w, size, x).t()


class SpatialBias(nn.Module):
    """Spatial Bias (Go & Ryu, "Spatial Bias for Attention-free Non-local Neural
    Networks", 2023): a cheap global-context branch concatenated to a feature map.

    1x1 conv reduces ``chs`` to ``sb_chs`` channels (BN + ReLU) -> adaptive average pool
    to ``pool x pool`` -> flatten to ``(N, sb_chs, pool*pool)`` -> a 1-D conv whose
    *input channels are the pooled positions* (``pool*pool`` -> ``pool*pool``, kernel
    ``k`` sliding over the ``sb_chs`` axis, "same" padding, with a bias), so each output
    position mixes every pooled position (the global, non-local part) -> reshape to
    ``(N, sb_chs, pool, pool)`` -> bilinear upsample to the map's size.  ``forward``
    returns ``cat([x, bias], 1)``, ``chs + sb_chs`` wide.  As in the LFNSB paper (its
    "Global Knowledge Aggregation" step) and the released LFNSB code, nothing follows
    the 1-D conv; ``norm_act=True`` keeps litefer's former BN + ReLU after it (measured
    in docs/results.md).

    Ambiguities and choices: the paper describes the 1-D conv as operating on "the
    flattened feature" without fixing which axis is channels; we treat positions as
    channels (the reading in which one conv is global, also the released LFNSB code's).
    The released code pads the 1-D conv with 0, which silently drops two channels; we pad
    so ``sb_chs`` is kept.  With ``norm_act=True`` the BN after it normalises
    ``N * sb_chs`` values per channel, so batch size 1 trains whenever ``sb_chs >= 2``.

    ``concat=False`` is the head variant of the released LFNSB code (used there with
    ``pool=2``): ``forward`` returns the *pooled* global-context map ``(N, sb_chs, pool,
    pool)`` itself (no upsampling, no concatenation), which that code flattens into a
    classifier."""

    def __init__(self, chs: int, sb_chs: int = 8, pool: int = 7, kernel_size: int = 3,
                 concat: bool = True, norm_act: bool = False):
        super().__init__()
        _check_pos("SpatialBias", chs=chs, sb_chs=sb_chs, pool=pool, kernel_size=kernel_size)
        if sb_chs < 2:
            raise ValueError("SpatialBias needs sb_chs >= 2 (its 1-D conv slides over sb_chs values)")
        if kernel_size % 2 != 1:
            raise ValueError(f"SpatialBias kernel_size must be odd, got {kernel_size}")
        self.pool, self.sb_chs, self.concat, self.norm_act = pool, sb_chs, concat, bool(norm_act)
        self.out_chs = chs + sb_chs if concat else sb_chs
        self.reduce = ConvBNAct(chs, sb_chs, 1)
        self.conv = nn.Conv1d(pool * pool, pool * pool, kernel_size, padding=kernel_size // 2, bias=not norm_act)
        # norm_act=False: no BN / ReLU after the 1-D conv (bn is None, so fuse skips the pair)
        self.bn = nn.BatchNorm1d(pool * pool) if norm_act else None
        self.act = nn.ReLU(inplace=True) if norm_act else nn.Identity()

    fuse_pairs = (("conv", "bn"),)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        """The global-context map ``(N, sb_chs, pool, pool)`` before upsampling."""
        n = x.shape[0]
        s = adaptive_avg_pool2d(self.reduce(x), self.pool)              # (n, sb, p, p)
        s = s.flatten(2).transpose(1, 2)                                 # (n, p*p, sb)
        s = self.conv(s)
        if self.bn is not None:
            s = self.bn(s)
        s = self.act(s)
        return s.transpose(1, 2).reshape(n, self.sb_chs, self.pool, self.pool)

    def forward(self, x):
        s = self.context(x)
        if not self.concat:
            return s
        s = F.interpolate(s, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([x, s], 1)


class GDC(nn.Module):
    """Global depthwise convolution embedding (MobileFaceNet, Chen et al. 2018): a
    depthwise conv whose kernel covers the whole ``size x size`` map, then a linear 1x1
    projection to ``embedding`` features.

    MobileFaceNet follows both with BatchNorm; on a 1x1 map that BN cannot train at
    batch size 1, so we use conv biases instead (a deliberate, documented deviation)."""

    def __init__(self, chs: int, embedding: int = 512, size: int = 7):
        super().__init__()
        self.size = size
        self.dw = nn.Conv2d(chs, chs, size, groups=chs, bias=True)
        self.proj = nn.Conv2d(chs, embedding, 1, bias=True)

    def forward(self, x):
        if x.shape[-2:] != (self.size, self.size):
            raise ValueError(f"GDC expects a {self.size}x{self.size} map, got {tuple(x.shape[-2:])}; "
                             f"the model was built for a different input size")
        return self.proj(self.dw(x)).flatten(1)


class ReverseFusionAct(nn.Module):
    """I-MobileNetV2's reverse fusion: the activation is applied to ``x`` and to its
    inversion ``-x`` and the two are fused, so the negative half of the response is not
    discarded.

    - ``mode="sum"``: ``act(x) - act(-x)`` (same width, no parameters; for ReLU the
      identity, for SELU an odd, saturating, bounded-derivative non-linearity);
    - ``mode="learned"``: ``a * act(x) + b * act(-x)`` with per-channel ``a``, ``b``
      (a depthwise 1x1 "fusion convolution" over the pair; needs ``channels``),
      initialised to ``a = 1, b = -1`` so it starts as ``sum``;
    - ``mode="concat"``: ``cat([act(x), act(-x)])`` (CReLU-style, doubles channels; the
      next 1x1 conv is then a learned fusion over the concatenation)."""

    MODES = ("sum", "learned", "concat")

    def __init__(self, act: Callable[[], nn.Module] = nn.SELU, mode: str = "sum",
                 channels: Optional[int] = None):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"ReverseFusionAct mode must be one of {', '.join(self.MODES)}, got {mode!r}")
        self.mode = mode
        self.act = act()
        if mode == "learned":
            if not channels or channels < 1:
                raise ValueError("ReverseFusionAct mode='learned' needs channels >= 1")
            self.pos_weight = nn.Parameter(torch.ones(1, channels, 1, 1))
            self.neg_weight = nn.Parameter(-torch.ones(1, channels, 1, 1))

    def forward(self, x):
        pos, neg = self.act(x), self.act(-x)
        if self.mode == "concat":
            return torch.cat([pos, neg], 1)
        if self.mode == "learned":
            return self.pos_weight * pos + self.neg_weight * neg
        return pos - neg


class FERNet(nn.Module):
    """Base of every litefer model: ``forward = forward_head(forward_features(x))``.

    Subclasses set ``in_chans``, ``num_classes``, ``num_features`` and implement
    ``_features(x) -> (N, num_features)`` and ``forward_head(f)``.  ``forward_features``
    checks the input's shape first so a wrong tensor gives a clear error rather than a
    deep shape mismatch."""

    in_chans: int
    num_classes: int
    num_features: int

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{type(self).__name__} expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"{type(self).__name__} expects an (N, C, H, W) tensor, got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            raise ValueError(f"{type(self).__name__} was built for {self.in_chans} input channel(s), "
                             f"got {x.shape[1]} (shape {tuple(x.shape)}); build it with in_chans={x.shape[1]}")

    def _features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self._features(x)

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def check_build_args(name: str, num_classes: int, in_chans: int) -> None:
    """Clear errors for nonsensical builder arguments."""
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"{name}: num_classes must be a positive int, got {num_classes!r}")
    if not isinstance(in_chans, int) or isinstance(in_chans, bool) or in_chans < 1:
        raise ValueError(f"{name}: in_chans must be a positive int, got {in_chans!r}")


def init_weights(model: nn.Module) -> nn.Module:
    """Training-from-scratch initialisation used by litefer's own models: He-normal
    (fan-out) convs, zero biases, BatchNorm weight 1 / bias 0, linear N(0, 0.01).  This
    is the MobileNet/ResNet reference initialisation; PyTorch's default (uniform,
    a=sqrt(5)) is tuned for neither."""
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model
