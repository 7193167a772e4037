"""The supervised teacher recipe's hyper-parameters, as one typed record.

Light on purpose (no Lightning): ``data/config.py`` types ``teacher.recipe`` with it, so the
Hydra apps read every value from conf/teacher/*.yaml (the one place for their defaults) and
``teachers/train.py`` trains with it. ``python -m teachers.train`` has its own defaults,
``CLI_DEFAULTS`` in teachers/train.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING


@dataclass
class TeacherRecipe:
    """What ``train_teacher`` trains with; every field is set by its caller (no defaults here)."""

    image_size: int = MISSING
    epochs: int = MISSING
    batch_size: int = MISSING
    lr: float = MISSING
    weight_decay: float = MISSING
    warmup_epochs: float = MISSING
    label_smoothing: float = MISSING
    crop_scale: tuple[float, float] = MISSING  # Inception crop area fraction (lo, hi)
    randaugment_ops: int = MISSING  # 0 turns RandAugment off
    randaugment_magnitude: int = MISSING
    mixup_alpha: float = MISSING  # 0 turns MixUp off
    cutmix_alpha: float = MISSING  # 0 turns CutMix off
    mix_prob: float = MISSING
    hflip: bool = MISSING
    crop_pct: float = MISSING  # evaluation view: resize to size / crop_pct, centre crop
    seed: int = MISSING
    num_workers: int = MISSING
    accelerator: str = MISSING  # lightning.Trainer's: auto | cpu | gpu | ...
    devices: int = MISSING
    precision: str = MISSING  # lightning.Trainer's, e.g. 32-true

    def __post_init__(self) -> None:
        missing = [k for k, v in vars(self).items() if v is MISSING or v == MISSING]
        if missing:
            raise TypeError(f"TeacherRecipe: missing values {missing}")
        self.crop_scale = tuple(float(s) for s in self.crop_scale)
        lo, hi = self.crop_scale if len(self.crop_scale) == 2 else (-1.0, -1.0)
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"teacher.recipe.crop_scale must be [lo, hi] in (0, 1], got {lo, hi}")
        if not 0 <= self.mix_prob <= 1:
            raise ValueError(f"teacher.recipe.mix_prob must be in [0, 1], got {self.mix_prob}")
