"""``MobileNetV4``: the one builder that walks a ``ModelSpec`` (students/specs.py).

Layout and names follow timm's ``timm/models/mobilenetv3.py``: ``conv_stem``/``bn1`` stem,
``blocks.<stage>.<i>``, then global pool -> ``conv_head`` 960->1280 -> ``norm_head`` -> act ->
dropout -> ``classifier``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from students.attention import AttentionBlock, MultiHeadAttention, MultiQueryAttention
from students.blocks import UIB, ConvBnAct, FusedIB
from students.layers import conv2d, init_weights_goog, make_act
from students.specs import ConvBnActRow, FusedIBRow, ModelSpec, MQARow, Row, UIBRow

AttentionKind = Literal["mqa", "mhsa", "none"]


def build_block(
    row: Row,
    in_chs: int,
    spec: ModelSpec,
    drop_path_rate: float = 0.0,
    attention: AttentionKind = "mqa",
) -> nn.Module:
    """The module of one spec row taking ``in_chs`` channels (``spec`` gives act, layer scale)."""
    if isinstance(row, ConvBnActRow):
        return ConvBnAct(in_chs, row.out, row.kernel, row.stride, spec.act)
    if isinstance(row, FusedIBRow):
        return FusedIB(in_chs, row.out, row.expand, row.stride, spec.act, row.kernel)
    if isinstance(row, UIBRow):
        return UIB(
            in_chs,
            row.out,
            row.k_start,
            row.k_mid,
            row.expand,
            row.stride,
            spec.act,
            spec.layer_scale,
            drop_path_rate,
        )
    if isinstance(row, MQARow):
        if attention == "mhsa":
            attn: nn.Module = MultiHeadAttention(in_chs, row.heads, row.dim)
        else:
            attn = MultiQueryAttention(
                in_chs, row.heads, row.dim, row.dim, row.kv_stride, row.kernel
            )
        return AttentionBlock(attn, in_chs, spec.layer_scale, drop_path_rate)
    raise TypeError(f"unknown spec row {row!r} in {spec.name}")


def row_out(row: Row, in_chs: int) -> int:
    """Output channels of a row taking ``in_chs`` (attention keeps its input's)."""
    return in_chs if isinstance(row, MQARow) else row.out


class MobileNetV4(nn.Module):
    """A MobileNetV4 classifier built from a spec table.

    Args:
        spec: the model's table (students/specs.py).
        num_classes: classifier outputs; 0 gives an Identity classifier (features only).
        drop_rate: dropout before the classifier (paper Tab. 10: 0.3 Conv-S, 0.2 others).
        drop_path_rate: peak stochastic depth; block j of N gets ``rate * j / N`` (timm's schedule,
            ``_efficientnet_builder.py``); blocks without a residual ignore it.
        attention: ``"mqa"`` (the paper's), ``"mhsa"`` (standard attention in the same places) or
            ``"none"`` (attention blocks removed); only the hybrids have attention blocks.
        in_chans: input channels.
        channels_last: keep weights and activations in channels_last memory, the faster layout on
            CPU and GPU; inputs are converted on entry.
    """

    def __init__(
        self,
        spec: ModelSpec,
        num_classes: int = 1000,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        attention: AttentionKind = "mqa",
        in_chans: int = 3,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        if attention not in ("mqa", "mhsa", "none"):
            raise ValueError(f"attention must be 'mqa', 'mhsa' or 'none', got {attention!r}")
        self.spec = spec
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.num_features = spec.num_features
        self.head_hidden_size = spec.head_hidden_size
        self.default_resolution = spec.resolution
        self.channels_last = channels_last

        self.conv_stem = conv2d(in_chans, spec.stem, 3, 2)
        self.bn1 = nn.BatchNorm2d(spec.stem)
        self.act1 = make_act(spec.act)

        stages_rows = [
            tuple(r for r in stage if attention != "none" or not isinstance(r, MQARow))
            for stage in spec.stages
        ]
        total = sum(len(s) for s in stages_rows)
        stages, in_chs, j, stride = [], spec.stem, 0, 2
        self.feature_info = [dict(stride=2, channels=spec.stem, module="bn1")]
        for i, rows in enumerate(stages_rows):
            blocks = []
            for row in rows:
                blocks.append(build_block(row, in_chs, spec, drop_path_rate * j / total, attention))
                in_chs = row_out(row, in_chs)
                stride *= getattr(row, "stride", 1)
                j += 1
            stages.append(nn.Sequential(*blocks))
            if i != len(stages_rows) - 2:  # the last UIB stage shares stride 32 with the 960 conv
                self.feature_info.append(dict(stride=stride, channels=in_chs, module=f"blocks.{i}"))
        self.blocks = nn.Sequential(*stages)

        self.conv_head = nn.Conv2d(spec.num_features, spec.head_hidden_size, 1, bias=False)
        self.norm_head = nn.BatchNorm2d(spec.head_hidden_size)
        self.act2 = make_act(spec.act)
        self.classifier = (
            nn.Linear(spec.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()
        )
        init_weights_goog(self)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"{self.spec.name} expects an image batch of shape [B, {self.in_chans}, H, W], "
                f"got {tuple(x.shape)}"
            )
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.act1(self.bn1(self.conv_stem(self._check_input(x))))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> [B, 960, H/32, W/32], the spatial features (``num_features``)."""
        return self.blocks(self.forward_stem(x))

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps at strides 2, 4, 8, 16 and 32 (see ``feature_info``), for feature KD."""
        x = self.forward_stem(x)
        feats = [x]
        last_uib_stage = len(self.blocks) - 2
        for i, stage in enumerate(self.blocks):
            x = stage(x)
            if i != last_uib_stage:
                feats.append(x)
        return feats

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """[B, 960, h, w] -> logits [B, classes], or the pooled 1280-d pre-logits (no dropout)."""
        x = x.mean((2, 3), keepdim=True)
        x = self.act2(self.norm_head(self.conv_head(x))).flatten(1)
        return x if pre_logits else self.classify(x)

    def classify(self, pre_logits: torch.Tensor) -> torch.Tensor:
        """Pre-logits [B, 1280] -> logits: dropout, then the classifier."""
        x = pre_logits
        if self.drop_rate > 0.0:
            x = F.dropout(x, self.drop_rate, self.training)
        return self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier (e.g. ImageNet weights fine-tuned to another label set)."""
        self.num_classes = num_classes
        self.classifier = (
            nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()
        )
        if num_classes > 0:
            init_weights_goog(self.classifier)
