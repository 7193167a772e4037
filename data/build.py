"""``python -m data.build``: the Hydra app that builds the distillation shards (conf/build.yaml).

Thin on purpose: the work is in data/builder.py, which DataLoader workers can import.
``build_from_config`` is the one recipe from a resolved config to built sets, shared with the
distill app, so that both open only the sources the chosen sets read and get the same teacher.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from data import remote, urls
from data.config import (
    BuildAppConfig,
    BuildSections,
    TeacherConfig,
    VariantConfig,
    build_sections,
    register_build_configs,
)

log = logging.getLogger(__name__)


class BuildConfigError(ValueError):
    """Sets or sources the config does not define; the message names the key."""


def select_variants(
    c: BuildSections, sets: Iterable[str] | None = None
) -> dict[str, VariantConfig]:
    """The variants to build: ``sets`` by name, else every configured variant that
    ``data.train_sets`` does not weight 0 (a set no run reads needs no source, e.g. no pool)."""
    variants = c.variants
    if sets is not None:
        sets = set(sets)
        unknown = sorted(sets - set(variants))
        if unknown:
            raise BuildConfigError(
                f"sets {unknown} are not configured variants; choose from {sorted(variants)}"
            )
        chosen = {n: v for n, v in variants.items() if n in sets}
    else:
        chosen = {n: v for n, v in variants.items() if c.train_sets.get(n, 1) != 0}
    if not chosen:
        raise BuildConfigError(f"no set selected to build among {sorted(variants)}")
    return chosen


def _readers(
    variants: dict[str, VariantConfig], teacher: TeacherConfig | None
) -> dict[str, list[str]]:
    """Source name -> what reads it: set names, and the teacher's training keys if it trains."""
    readers: dict[str, list[str]] = {}
    for name, v in variants.items():
        readers.setdefault(v.source, []).append(name)
    if teacher is not None:
        for key, source in (("train_on", teacher.train_on), ("validate_on", teacher.validate_on)):
            if source:
                readers.setdefault(source, []).append(f"teacher.{key}")
    return readers


def _source_error(e: Exception, name: str, readers: list[str], weights: dict) -> str:
    """The source's own message and who needs it; when only weighted training sets read it
    (the pool: extra), the ``data.train_sets`` knob that leaves them out."""
    msg = f"{e} (source {name!r}, needed by {', '.join(readers)})"
    if all(r in weights for r in readers):
        drop = " ".join(f"data.train_sets.{r}=0" for r in readers)
        msg += f"; provide it, or leave {'that set' if len(readers) == 1 else 'those sets'} out: {drop}"
    return msg


def open_sources(
    c: BuildSections, variants: dict[str, VariantConfig], teacher: TeacherConfig | None = None
) -> dict:
    """Open the sources ``variants`` read (and ``teacher``'s, when it must be trained).

    A source that cannot be opened names the sets reading it and how to leave them out.
    """
    from data.sources import SourceError, open_source

    readers = _readers(variants, teacher)
    unknown = sorted(set(readers) - set(c.sources))
    if unknown:
        raise BuildConfigError(
            f"sources {unknown} (read by {[readers[u] for u in unknown]}) are not among the "
            f"configured sources {sorted(c.sources)}"
        )
    sources = {}
    for name in sorted(readers):
        try:
            sources[name] = open_source(c.sources[name])
        except SourceError as e:
            raise SourceError(_source_error(e, name, readers[name], c.train_sets)) from e
        src = sources[name]
        log.info(
            "source %s: %s, %d images, %d skipped",
            name,
            src.describe(),
            len(src.items),
            len(src.skipped.entries),
        )
    return sources


def _device(device: str) -> str:
    from data.builder import dist_env

    if device != "auto":
        return device
    return f"cuda:{dist_env()[2]}" if torch.cuda.is_available() else "cpu"


def build_from_config(
    c: BuildSections,
    sets: Iterable[str] | None,
    out_dir: str | Path,
    rank: int = 0,
    world: int = 1,
    *,
    device: str = "auto",
    overwrite: bool = False,
) -> list:
    """Build ``sets`` (None: ``select_variants``) of a build or train config's sections.

    A mistyped teacher checkpoint fails before any source is opened; the teacher's own
    training sources are opened only when it has to be trained. Returns the sets' reports.
    """
    from data.builder import build_sets
    from data.teacher_setup import teacher_from_config, teacher_needs_training

    variants = select_variants(c, sets)
    tcfg = c.teacher
    labelled = any(v.label for v in variants.values())
    trains = labelled and teacher_needs_training(tcfg)
    sources = open_sources(c, variants, tcfg if trains else None)
    teacher = None
    if labelled:
        teacher = teacher_from_config(tcfg, sources).to(_device(device))
    return build_sets(variants, sources, teacher, out_dir, c.build, rank, world, overwrite, tcfg)


def app_config(cfg: DictConfig) -> BuildAppConfig:
    """``cfg`` resolved into ``BuildAppConfig`` (the one conversion: each section, source and
    variant checks its values); a value left ``???`` or a bad value is a ``BuildConfigError``."""
    missing = sorted(k for k in cfg if OmegaConf.is_missing(cfg, k))  # e.g. data_root: ???
    if missing:
        raise BuildConfigError(
            " ".join(f"{k}=..." for k in missing) + " must be set on the command line "
            "(e.g. dataset=folder data_root=/path/to/images)"
        )
    try:
        return OmegaConf.to_object(cfg)
    except ValueError as e:
        raise BuildConfigError(str(e)) from None


def run(cfg: DictConfig) -> list:
    """Resolve the config, build the selected sets, print the summary (skipped inputs by file)."""
    from data.builder import dist_env, summary

    c = app_config(cfg)
    remote.configure(remote.transport_from_config(c.remote, cache_dir=None, cache_bytes=0))
    rank, world, _ = dist_env()
    reports = build_from_config(
        build_sections(c, c.build, c.data.train_sets),
        c.only or None,
        c.out_dir,
        rank,
        world,
        device=c.device,
        overwrite=c.overwrite,
    )
    print(summary(reports, c.out_dir))
    return reports


def _config_errors() -> tuple[type[Exception], ...]:
    """Errors printed as one line: config mistakes, and sets that cannot be reached or locked."""
    from common.weights import CheckpointError
    from data.set_store import LockError
    from data.sources import SourceError
    from data.teacher_setup import MissingTeacherError

    return (
        BuildConfigError,
        SourceError,
        MissingTeacherError,
        remote.RemoteError,
        urls.UrlError,
        LockError,
        CheckpointError,
    )


register_build_configs()  # conf/build.yaml names build_schema (data/config.py)


@hydra.main(version_base="1.3", config_path="../conf", config_name="build")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except _config_errors() as e:  # a config mistake or refused weights: one line
        lines = (line.strip() for line in str(e).splitlines())
        raise SystemExit(f"error: {'; '.join(line for line in lines if line)}") from None


if __name__ == "__main__":
    main()
