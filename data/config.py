"""Schemas of ``python -m data.build`` (conf/build.yaml) and of the sections it shares with
``python -m distill``: the root ``BuildAppConfig`` is registered in Hydra's ConfigStore and named
first in conf/build.yaml's defaults list, so a misspelt key, in a preset (the error names the file)
or on the command line, fails at compose time.

The YAML files hold the values (the one place for defaults); a field without a YAML value has
its default here. ``distill/config.py`` builds the training schema on these.

Sources and variants differ in shape by ``kind``; OmegaConf cannot hold a union of dataclasses,
so the schema types each entry as a node holding every key any kind takes (``SourceNode``,
``VariantNode``: a misspelt key fails at compose time) and ``source_config``/``variant_config``
turn a node into its kind's dataclass, which takes only that kind's keys and checks the values.
The conversion of the config runs them (``DatasetKeys.__post_init__``), so a key the kind does
not take or a bad value fails there, naming the key; ``build_sections`` hands the typed kinds
to everything below the entry point.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING as NO_DEFAULT
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from types import NoneType
from typing import Any, Literal, TypeVar, get_args, get_type_hints

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
class OnlineConfig:
    """``data.online`` of ``python -m distill`` (mode=online): the raw image ``set`` streamed
    with a fresh Inception crop of ``crop_size`` and area ``crop_scale`` per view."""

    set: str = MISSING
    crop_size: int = MISSING
    crop_scale: list[float] = MISSING


@dataclass
class DigitsConfig:
    """The embedded digits split (common/digits.py ``digits_split``); ``fractions`` is set by
    dataset=digits only (the other datasets name ``seed`` for the digits teacher's cache path)."""

    seed: int = MISSING
    fractions: dict[str, float] | None = None


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


@dataclass
class SourceNode:
    """``sources.<name>`` as the schema holds it: ``kind`` and every key a source kind takes
    (null: not set), so a misspelt key fails at compose time; ``source_config`` types it."""

    kind: str = MISSING  # a SOURCE_KINDS key
    root: str | None = None  # imagefolder, unlabelled
    subdir: str | None = None
    hint: str | None = None
    classes_file: str | None = None  # imagefolder
    split: str | None = None  # digits
    size: int | None = None
    fractions: dict[str, float] | None = None
    seed: int | None = None
    urls: list[str] | None = None  # shards
    classes: list[str] | None = None


def source_config(name: str, value: SourceNode | Mapping) -> SourceConfig:
    """``sources.<name>`` as its kind's dataclass; a bad kind or key names the key."""
    return _kind_config(f"sources.{name}", "source", SOURCE_KINDS, _given(value), SourceError)


def _given(value: Any) -> dict[str, Any]:
    """The keys a node sets (null: not set) or, for a mapping (a manifest's record, a test's
    variant), all of its keys."""
    if isinstance(value, Mapping):
        return dict(value)
    return {
        f.name: getattr(value, f.name) for f in fields(value) if getattr(value, f.name) is not None
    }


def _kind_config(
    key: str, what: str, kinds: Mapping[str, type[T]], given: dict, error: type[ValueError]
) -> T:
    """``given`` as the dataclass of its ``kind``: only the keys that kind takes, each it needs
    (one whose type admits null is null when unset: e.g. ``per_class``, a source's ``root``)."""
    kind = given.pop("kind", None)
    if kind not in kinds:
        raise error(f"{key}: {what} kind {kind!r} unknown; expected one of {sorted(kinds)}")
    cls = kinds[kind]
    hints = get_type_hints(cls)
    takes = {f.name: f for f in fields(cls) if f.init}
    for k in given:
        if k not in takes:
            raise error(
                f"{key}.{k}: {what} kind {kind!r} takes no {k!r} (its keys: {sorted(takes)})"
            )
    for k, f in takes.items():
        if k in given or f.default is not NO_DEFAULT or f.default_factory is not NO_DEFAULT:
            continue
        if NoneType not in get_args(hints[k]):
            raise error(f"{key}.{k}: {what} kind {kind!r} needs {k!r}, which is not set")
        given[k] = None
    return cls(**given)


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


@dataclass
class VariantNode:
    """``variants.<name>`` as the schema holds it: ``kind`` and every key a variant kind takes
    (null: not set), so a misspelt key fails at compose time; ``variant_config`` types it."""

    kind: str = MISSING  # a VARIANT_KINDS key
    name: str | None = None  # null: the key
    source: str | None = None
    replicas: int | None = None
    seed: int | None = None
    jpeg_quality: int | None = None
    image_size: int | None = None
    label: bool | None = None
    max_side: int | None = None
    raw_size: int | None = None  # every kind but plain
    crop_scale: list[float] | None = None
    pack: int | None = None  # randaug, extra, inpaint
    randaugment: RandAugmentConfig | None = None  # randaug, extra
    threshold: float | None = None  # extra
    per_class: int | None = None
    score_crop_pct: float | None = None
    alpha: float | None = None  # mixup
    group: int | None = None
    mask_area: list[float] | None = None  # inpaint
    mask_kinds: list[str] | None = None
    method: str | None = None
    radius: float | None = None
    # a Hydra ``_target_`` node: the arguments are the user's callable's, whatever they are
    inpainter: dict[str, Any] | None = None
    crop_pct: float | None = None  # plain


def variant_config(name: str, value: VariantNode | Mapping) -> VariantConfig:
    """``variants.<name>`` as its kind's dataclass (``name`` defaults to the key); a bad kind
    or key names the key."""
    given = _given(value)
    given["name"] = given.get("name") or name
    return _kind_config(f"variants.{name}", "variant", VARIANT_KINDS, given, ValueError)


def variant_kind(cfg: VariantConfig) -> str:
    """The ``kind`` of a typed variant config."""
    return next(k for k, cls in VARIANT_KINDS.items() if type(cfg) is cls)


@dataclass
class DatasetKeys:
    """Keys the dataset files (conf/dataset/*.yaml, ``@package _global_``) add at the root.

    Sources and variants differ in shape by ``kind`` (data/sources.py, data/variants.py): the
    conversion types each by its kind here, so a key its kind does not take fails there."""

    dataset_name: str = MISSING
    image_size: int = MISSING
    raw_size: int = MISSING
    digits: DigitsConfig | None = None
    sources: dict[str, SourceNode] = field(default_factory=dict)
    variants: dict[str, VariantNode] = field(default_factory=dict)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    # dataset=folder: its ``???`` must survive the merge (a missing value never overrides a
    # default), so the schema leaves it missing and the other dataset files set it to null
    data_root: str | None = MISSING
    folder_name: str | None = None  # dataset=folder
    imagenet_root: str | None = None  # dataset=imagenet
    extra_pool: str | None = None  # dataset=imagenet

    def __post_init__(self) -> None:
        self.source_configs()
        self.variant_configs()

    def source_configs(self) -> dict[str, SourceConfig]:
        """Each source as its kind's dataclass."""
        return {n: source_config(n, v) for n, v in self.sources.items()}

    def variant_configs(self) -> dict[str, VariantConfig]:
        """Each variant as its kind's dataclass."""
        return {n: variant_config(n, v) for n, v in self.variants.items()}


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


def build_sections(
    c: DatasetKeys, build: BuildConfig, train_sets: Mapping[str, float]
) -> BuildSections:
    """The ``BuildSections`` of a build or train config (its ``build`` and the training sets'
    weights, ``data.train_sets``)."""
    return BuildSections(
        sources=c.source_configs(),
        variants=c.variant_configs(),
        teacher=c.teacher,
        build=build,
        train_sets=dict(train_sets),
    )


@dataclass
class BuildDataConfig:
    """conf/build.yaml's ``data``: the training-set weights a build reads (0: not built)."""

    train_sets: dict[str, float] = MISSING


@dataclass
class BuildAppConfig(DatasetKeys):
    """conf/build.yaml. A dataset's settings for ``python -m distill`` alone (its training
    length, batch, learning rate) are in conf/dataset_train/, which only conf/train.yaml reads."""

    out_dir: str = MISSING
    only: list[str] | None = None
    data: BuildDataConfig = field(default_factory=BuildDataConfig)
    overwrite: bool = MISSING
    build: BuildConfig = field(default_factory=BuildConfig)
    remote: RemoteConfig = field(default_factory=RemoteConfig)
    device: str = MISSING
    paths: PathsConfig = field(default_factory=PathsConfig)


def register_build_configs(cs: ConfigStore | None = None) -> None:
    """Register the schema conf/build.yaml names (idempotent; done on import)."""
    cs = cs or ConfigStore.instance()
    cs.store(name="build_schema", node=BuildAppConfig)


register_build_configs()
