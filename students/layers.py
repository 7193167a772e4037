"""Small building blocks shared by every MNv4 block, with timm's conventions.

Convs never have a bias; BatchNorm uses PyTorch's momentum 0.1 and eps 1e-5, the values timm's
released weights were trained with (TF Model Garden's configs use other, Keras-style values).
Padding is symmetric ``k // 2`` as in timm's ``create_conv2d``, which is what the timm weights
need (TF's ``'same'`` padding is asymmetric on stride-2 convs).
"""

from __future__ import annotations

import math

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU}


def make_act(name: str | None) -> nn.Module:
    """Activation module by name; ``None`` gives Identity (linear bottlenecks, pre-norms)."""
    if name is None:
        return nn.Identity()
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return nn.ReLU(inplace=True) if name == "relu" else ACTIVATIONS[name]()


def conv2d(in_chs: int, out_chs: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """Bias-free conv with symmetric padding ``((s - 1) + (k - 1)) // 2`` (timm), i.e. ``k // 2``."""
    padding = ((stride - 1) + (kernel - 1)) // 2
    return nn.Conv2d(in_chs, out_chs, kernel, stride, padding, groups=groups, bias=False)


class ConvNormAct(nn.Module):
    """Conv, BatchNorm, optional activation: keys ``conv.*`` and ``bn.*`` as in timm's ConvNormAct."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel: int,
        stride: int = 1,
        groups: int = 1,
        act: str | None = None,
    ) -> None:
        super().__init__()
        self.conv = conv2d(in_chs, out_chs, kernel, stride, groups)
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class LayerScale2d(nn.Module):
    """Per-channel scale γ (init 1e-5) on an NCHW tensor; only the hybrids use it, as in timm."""

    def __init__(self, dim: int, init_value: float = 1e-5) -> None:
        super().__init__()
        self.init_value = init_value
        self.gamma = nn.Parameter(torch.full((dim,), init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(1, -1, 1, 1)


def init_weights_goog(module: nn.Module) -> None:
    """TF-EfficientNet initialisation as timm applies it to MNv4 (``_init_weight_goog``).

    Convs ~ N(0, sqrt(2 / fan_out)) with fan_out = k*k*C_out/groups, BN γ=1 β=0,
    Linear ~ U(±1/sqrt(out_features)). Blocks that need something else (the MQA projections)
    re-initialise themselves afterwards in their own ``init_weights``.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.weight.size(0))
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)
    for m in module.modules():
        if m is not module and hasattr(m, "init_weights"):
            m.init_weights()
