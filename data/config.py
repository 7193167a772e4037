"""Schemas of ``python -m data.build`` (conf/build.yaml) and of the sections it shares with
``python -m distill``: the root ``BuildAppConfig`` is registered in Hydra's ConfigStore and named
first in conf/build.yaml's defaults list, so a misspelt key, in a preset (the error names the file)
or on the command line, fails at compose time.

The YAML files hold the values (the one place for defaults); a field without a YAML value has
its default here. ``distill/config.py`` builds the training schema on these.

Sources and variants differ in shape by ``kind``, which a schema cannot hold in one dict, so the
schema keeps them as dicts and ``build_sections`` types them once at the entry point: one
dataclass per kind (``source_config``, ``variant_config``), whose ``__post_init__`` checks the
values. Everything below the entry point reads these typed sections.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from common.folders import SourceError
from teachers.recipe import TeacherRecipe

T = TypeVar("T")


class Store(StrEnum):
    """How a set's views are stored (``build.store``): every view a JPEG, or the source images
    once plus a small record per view (data/recipes.py)."""

    pixels = "pixels"
    recipe = "recipe"


class Autocast(StrEnum):
    """The dtype a teacher runs in under autocast (``teacher.autocast``; null: float32)."""

    bfloat16 = "bfloat16"
    float16 = "float16"


@dataclass
class PathsConfig:
    cache: str = MISSING
    shards: str = MISSING
    teachers: str = MISSING
    output_dir: str | None = None  # python -m distill: ${hydra:runtime.output_dir}


@dataclass
class BuildConfig:
    """How sets are built (data/builder.py ``SetBuilder``)."""

    shard_size: int = MISSING
    store: str = MISSING  # a Store; checked in __post_init__, so a run names it as a usage error
    batch_size: int = MISSING
    num_workers: int = MISSING
    top_k: int | None = MISSING
    temperature: float = MISSING
    progress: bool = MISSING
    wait_s: float = MISSING  # other ranks wait this long for rank 0's teacher scores

    def __post_init__(self) -> None:
        if self.store == MISSING:  # the schema's own instance, before the YAML sets it
            return
        if self.store not in list(Store):
            raise ValueError(
                f"build.store must be one of {[s.value for s in Store]}, got {self.store!r}"
            )
        self.store = Store(self.store)
        if self.shard_size < 1 or self.batch_size < 1:
            raise ValueError(
                f"build.shard_size and build.batch_size must be >= 1, got {self.shard_size} "
                f"and {self.batch_size}"
            )


@dataclass
class RemoteConfig:
    """How sets in object storage or over HTTP are fetched (data/remote.py ``Transport``)."""

    retry_s: float = MISSING  # give up on one file this long after its first failure
    retries: int = MISSING  # attempts per request and resumes per stream
    connect_timeout_s: float = MISSING
    read_timeout_s: float = MISSING  # a connection silent this long is stalled
    give_up_s: float = MISSING  # a server unreachable this long stops the run


@dataclass
class TeacherConfig:
    """``teachers.config.teacher_from_config``; ``recipe`` goes to teachers/train.py."""

    spec: str = MISSING
    checkpoint: str | None = MISSING
    pretrained: bool = MISSING
    train_if_missing: bool = MISSING
    channels_last: bool = MISSING
    autocast: Autocast | None = MISSING
    cache_path: str | None = None  # where a trained teacher is cached (train_if_missing)
    train_on: str | None = None  # source names (train_if_missing)
    validate_on: str | None = None
    recipe: TeacherRecipe | None = None  # train_if_missing: how it is trained


@dataclass
class DigitsConfig:
    """The embedded digits split (common/digits.py ``digits_split``); ``fractions`` is set by
    dataset=digits only (the other datasets name ``seed`` for the digits teacher's cache path)."""

    seed: int = MISSING
    fractions: dict[str, float] | None = None


@dataclass
class DatasetKeys:
    """Keys the dataset files (conf/dataset/*.yaml, ``@package _global_``) add at the root.

    Sources and variants differ in shape by ``kind`` (data/sources.py, data/variants.py)."""

    dataset_name: str = MISSING
    image_size: int = MISSING
    raw_size: int = MISSING
    digits: DigitsConfig | None = None
    # one shape per kind, which a schema cannot hold: typed per kind by ``source_config``
    sources: dict[str, Any] = field(default_factory=dict)
    variants: dict[str, Any] = field(default_factory=dict)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    # dataset=folder: its ``???`` must survive the merge (a missing value never overrides a
    # default), so the schema leaves it missing and the other dataset files set it to null
    data_root: str | None = MISSING
    folder_name: str | None = None  # dataset=folder
    imagenet_root: str | None = None  # dataset=imagenet
    extra_pool: str | None = None  # dataset=imagenet


@dataclass
class FolderSourceConfig:
    """A source read from a folder: ``root`` (+ ``subdir``); ``hint`` is the error when ``root``
    is unset (e.g. which environment variable sets it), instead of a path named "None"."""

    root: str | None
    subdir: str | None = None
    hint: str | None = None

    def path(self, kind: str) -> str:
        """``root``/``subdir``; raises ``SourceError`` (with the hint) when ``root`` is unset."""
        if self.root in (None, ""):
            raise SourceError(self.hint or f"source kind {kind!r} needs a root folder; none is set")
        return str(Path(self.root) / self.subdir) if self.subdir else self.root


@dataclass
class ImageFolderSourceConfig(FolderSourceConfig):
    """``kind: imagefolder``: one sub-folder per class (optionally listed in ``classes_file``)."""

    classes_file: str | None = None


@dataclass
class UnlabelledSourceConfig(FolderSourceConfig):
    """``kind: unlabelled``: every image under the folder, without labels (the extra pool)."""


@dataclass
class DigitsSourceConfig:
    """``kind: digits``: one split of the embedded digits (data/sources.py ``DigitsSource``)."""

    split: str
    size: int
    fractions: dict[str, float] | None
    seed: int


@dataclass
class ShardSourceConfig:
    """``kind: shards``: the images and classes of existing webdataset shards."""

    urls: list[str] | str
    classes: list[str] | None = None


SourceConfig = (
    ImageFolderSourceConfig | UnlabelledSourceConfig | DigitsSourceConfig | ShardSourceConfig
)
SOURCE_KINDS: dict[str, type] = {
    "imagefolder": ImageFolderSourceConfig,
    "unlabelled": UnlabelledSourceConfig,
    "digits": DigitsSourceConfig,
    "shards": ShardSourceConfig,
}


def source_config(name: str, value: Mapping) -> SourceConfig:
    """``sources.<name>`` as its kind's dataclass; a bad kind or argument names the key."""
    cfg = dict(value)
    kind = cfg.pop("kind", None)
    cfg.pop("name", None)
    if kind not in SOURCE_KINDS:
        raise SourceError(
            f"sources.{name}: source kind {kind!r} unknown; expected one of {sorted(SOURCE_KINDS)}"
        )
    try:
        return SOURCE_KINDS[kind](**cfg)
    except TypeError as e:
        raise SourceError(f"sources.{name}: bad arguments for source kind {kind!r}: {e}") from e


@dataclass(kw_only=True)
class VariantConfig:
    """What every variant kind has (conf/variant/*.yaml); the kinds below add their own keys.

    ``label`` and ``max_side`` are set by few files: a set is teacher-labelled unless it says
    ``label: false`` (raw images for online distillation), and sources are decoded with their
    longest side at most ``max_side`` (null: 4 x ``image_size``).
    """

    name: str
    source: str
    replicas: int
    seed: int
    jpeg_quality: int
    image_size: int
    label: bool = True
    max_side: int | None = None

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError(f"variant {self.name!r}: replicas must be >= 1, got {self.replicas}")

    @property
    def source_side(self) -> int:
        """The longest side a source image is decoded with (``max_side``)."""
        return self.max_side or 4 * self.image_size

    def record(self) -> dict:
        """The config as its file wrote it: what a set's identity hashes and its manifest keeps
        (``label`` and ``max_side`` only where set, so sets built before them keep their hash)."""
        out = {"kind": variant_kind(self), **asdict(self)}
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}  # as in JSON
        if self.label:
            del out["label"]
        if self.max_side is None:
            del out["max_side"]
        return out


@dataclass(kw_only=True)
class CropVariantConfig(VariantConfig):
    """Kinds that take an Inception crop and may be stored as recipes (build.store=recipe)."""

    raw_size: int  # recipe sets: source images stored with this short side
    crop_scale: tuple[float, float]

    def __post_init__(self) -> None:
        super().__post_init__()
        self.crop_scale = (float(self.crop_scale[0]), float(self.crop_scale[1]))
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(
                f"variant {self.name!r}: crop_scale must be [lo, hi] in (0, 1], got "
                f"{list(self.crop_scale)}"
            )


@dataclass(kw_only=True)
class PackedVariantConfig(CropVariantConfig):
    """Kinds whose recipe samples pack ``pack`` source images (their view records share it)."""

    pack: int

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pack < 1:
            raise ValueError(f"variant {self.name!r}: pack must be >= 1, got {self.pack}")


@dataclass
class RandAugmentConfig:
    num_ops: int
    magnitude: int


@dataclass(kw_only=True)
class RandAugVariantConfig(PackedVariantConfig):
    """``kind: randaug`` (D1): Inception crop + RandAugment."""

    randaugment: RandAugmentConfig

    def __post_init__(self) -> None:
        if isinstance(self.randaugment, Mapping):
            self.randaugment = RandAugmentConfig(**self.randaugment)
        super().__post_init__()


@dataclass(kw_only=True)
class ExtraVariantConfig(RandAugVariantConfig):
    """``kind: extra`` (D3): the pool's views the teacher scores above ``threshold``, at most
    ``per_class`` a class (null: balanced to the largest class), scored on a centre crop."""

    threshold: float
    per_class: int | None
    score_crop_pct: float


@dataclass(kw_only=True)
class MixupVariantConfig(CropVariantConfig):
    """``kind: mixup`` (D2): partners drawn among a ``group`` of images, Beta(alpha, alpha)."""

    alpha: float
    group: int

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.group < 2:
            raise ValueError(f"mixup variant {self.name!r}: group must be >= 2, got {self.group}")


MaskKind = Literal["rect", "stroke"]
InpaintMethod = Literal["telea", "ns"]


@dataclass(kw_only=True)
class InpaintVariantConfig(PackedVariantConfig):
    """``kind: inpaint``: random masks covering ``mask_area``, filled by OpenCV's ``method`` or
    by ``inpainter`` (a Hydra ``_target_`` node)."""

    mask_area: tuple[float, float]
    mask_kinds: tuple[MaskKind, ...]
    method: InpaintMethod
    radius: float
    inpainter: dict | None = None  # not recorded in recipe manifests (data/set_manifest.py)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.mask_area = (float(self.mask_area[0]), float(self.mask_area[1]))
        self.mask_kinds = tuple(self.mask_kinds)
        _check_choice(f"variant {self.name!r}: method", self.method, InpaintMethod)
        for kind in self.mask_kinds:
            _check_choice(f"variant {self.name!r}: mask_kinds", kind, MaskKind)


@dataclass(kw_only=True)
class PlainVariantConfig(VariantConfig):
    """``kind: plain``: resize to size / crop_pct and centre crop, one fixed view (always
    stored as pixels)."""

    crop_pct: float


VARIANT_KINDS: dict[str, type[VariantConfig]] = {
    "randaug": RandAugVariantConfig,
    "mixup": MixupVariantConfig,
    "inpaint": InpaintVariantConfig,
    "extra": ExtraVariantConfig,
    "plain": PlainVariantConfig,
}


def _check_choice(key: str, value: Any, choices: Any) -> None:
    if value not in get_args(choices):
        raise ValueError(f"{key} must be one of {list(get_args(choices))}, got {value!r}")


def variant_config(name: str, value: Mapping) -> VariantConfig:
    """``variants.<name>`` as its kind's dataclass (``name`` defaults to the key); a bad kind
    or argument names the key."""
    cfg = dict(value)
    kind = cfg.pop("kind", None)
    cfg["name"] = cfg.get("name") or name
    if kind not in VARIANT_KINDS:
        raise ValueError(
            f"variants.{name}: variant kind {kind!r} unknown; expected one of "
            f"{sorted(VARIANT_KINDS)}"
        )
    try:
        return VARIANT_KINDS[kind](**cfg)
    except TypeError as e:
        raise ValueError(f"variants.{name}: bad arguments for variant kind {kind!r}: {e}") from e


def variant_kind(cfg: VariantConfig) -> str:
    """The ``kind`` of a typed variant config."""
    return next(k for k, cls in VARIANT_KINDS.items() if type(cfg) is cls)


def typed(cls: type[T], value: Any, key: str) -> T:
    """``value`` (a mapping or config node) as a ``cls`` instance, checked by the schema and
    ``cls.__post_init__``; a bad or missing value raises ``ValueError`` naming ``key``'s field."""
    if isinstance(value, cls):
        return value
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), value))
    except OmegaConfBaseException as e:
        where = f"{key}.{e.full_key}" if getattr(e, "full_key", None) else key
        raise ValueError(f"{where}: {str(e).splitlines()[0]}") from None


@dataclass
class BuildSections:
    """What building sets reads of a build or train config, typed once at the entry point."""

    sources: dict[str, SourceConfig]
    variants: dict[str, VariantConfig]
    teacher: TeacherConfig
    build: BuildConfig
    train_sets: dict[str, float]  # data.train_sets: a set weighted 0 is not built by default


def build_sections(cfg: Any) -> BuildSections:
    """The ``BuildSections`` of a composed build or train config (a config node or its dict)."""
    c = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg
    return BuildSections(
        sources={n: source_config(n, v) for n, v in c["sources"].items()},
        variants={n: variant_config(n, v) for n, v in c["variants"].items()},
        teacher=typed(TeacherConfig, c["teacher"], "teacher"),
        build=typed(BuildConfig, c["build"], "build"),
        train_sets=dict(c["data"]["train_sets"]),
    )


@dataclass
class BuildDataConfig:
    """conf/build.yaml's ``data``: the training-set weights a build reads (0: not built). The
    dataset presets also set keys of ``python -m distill``'s ``data``, unused by a build."""

    train_sets: dict[str, float] = MISSING
    batch_size: int | None = None
    samples_per_epoch: int | None = None


@dataclass
class BuildAppConfig(DatasetKeys):
    """conf/build.yaml. ``trainer``, ``optimizer``, ``baseline`` and ``export`` are set by the
    dataset presets for ``python -m distill``; a build reads none of them."""

    out_dir: str = MISSING
    only: list[str] | None = None
    data: BuildDataConfig = field(default_factory=BuildDataConfig)
    overwrite: bool = MISSING
    build: BuildConfig = field(default_factory=BuildConfig)
    remote: RemoteConfig = field(default_factory=RemoteConfig)
    device: str = MISSING
    paths: PathsConfig = field(default_factory=PathsConfig)
    trainer: dict[str, Any] = field(default_factory=dict)
    optimizer: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)


def register_build_configs(cs: ConfigStore | None = None) -> None:
    """Register the schema conf/build.yaml names (idempotent; done on import)."""
    cs = cs or ConfigStore.instance()
    cs.store(name="build_schema", node=BuildAppConfig)


register_build_configs()
