"""Attention blocks of the hybrid models: Mobile MQA and a standard MHSA for comparison.

Letters: B batch, C channels, H x W query grid with N = H*W positions, M key/value positions
(N / kv_stride**2), h heads, d_k / d_v key / value dims.

Mobile MQA has one key head and one value head shared by all h query heads. Following the paper's
appendix G, all query heads go through one batched product with that single K/V head: the query
is laid out as [B, N*h, d_k] (position-major, head-minor), which is exactly the memory of the
channels_last [B, h*d_k, H, W] projection, so no transpose is needed before or after the fused
attention kernel (``F.scaled_dot_product_attention``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from students.blocks import drop_path
from students.layers import LayerScale2d, conv2d


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, H*W, C]; a free view when ``x`` is channels_last."""
    b, c = x.shape[:2]
    return x.permute(0, 2, 3, 1).reshape(b, -1, c)


def _grid(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[B, H*W, C] -> [B, C, H, W] as a channels_last view (no copy)."""
    return tokens.reshape(tokens.shape[0], h, w, -1).permute(0, 3, 1, 2)


def _xavier_convs(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)


def _kv_branch(dim: int, out_dim: int, kv_stride: int, kernel: int) -> nn.Sequential:
    """Optional stride-2 depthwise downsampling + BN, then the 1x1 projection to one head."""
    branch = nn.Sequential()
    if kv_stride > 1:
        branch.add_module("down_conv", conv2d(dim, dim, kernel, kv_stride, groups=dim))
        branch.add_module("norm", nn.BatchNorm2d(dim))
    branch.add_module("proj", conv2d(dim, out_dim, 1))
    return branch


class MultiQueryAttention(nn.Module):
    """Multi-query attention with optional K/V downsampling (timm ``MultiQueryAttention2d`` keys).

    Args:
        dim: input and output channels C.
        num_heads: query heads h.
        key_dim: d_k of every query head and of the single key head.
        value_dim: d_v of the single value head.
        kv_stride: 1, or 2 for the depthwise spatial reduction of K and V.
        kernel: depthwise kernel of the K/V reduction.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        key_dim: int,
        value_dim: int,
        kv_stride: int = 1,
        kernel: int = 3,
    ) -> None:
        super().__init__()
        self.num_heads, self.key_dim, self.value_dim = num_heads, key_dim, value_dim
        self.kv_stride = kv_stride
        self.query = nn.Sequential()
        self.query.add_module("proj", conv2d(dim, num_heads * key_dim, 1))
        self.key = _kv_branch(dim, key_dim, kv_stride, kernel)
        self.value = _kv_branch(dim, value_dim, kv_stride, kernel)
        self.output = nn.Sequential()
        self.output.add_module("proj", conv2d(num_heads * value_dim, dim, 1))
        self.init_weights()

    def init_weights(self) -> None:
        """xavier_uniform on all projections and K/V down-convs (timm does this for stability)."""
        _xavier_convs(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q = _tokens(self.query(x)).reshape(b, 1, -1, self.key_dim)  # [B, 1, N*h, d_k]
        k = _tokens(self.key(x)).unsqueeze(1)  # [B, 1, M, d_k]
        v = _tokens(self.value(x)).unsqueeze(1)  # [B, 1, M, d_v]
        o = F.scaled_dot_product_attention(q, k, v)  # [B, 1, N*h, d_v]
        o = _grid(o.reshape(b, h * w, self.num_heads * self.value_dim), h, w)
        if not x.is_contiguous(memory_format=torch.channels_last):
            o = o.contiguous()
        return self.output(o)


class MultiHeadAttention(nn.Module):
    """Standard multi-head self-attention with per-head K and V (for the MQA comparison)."""

    def __init__(self, dim: int, num_heads: int, head_dim: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        inner = num_heads * head_dim
        for name in ("query", "key", "value"):
            branch = nn.Sequential()
            branch.add_module("proj", conv2d(dim, inner, 1))
            setattr(self, name, branch)
        self.output = nn.Sequential()
        self.output.add_module("proj", conv2d(inner, dim, 1))
        self.init_weights()

    def init_weights(self) -> None:
        _xavier_convs(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:  # [B, h*d, H, W] -> [B, h, N, d]
            return _tokens(t).reshape(b, h * w, self.num_heads, self.head_dim).transpose(1, 2)

        o = F.scaled_dot_product_attention(
            heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        )
        o = _grid(o.transpose(1, 2).reshape(b, h * w, -1), h, w)
        if not x.is_contiguous(memory_format=torch.channels_last):
            o = o.contiguous()
        return self.output(o)


class AttentionBlock(nn.Module):
    """Pre-BN attention block with layer scale and residual (timm ``MobileAttention`` keys).

    ``shortcut + DropPath(LayerScale(Attention(BN(x))))``; no FFN, no activation.
    """

    def __init__(
        self,
        attn: nn.Module,
        dim: int,
        layer_scale: float | None = None,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(dim)
        self.attn = attn
        self.layer_scale = LayerScale2d(dim, layer_scale) if layer_scale else nn.Identity()
        self.drop_path = drop_path(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.layer_scale(self.attn(self.norm(x))))
