"""Schema of ``python -m nas``'s own section (conf/search.yaml ``nas``); the rest of its config
is the distillation config (``distill.config.TrainConfig``: data, dataset, loss, optimizer, paths,
trainer, logger, the retrain's student), whose schema keeps a ``nas`` slot for it.

``search_config`` is the one conversion of a search's composed config: the ``nas`` section
merged into ``NasConfig`` (a misspelt ``nas.*`` key, on the command line or in a preset, stops the
run naming the key), then the whole config as ``TrainConfig`` whose ``nas`` is that typed section.
The YAML files (conf/search.yaml, conf/nas/*.yaml) hold the values: ``MISSING`` here means "set in
the YAML"; a field the YAML never sets has its default here. Each section checks its own values in
``__post_init__`` (which the conversion runs; ``MISSING`` there is the schema itself being built).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from distill.config import TrainConfig, is_positive_int, is_unset

# OmegaConf 2.3 refuses ``Literal`` annotations: the fields are ``str`` and ``__post_init__``
# checks them against these types.
StageKind = Literal["conv_pair", "fused_ib", "uib"]
Stages = Literal["two", "one"]  # two: the paper's coarse then fine | one: both at once
Reward = Literal["abs", "mnas", "mnas_hard"]
Runtime = Literal["onnx", "executorch", "litert"]
Precision = Literal["fp32", "int8"]
ChoiceRule = Literal["in_band", "argmax"]  # nas/choice.py


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check(key: str, value: Any, ok: bool, expected: str) -> None:
    """``ValueError`` naming ``key`` unless ``ok`` (or the value is not set yet)."""
    if not ok and not is_unset(value):
        raise ValueError(f"{key}={value!r} is not valid: {expected} (see conf/search.yaml)")


def _choice(key: str, value: Any, allowed: Any) -> None:
    """``value`` one of the ``Literal`` type ``allowed``."""
    choices = get_args(allowed)
    _check(key, value, value in choices, "one of " + ", ".join(choices))


@dataclass
class SpaceStageConfig:
    """One stage of a space (``nas.space.StageSpace``)."""

    kind: str = MISSING  # StageKind: conv_pair | fused_ib | uib
    widths: list[int] = MISSING
    stride: int = 2
    expansions: list[float] = field(default_factory=lambda: [4.0])  # prefix stages
    depth: list[int] = field(default_factory=lambda: [1, 1])  # uib: [min, max]

    def __post_init__(self) -> None:
        _choice("nas.space.stages.kind", self.kind, StageKind)


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

    def __post_init__(self) -> None:
        _stage_checks("nas.coarse", self.steps, self.warmup_fraction)


@dataclass
class FineConfig:
    steps: int = MISSING
    warmup_fraction: float = MISSING
    expansions: list[float] = MISSING  # searched per block (the paper: [4])

    def __post_init__(self) -> None:
        _stage_checks("nas.fine", self.steps, self.warmup_fraction)


def _stage_checks(prefix: str, steps: Any, warmup_fraction: Any) -> None:
    _check(f"{prefix}.steps", steps, is_positive_int(steps), "a positive integer")
    ok = _number(warmup_fraction) and 0 <= warmup_fraction < 1
    _check(f"{prefix}.warmup_fraction", warmup_fraction, ok, "in [0, 1)")


@dataclass
class ControllerConfig:
    lr: float = MISSING  # at batch 256; scaled with the global batch (TuNAS)
    ramp: float = MISSING
    baseline_momentum: float = MISSING
    reward: str = MISSING  # Reward: abs | mnas | mnas_hard
    beta: float = MISSING

    def __post_init__(self) -> None:
        _check("nas.controller.lr", self.lr, _number(self.lr) and self.lr > 0, "a positive number")
        m = self.baseline_momentum
        _check("nas.controller.baseline_momentum", m, _number(m) and 0 <= m < 1, "in [0, 1)")
        _choice("nas.controller.reward", self.reward, Reward)


@dataclass
class TargetConfig:
    """T0: ``ms`` when set, else ``scale`` x the latency model's prediction of ``student``
    (timed beside the blocks; nas/app.py ``target_ms``)."""

    student: str | None = MISSING
    scale: float = MISSING
    ms: float | None = MISSING

    def __post_init__(self) -> None:
        s, ms = self.scale, self.ms
        _check("nas.target.scale", s, _number(s) and s > 0, "a positive number")
        _check("nas.target.ms", ms, ms is None or (_number(ms) and ms > 0), "null or > 0")
        if ms is not None or is_unset(self.student):
            return
        import students

        if self.student not in students.list_models():
            raise ValueError(
                f"nas.target.student={self.student!r} unknown: one of {students.list_models()}, "
                "or set nas.target.ms"
            )


@dataclass
class LatencyConfig:
    runtime: str = MISSING  # Runtime: onnx | executorch | litert
    precision: str = MISSING  # Precision: fp32 | int8
    threads: int = MISSING
    rounds: int = MISSING
    quantile: float = MISSING
    calibration_networks: int = MISSING
    cache_dir: str = MISSING
    remeasure: bool = MISSING  # every block the search uses, anew, beside the target

    def __post_init__(self) -> None:
        _choice("nas.latency.runtime", self.runtime, Runtime)
        _choice("nas.latency.precision", self.precision, Precision)
        for key in ("threads", "rounds", "calibration_networks"):
            value = getattr(self, key)
            _check(f"nas.latency.{key}", value, is_positive_int(value), "a positive integer")
        q = self.quantile
        _check("nas.latency.quantile", q, _number(q) and 0 <= q <= 1, "in [0, 1]")


@dataclass
class ChoiceConfig:
    """How a stage's controller becomes one network (nas/choice.py): ``in_band``, the most
    probable of ``samples`` draws within ``band`` of T0, or TuNAS's per-decision ``argmax``."""

    rule: str = MISSING  # ChoiceRule: in_band | argmax
    band: float = MISSING
    samples: int = MISSING

    def __post_init__(self) -> None:
        _choice("nas.choice.rule", self.rule, ChoiceRule)
        b = self.band
        _check("nas.choice.band", b, _number(b) and 0 <= b < 1, "in [0, 1)")
        n = self.samples
        _check("nas.choice.samples", n, is_positive_int(n), "a positive integer")


@dataclass
class NasConfig:
    space: SpaceConfig = MISSING  # a preset chooses it (conf/nas/space/)
    resolution: int | None = MISSING  # null: the data's image_size
    stages: str = MISSING  # Stages: two (the paper's coarse + fine) | one
    coarse: CoarseConfig = field(default_factory=CoarseConfig)
    fine: FineConfig = field(default_factory=FineConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    choice: ChoiceConfig = field(default_factory=ChoiceConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    reward_batch: int = MISSING
    heldout_fraction: float = MISSING
    checkpoint_every: int = MISSING
    resume: bool = MISSING
    retrain: bool = MISSING
    retrain_overrides: list[str] = MISSING

    def __post_init__(self) -> None:
        r = self.resolution
        _check("nas.resolution", r, r is None or is_positive_int(r), "null or a positive integer")
        _choice("nas.stages", self.stages, Stages)
        _check("nas.reward_batch", self.reward_batch, is_positive_int(self.reward_batch), "> 0")
        h = self.heldout_fraction
        _check("nas.heldout_fraction", h, _number(h) and 0 < h < 1, "in (0, 1)")
        every = self.checkpoint_every
        _check("nas.checkpoint_every", every, is_positive_int(every), "a positive integer")


def _key_error(e: OmegaConfBaseException) -> ValueError:
    """OmegaConf's error as one line naming the ``nas`` key."""
    key = getattr(e, "full_key", None)
    return ValueError(f"nas.{key or ''}: {str(e).splitlines()[0]}")


def _typed_nas(section: Any) -> DictConfig:
    """``section`` merged into ``NasConfig`` (still a config node: interpolations unresolved);
    ``ValueError`` naming a key it adds or mistypes."""
    try:
        return OmegaConf.merge(OmegaConf.structured(NasConfig), section)
    except OmegaConfBaseException as e:
        raise _key_error(e) from None


def _all_set(nas: DictConfig) -> None:
    """``ValueError`` naming a ``nas`` key no file sets (resolved where it lives: in the run's
    config, whose ``paths`` the latency cache's interpolation reads)."""
    missing = sorted(OmegaConf.missing_keys(nas))
    if missing:
        key = missing[0].removeprefix("nas.")  # a node of the run's config: its full key
        raise ValueError(f"nas.{key} must be set (a preset sets it: +nas=digits)")


def nas_section(section: Mapping) -> NasConfig:
    """A resolved ``nas`` section as plain data (``nas.json``'s, a preset's file: benchmarks,
    tests) as ``NasConfig``, checked and completed with the schema's defaults; ``ValueError``
    naming a bad key or value."""
    nas = _typed_nas(section)
    _all_set(nas)
    try:
        return OmegaConf.to_object(nas)
    except OmegaConfBaseException as e:
        raise _key_error(e) from None


def search_config(cfg: DictConfig) -> TrainConfig:
    """The composed config as ``TrainConfig`` whose ``nas`` is a ``NasConfig`` (the one
    conversion of a search); ``ValueError`` naming a bad ``nas`` key or a mode other than
    offline, the usage errors of ``distill.value_checks.checked_config`` for the rest."""
    from distill.value_checks import checked_config

    root = OmegaConf.merge(cfg, {"nas": _typed_nas(cfg.nas)})
    _all_set(root.nas)
    if root.mode != "offline":  # before checked_config asks for a live teacher
        raise ValueError(
            f"mode={root.mode!r} is not valid (see conf/search.yaml): the search trains on "
            "stored labels, mode=offline"
        )
    return checked_config(root)
