"""Schemas of ``python -m data.build`` (conf/build.yaml) and of the sections it shares with
``python -m distill``: the root ``BuildAppConfig`` is registered in Hydra's ConfigStore and named
first in conf/build.yaml's defaults list, so a misspelt key, in a preset (the error names the file)
or on the command line, fails at compose time.

The YAML files hold the values (the one place for defaults); a field without a YAML value has
its default here. ``distill/config.py`` builds the training schema on these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


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
    store: str = MISSING  # pixels | recipe (data/recipes.py)
    batch_size: int = MISSING
    num_workers: int = MISSING
    top_k: int | None = MISSING
    temperature: float = MISSING
    progress: bool = MISSING
    wait_s: float = MISSING  # other ranks wait this long for rank 0's teacher scores


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
    autocast: str | None = MISSING
    cache_path: str | None = None
    train_on: str | None = None
    validate_on: str | None = None
    recipe: dict[str, Any] = field(default_factory=dict)


@dataclass
class DatasetKeys:
    """Keys the dataset files (conf/dataset/*.yaml, ``@package _global_``) add at the root.

    Sources and variants differ in shape by ``kind`` (data/sources.py, data/variants.py)."""

    dataset_name: str = MISSING
    image_size: int = MISSING
    raw_size: int = MISSING
    digits: dict[str, Any] = field(default_factory=dict)  # the embedded digits split
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
class BuildAppConfig(DatasetKeys):
    """conf/build.yaml. ``trainer``, ``optimizer``, ``baseline`` and ``export`` are set by the
    dataset and debug presets for ``python -m distill`` and ignored here."""

    out_dir: str = MISSING
    only: list[str] | None = None
    data: dict[str, Any] = field(default_factory=dict)
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
