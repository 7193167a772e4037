"""Convolutional MNv4 blocks: ConvBnAct, FusedIB and the Universal Inverted Bottleneck.

Module and attribute names follow timm's state_dict (``timm/models/_efficientnet_blocks.py``),
so timm weights load without renaming. Shapes: ``x`` is [B, C_in, H, W]; every block returns
[B, C_out, H/s, W/s].
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import StochasticDepth

from students.layers import ConvNormAct, LayerScale2d, conv2d, make_act


def make_divisible(v: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    """Round ``v`` to the nearest multiple of ``divisor`` (min ``divisor``), never below 90% of v.

    This is timm's ``make_divisible``; at width 1.0 every MNv4 width is already a
    multiple of 8, so it only matters for scaled variants.
    """
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


def drop_path(rate: float) -> nn.Module:
    """Per-sample stochastic depth (active only in training), or Identity when the rate is 0."""
    return StochasticDepth(rate, mode="row") if rate > 0 else nn.Identity()


class ConvBnAct(nn.Module):
    """Conv + BN + act with no residual: the Conv-S stages 0-1 and the final 1x1 -> 960 conv.

    Keys ``conv.weight`` and ``bn1.*`` as in timm's ``ConvBnAct``.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel: int, stride: int, act: str) -> None:
        super().__init__()
        self.conv = conv2d(in_chs, out_chs, kernel, stride)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn1(self.conv(x)))


class FusedIB(nn.Module):
    """Fused inverted bottleneck (timm ``EdgeResidual``): full 3x3 expansion, linear 1x1 projection.

    No residual and no layer scale in any MNv4 model (TF and timm code specs).
    """

    def __init__(
        self, in_chs: int, out_chs: int, expand: float, stride: int, act: str, kernel: int = 3
    ) -> None:
        super().__init__()
        mid = make_divisible(in_chs * expand)
        self.conv_exp = conv2d(in_chs, mid, kernel, stride)
        self.bn1 = nn.BatchNorm2d(mid)
        self.act = make_act(act)
        self.conv_pwl = conv2d(mid, out_chs, 1)
        self.bn2 = nn.BatchNorm2d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv_pwl(self.act(self.bn1(self.conv_exp(x)))))


class UIB(nn.Module):
    """Universal Inverted Bottleneck (timm ``UniversalInvertedResidual``), in the paper's op order.

    ``k_start``/``k_mid`` (0 = absent) select the instantiation: IB (0, k), ConvNext (k, 0),
    ExtraDW (k1, k2) or FFN (0, 0). The middle depthwise conv carries the stride when present,
    otherwise the start one does. The expansion width is computed from the block input.
    Layer scale (hybrids only) applies even without a residual; the identity residual exists only
    at stride 1 with equal channels.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        k_start: int,
        k_mid: int,
        expand: float,
        stride: int,
        act: str,
        layer_scale: float | None = None,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        mid = make_divisible(in_chs * expand)
        start_stride = 1 if k_mid else stride
        self.dw_start = (
            ConvNormAct(in_chs, in_chs, k_start, start_stride, groups=in_chs)
            if k_start
            else nn.Identity()
        )
        self.pw_exp = ConvNormAct(in_chs, mid, 1, act=act)
        self.dw_mid = (
            ConvNormAct(mid, mid, k_mid, stride, groups=mid, act=act) if k_mid else nn.Identity()
        )
        self.pw_proj = ConvNormAct(mid, out_chs, 1)
        self.layer_scale = LayerScale2d(out_chs, layer_scale) if layer_scale else nn.Identity()
        self.has_skip = stride == 1 and in_chs == out_chs
        self.drop_path = drop_path(drop_path_rate) if self.has_skip else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.dw_start(x)
        x = self.pw_exp(x)
        x = self.dw_mid(x)
        x = self.pw_proj(x)
        x = self.layer_scale(x)
        if self.has_skip:
            x = self.drop_path(x) + shortcut
        return x
