"""Schemas of ``python -m distill`` (conf/train.yaml and its groups).

Each section that reaches code is a typed field of ``TrainConfig``, registered in Hydra's
ConfigStore as ``train_schema`` and named first in conf/train.yaml's defaults list, so every group
file and preset merges into a typed section and a misspelt key, on the command line or in a preset,
fails at compose time naming the key and the file. The YAML holds the values (the one place for defaults: ``MISSING``
here means "set in the YAML"); a field the YAML never sets has its default here. The fields of
``LossConfig``, ``OptimizerConfig``, ``ScheduleConfig``, ``ModelConfig`` and ``EmaConfig`` are
``DistillModule``'s keyword arguments; ``DataConfig``'s are ``DistillDataModule``'s;
``TrainerConfig``'s are ``lightning.Trainer``'s.

A run converts the composed config once, ``OmegaConf.to_object`` (``distill.value_checks``), and
passes the typed sections on. Each section checks its own values in ``__post_init__`` (which the
conversion runs; ``MISSING`` there is the schema itself being built): a bad value fails before any
work with a message naming the key.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal, TypeVar, get_args

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from data.config import (
    BuildConfig,
    DatasetKeys,
    OnlineConfig,
    PathsConfig,
    RemoteConfig,
    register_build_configs,
)
from data.datamodule import Decode

# offline: stored teacher labels | online: teacher in the loop | hybrid: data.labels_from |
# labels: the from-labels baseline. OmegaConf 2.3 refuses ``Literal`` annotations, so the fields
# below are ``str`` and ``__post_init__`` checks them against these types.
Mode = Literal["offline", "online", "hybrid", "labels"]
MODES = get_args(Mode)
LIVE_TEACHER_MODES = ("online", "hybrid")  # the teacher runs in the training step


def is_unset(value: Any) -> bool:
    """``MISSING`` (the schema's own instance, before the YAML fills it)."""
    return isinstance(value, str) and value == MISSING


def is_positive_int(value: Any) -> bool:
    """An ``int`` above 0 (``bool`` is not one)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _require(key: str, value: Any, ok: bool, expected: str) -> None:
    """``ValueError`` naming ``key`` unless ``ok`` (or the value is not set yet)."""
    if not ok and not is_unset(value):
        raise ValueError(f"{key} must be {expected}, got {value!r}")


def _choice(key: str, value: Any, allowed: Any) -> None:
    """``value`` one of the ``Literal`` type ``allowed``."""
    choices = get_args(allowed)
    _require(key, value, value in choices, ", ".join(choices[:-1]) + " or " + choices[-1])


def _weights(key: str, sets: Any) -> None:
    """Set weights: numbers >= 0 (0 drops a set)."""
    if is_unset(sets):
        return
    bad = {k: w for k, w in (sets or {}).items() if not (isinstance(w, int | float) and w >= 0)}
    if bad:
        raise ValueError(f"{key} weights must be numbers >= 0 (0 drops a set), got {bad}")


@dataclass
class LossConfig:
    """conf/loss/<kind>.yaml (``distill.losses``). The weights of one kind are set in its own
    file and null in the others (``distill.losses.kd_params`` checks them)."""

    kind: str = MISSING  # soft_ce | kl | dkd | dist
    temperature: float = MISSING
    kd_weight: float = MISSING
    gt_weight: float = MISSING
    label_smoothing: float = MISSING
    feature_weight: float = MISSING
    mixup_alpha: float = MISSING
    standardize: bool = MISSING  # logit standardisation (soft_ce, kl, dkd)
    dkd_alpha: float | None = None  # DKD: TCKD weight
    dkd_beta: float | None = None  # DKD: NCKD weight
    dist_beta: float | None = None  # DIST: inter-class weight
    dist_gamma: float | None = None  # DIST: intra-class weight

    def __post_init__(self) -> None:
        if is_unset(self.kind):
            return
        from distill.losses import KINDS, kd_params

        _require(
            "loss.kind", self.kind, self.kind in KINDS, f"one of {', '.join(KINDS)} (conf/loss/)"
        )
        kd_params(self)  # the kind and its weights, checked as the module will


@dataclass
class OptimizerConfig:
    lr: float = MISSING
    weight_decay: float = MISSING
    betas: list[float] = MISSING
    eps: float = MISSING

    def __post_init__(self) -> None:
        lr = self.lr
        _require("optimizer.lr", lr, isinstance(lr, int | float) and lr > 0, "a positive number")


@dataclass
class ScheduleConfig:
    warmup_fraction: float = MISSING
    warmup_steps: int | None = MISSING
    min_lr_ratio: float = MISSING


@dataclass
class StudentConfig:
    name: str = MISSING
    drop_rate: float | None = MISSING
    drop_path_rate: float = MISSING
    spec_file: str | None = (
        None  # student=searched: a spec file (students.spec_file, python -m nas)
    )


@dataclass
class ModelConfig:
    """How the student is built and run; ``drop_rate``/``drop_path_rate`` null: the student's."""

    channels_last: bool = MISSING
    compile: bool | None = MISSING  # null: on when training on CUDA (distill/compiling.py)
    compile_mode: str | None = None  # torch.compile mode; null: its default
    drop_rate: float | None = MISSING
    drop_path_rate: float | None = MISSING


@dataclass
class EmaConfig:
    decay: float = MISSING  # 0 turns the student-only EMA off
    warmup: bool = MISSING

    def __post_init__(self) -> None:
        d = self.decay
        ok = isinstance(d, int | float) and 0 <= d < 1
        _require("ema.decay", d, ok, "in [0, 1) (0 turns the EMA off)")


@dataclass
class DataConfig:
    root: str = MISSING
    train_sets: dict[str, float] = MISSING
    val_set: str = MISSING
    batch_size: int = MISSING
    num_workers: int = MISSING
    samples_per_epoch: int | None = MISSING
    flip: bool = MISSING
    build_if_missing: bool = MISSING
    shuffle_buffer: int = MISSING
    val_batch_size: int | None = MISSING
    recipe_check: bool = MISSING
    decode: str = MISSING  # Decode (data/datamodule.py): auto | cpu | gpu
    cache_dir: str | None = MISSING  # node-local copies of remote shards (data/shard_cache.py)
    cache_bytes: int = MISSING  # the cache's limit; least recently used shards are evicted
    labels_from: dict[str, str] = MISSING  # mode=hybrid: set -> stored | live (data/live.py)
    online: OnlineConfig = field(default_factory=OnlineConfig)

    def __post_init__(self) -> None:
        _require(
            "data.batch_size",
            self.batch_size,
            is_positive_int(self.batch_size),
            "a positive integer",
        )
        w = self.num_workers
        ok = isinstance(w, int) and not isinstance(w, bool) and w >= 0
        _require("data.num_workers", w, ok, "an integer >= 0")
        n = self.samples_per_epoch
        _require(
            "data.samples_per_epoch",
            n,
            n is None or is_positive_int(n),
            "null or a positive integer",
        )
        _choice("data.decode", self.decode, Decode)
        _weights("data.train_sets", self.train_sets)


@dataclass
class CheckpointConfig:
    monitor: str = MISSING


@dataclass
class BaselineConfig:
    enabled: bool = MISSING
    train_sets: dict[str, float] = MISSING
    label_smoothing: float = MISSING

    def __post_init__(self) -> None:
        _weights("baseline.train_sets", self.train_sets)


@dataclass
class ExportConfig:
    enabled: bool = MISSING
    onnx: bool = MISSING
    resolution: int | None = MISSING
    runtimes: list[str] = MISSING  # mobile runtimes at the end of a run (distill.export)
    int8: bool = MISSING  # also int8 (post-training static quantization) for each runtime


@dataclass
class ReportConfig:
    """``report.html`` at the end of every run (``distill.report``)."""

    enabled: bool = MISSING
    max_samples: int | None = MISSING  # validation images the report uses; null: all


@dataclass
class TrainerConfig:
    """conf/trainer/*.yaml: ``lightning.Trainer``'s keyword arguments (a ``strategy`` with a
    ``_target_`` is instantiated). Training length is counted in optimizer steps."""

    accelerator: str = MISSING
    devices: Any = MISSING  # a count, -1 (all), "auto" or a list of indices
    num_nodes: int = MISSING
    strategy: Any = (
        MISSING  # a name, or a strategy's ``_target_`` and arguments (conf/trainer/ddp.yaml)
    )
    precision: str = MISSING
    max_epochs: int = MISSING
    max_steps: int = MISSING
    check_val_every_n_epoch: int | None = MISSING
    gradient_clip_val: float | None = MISSING
    gradient_clip_algorithm: str | None = MISSING
    accumulate_grad_batches: int = MISSING
    log_every_n_steps: int = MISSING
    num_sanity_val_steps: int = MISSING
    enable_progress_bar: bool = MISSING
    deterministic: bool = MISSING
    sync_batchnorm: bool = MISSING
    limit_val_batches: Any = MISSING  # a count or a fraction; null: all

    def __post_init__(self) -> None:
        steps, epochs = self.max_steps, self.max_epochs
        ok = is_positive_int(steps) or steps == -1
        _require(
            "trainer.max_steps", steps, ok, "a positive integer (or -1 with trainer.max_epochs)"
        )
        if steps == -1 and not is_unset(epochs) and not is_positive_int(epochs):
            raise ValueError(
                "trainer.max_steps=-1 needs trainer.max_epochs set to a positive integer"
            )


@dataclass
class WandbConfig:
    """conf/logger/wandb.yaml (``distill.wandb``)."""

    enabled: bool = MISSING
    project: str = MISSING
    entity: str | None = MISSING
    name: str | None = MISSING  # null: <student>-<mode>
    tags: list[str] = MISSING
    offline: bool = MISSING
    log_model: bool = MISSING  # only honoured online
    id: str | None = MISSING  # set to resume a run
    init_timeout: float = MISSING


@dataclass
class LoggerConfig:
    """conf/logger/*.yaml: CSV logs are always written; ``wandb`` adds Weights & Biases."""

    wandb: WandbConfig | None = None


@dataclass
class TrainConfig(DatasetKeys):
    """conf/train.yaml."""

    student: StudentConfig = MISSING
    mode: str = MISSING  # Mode: offline | online | hybrid | labels
    seed: int = MISSING
    matmul_precision: str = MISSING
    ckpt_path: str | None = MISSING
    run_name: str | None = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    build: BuildConfig = field(default_factory=BuildConfig)
    remote: RemoteConfig = field(default_factory=RemoteConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    nas: Any = None  # python -m nas's own section (conf/search.yaml; checked by nas/config.py)

    def __post_init__(self) -> None:
        super().__post_init__()
        _choice("mode", self.mode, Mode)
        if self.mode == "hybrid":
            from data.datamodule import live_sets

            live_sets(self.data.train_sets, self.data.labels_from)  # at least one live set


def register_configs(cs: ConfigStore | None = None) -> None:
    """Register the root schemas the YAML names (idempotent; done on import).

    Only roots: a group file (conf/loss/kl.yaml) merges into its typed section of the root, so
    it is checked there and the error names it; a schema stored in a group would show up among
    that group's options (``--help``, "Available options")."""
    cs = cs or ConfigStore.instance()
    register_build_configs(cs)
    cs.store(name="train_schema", node=TrainConfig)


register_configs()

T = TypeVar("T")


def section(cls: type[T], value: T | Mapping) -> T:
    """``value`` as a ``cls`` instance: every field given, no unknown key, no hidden default."""
    if isinstance(value, cls):
        return value
    data = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    missing = sorted(n for n in names if n not in data or data[n] == MISSING)
    if unknown or missing:
        raise TypeError(f"{cls.__name__}: unknown keys {unknown}, missing keys {missing}")
    return cls(**data)


def as_dict(value) -> dict:
    """A section as a plain dict (what checkpoints store: no classes to unpickle)."""
    return asdict(value)


def student_model(student: StudentConfig, model: ModelConfig) -> ModelConfig:
    """``model`` with its null ``drop_rate``/``drop_path_rate`` taken from the student's file."""
    return replace(
        model,
        drop_rate=student.drop_rate if model.drop_rate is None else model.drop_rate,
        drop_path_rate=student.drop_path_rate
        if model.drop_path_rate is None
        else model.drop_path_rate,
    )


def module_sections(c: TrainConfig) -> dict[str, Any]:
    """``DistillModule``'s section keyword arguments from a train config."""
    model = student_model(c.student, c.model)
    return {
        "loss": c.loss,
        "optimizer": c.optimizer,
        "schedule": c.schedule,
        "model": model,
        "ema": c.ema,
    }


def train_defaults(overrides: list[str] | None = None) -> TrainConfig:
    """conf/train.yaml composed with ``+student=mnv4_conv_s`` and converted as a run converts
    it (tests, benches)."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(
            "train", overrides=["+student=mnv4_conv_s", "paths.output_dir=.", *(overrides or [])]
        )
    return OmegaConf.to_object(cfg)


APPENDED_GROUPS = ("student", "experiment", "debug")


def normalize_overrides(args: list[str]) -> list[str]:
    """``student=X`` (and ``experiment=``, ``debug=``) as ``+student=X``.

    These groups are not in train.yaml's defaults list (a placeholder there would make Hydra
    refuse ``+student=X`` as a second value), so ``+`` appends them; the plain spelling, which
    Hydra would refuse as "no match in the defaults list", means the same and is rewritten here.
    """
    out = []
    for arg in args:
        key = arg.split("=", 1)[0]
        out.append(f"+{arg}" if "=" in arg and key in APPENDED_GROUPS else arg)
    return out


@functools.cache
def _cached_defaults() -> TrainConfig:
    return train_defaults()


def module_kwargs(**changes: Mapping) -> dict[str, Any]:
    """``DistillModule``'s sections as conf/ sets them (+student=mnv4_conv_s), each updated by
    ``changes[section]`` (tests and benches: ``module_kwargs(ema={"decay": 0.9})``)."""
    sections = module_sections(copy.deepcopy(_cached_defaults()))  # no caller shares a list
    return {k: replace(v, **changes.get(k, {})) for k, v in sections.items()}


def check_schema(cfg) -> None:
    """Raise ``ValueError`` naming a key that ``TrainConfig`` lacks: ``+model.foo=1`` adds one
    (Hydra's ``+`` opens the struct), which would otherwise fail only when the module is built."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        plain = OmegaConf.to_container(cfg, resolve=False)  # drops the schema's own types
        plain.pop("hydra", None)  # compose(return_hydra_config=True)
        OmegaConf.merge(OmegaConf.structured(TrainConfig), plain)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None)
        raise ValueError(f"{key or 'config'}: {str(e).splitlines()[0]}") from None
