"""Schema of ``python -m nas``'s own section (conf/search.yaml ``nas``); the rest of its config
is the distillation config (``distill.config.TrainConfig``: data, dataset, loss, optimizer, paths,
trainer, logger, the retrain's student), whose schema keeps a ``nas`` slot for it.

``check_nas_config`` merges the section into ``NasConfig`` before any work, so a misspelt
``nas.*`` key, on the command line or in a preset, stops the run naming the key. The YAML files
(conf/search.yaml, conf/nas/*.yaml) hold the values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException


@dataclass
class SpaceStageConfig:
    """One stage of a space (``nas.space.StageSpace``)."""

    kind: str = MISSING  # conv_pair | fused_ib | uib
    widths: list[int] = MISSING
    stride: int = 2
    expansions: list[float] = field(default_factory=lambda: [4.0])  # prefix stages
    depth: list[int] = field(default_factory=lambda: [1, 1])  # uib: [min, max]


@dataclass
class SpaceConfig:
    """conf/nas/space/<name>.yaml (``nas.space.SearchSpace``; the resolution is ``nas.resolution``)."""

    name: str = MISSING
    stem_widths: list[int] = MISSING
    stages: list[SpaceStageConfig] = MISSING
    expansions: list[float] = MISSING
    kernels: list[int] = MISSING
    act: str = "relu"


@dataclass
class CoarseConfig:
    steps: int = MISSING
    warmup_fraction: float = MISSING
    expansion: float = MISSING  # every UIB block: IB with this expansion ...
    kernel: int = MISSING  # ... and this middle DW


@dataclass
class FineConfig:
    steps: int = MISSING
    warmup_fraction: float = MISSING
    expansions: list[float] = MISSING  # searched per block (the paper: [4])


@dataclass
class ControllerConfig:
    lr: float = MISSING  # at batch 256; scaled with the global batch (TuNAS)
    ramp: float = MISSING
    baseline_momentum: float = MISSING
    reward: str = MISSING  # abs | mnas | mnas_hard
    beta: float = MISSING


@dataclass
class TargetConfig:
    """T0: ``ms`` when set, else ``scale`` x the measured latency of ``student``."""

    student: str | None = MISSING
    scale: float = MISSING
    ms: float | None = MISSING


@dataclass
class LatencyConfig:
    runtime: str = MISSING  # onnx | executorch | litert
    precision: str = MISSING  # fp32 | int8
    threads: int = MISSING
    rounds: int = MISSING
    quantile: float = MISSING
    calibration_networks: int = MISSING
    cache_dir: str = MISSING


@dataclass
class NasConfig:
    space: SpaceConfig = field(default_factory=SpaceConfig)
    resolution: int | None = MISSING  # null: the data's image_size
    stages: str = MISSING  # two (the paper's coarse + fine) | one
    coarse: CoarseConfig = field(default_factory=CoarseConfig)
    fine: FineConfig = field(default_factory=FineConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    reward_batch: int = MISSING
    heldout_fraction: float = MISSING
    checkpoint_every: int = MISSING
    resume: bool = MISSING
    retrain: bool = MISSING
    retrain_overrides: list[str] = field(default_factory=list)


def nas_section(section: dict) -> dict:
    """The resolved ``nas`` section checked against ``NasConfig`` and completed with its
    defaults; ``ValueError`` naming a key it lacks or mistypes."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(NasConfig), section)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None)
        raise ValueError(f"nas.{key or ''}: {str(e).splitlines()[0]}") from None
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise ValueError(f"nas.{missing[0]} must be set (a preset sets it: +nas=digits)")
    return OmegaConf.to_container(merged)
