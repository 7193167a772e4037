"""Keeping the frozen teacher out of the student's module tree.

A registered teacher would be wrapped and broadcast by DDP, saved in every checkpoint and copied
into the EMA. ``TeacherHolder`` is not an ``nn.Module``, so assigning it to a LightningModule
registers nothing; the module moves it to its device when fit or validation starts.
"""

from __future__ import annotations

import torch

from teachers import FrozenTeacher


class TeacherHolder:
    """Holds a ``FrozenTeacher`` without registering it."""

    def __init__(self, teacher: FrozenTeacher | None) -> None:
        self.teacher = teacher

    def __bool__(self) -> bool:
        return self.teacher is not None

    def to(self, device: torch.device) -> FrozenTeacher | None:
        if self.teacher is not None and self.teacher.device != device:
            self.teacher.to(device)
        return self.teacher
