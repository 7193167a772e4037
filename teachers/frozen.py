"""``FrozenTeacher``: a teacher (or an ensemble) that cannot train by accident.

Frozen means: every parameter has ``requires_grad=False``; the module stays in eval mode even when
a parent calls ``.train()``, which recurses into every child; forward runs under
``torch.no_grad()`` (not ``inference_mode``: the KD loss saves teacher outputs for backward,
which inference tensors cannot be). It takes RGB images in [0, 1] at any size and applies each
member's own preprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from teachers.preprocess import Preprocessing, to_model_input


@dataclass
class TeacherInfo:
    """What a teacher is: its spec(s), class count and names, and metrics where measured."""

    spec: str | list[str]
    num_classes: int
    classes: list[str] | None = None
    metrics: dict | None = None


class FrozenTeacher(nn.Module):
    """One or more frozen classifiers; an ensemble averages its members' probabilities.

    Args:
        members: the networks (their parameters get frozen here).
        preprocessing: one ``Preprocessing`` per member.
        info: spec, class count, class names.
        channels_last: run members and inputs in channels_last memory.
        autocast_dtype: e.g. ``torch.bfloat16`` to run the forward under autocast (GPU).
    """

    def __init__(
        self,
        members: list[nn.Module],
        preprocessing: list[Preprocessing],
        info: TeacherInfo,
        channels_last: bool = False,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if len(members) != len(preprocessing) or not members:
            raise ValueError("a teacher needs one preprocessing per member and at least one member")
        self.members = nn.ModuleList(members)
        self.member_preprocessing = list(preprocessing)
        self.info = info
        self.channels_last = channels_last
        self.autocast_dtype = autocast_dtype
        self.requires_grad_(False)
        if channels_last:
            self.to(memory_format=torch.channels_last)
        super().train(False)

    @property
    def preprocessing(self) -> Preprocessing:
        """The (first) member's input contract."""
        return self.member_preprocessing[0]

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def train(self, mode: bool = True) -> FrozenTeacher:
        """Always eval: BatchNorm statistics and dropout of a teacher never change."""
        return super().train(False)

    def requires_grad_(self, requires_grad: bool = True) -> FrozenTeacher:
        return super().requires_grad_(False)

    def _member_input(self, prep: Preprocessing, images: torch.Tensor) -> torch.Tensor:
        x = to_model_input(images.to(self.device, non_blocking=True), prep)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _autocast(self) -> torch.autocast:
        enabled = self.autocast_dtype is not None
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=enabled)

    def _member_logits(self, member: nn.Module, prep: Preprocessing, images: torch.Tensor):
        x = self._member_input(prep, images)
        with self._autocast():
            return member(x).float()

    @torch.no_grad()
    def probs(self, images: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """Mean over members of softmax(logits / T), fp32 [B, classes]."""
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        out = None
        for member, prep in zip(self.members, self.member_preprocessing, strict=True):
            p = torch.softmax(self._member_logits(member, prep, images) / temperature, dim=-1)
            out = p if out is None else out + p
        return out / len(self.members)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits [B, classes]; for an ensemble, log of the mean probability (same softmax)."""
        if len(self.members) == 1:
            return self._member_logits(self.members[0], self.preprocessing, images)
        return self.probs(images).clamp_min(torch.finfo(torch.float32).tiny).log()

    def _single_feature_model(self) -> nn.Module:
        member = self.members[0]
        if len(self.members) != 1 or not hasattr(member, "forward_head"):
            raise ValueError(
                "feature distillation needs a single timm or mnv4 teacher (forward_features/"
                f"forward_head); {self.info.spec!r} is not one"
            )
        return member

    @torch.no_grad()
    def probs_and_pre_logits(
        self, images: torch.Tensor, temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """softmax(logits / T) [B, classes] and the pooled pre-logit features [B, D], fp32, from
        one backbone forward (feature distillation needs both on every step)."""
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        member = self._single_feature_model()
        x = self._member_input(self.preprocessing, images)
        with self._autocast():
            features = member.forward_features(x)
            pre = member.forward_head(features, pre_logits=True).float()
            logits = member.forward_head(features).float()
        return torch.softmax(logits / temperature, dim=-1), pre

    def pre_logits_dim(self) -> int:
        """D of the pre-logit features (measured on one blank image: right for any model)."""
        size = self.preprocessing.input_size
        _, pre = self.probs_and_pre_logits(torch.zeros(1, 3, size, size))
        return int(pre.shape[-1])

    def extra_repr(self) -> str:
        return (
            f"spec={self.info.spec!r}, num_classes={self.num_classes}, members={len(self.members)}"
        )
