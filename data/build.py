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
from data.config import register_build_configs

log = logging.getLogger(__name__)


class BuildConfigError(ValueError):
    """Sets or sources the config does not define; the message names the key."""


def select_variants(c: dict, sets: Iterable[str] | None = None) -> dict[str, dict]:
    """The variants to build: ``sets`` by name, else every configured variant that
    ``data.train_sets`` does not weight 0 (a set no run reads needs no source, e.g. no pool)."""
    variants = c["variants"]
    if sets is not None:
        sets = set(sets)
        unknown = sorted(sets - set(variants))
        if unknown:
            raise BuildConfigError(
                f"sets {unknown} are not configured variants; choose from {sorted(variants)}"
            )
        chosen = {n: v for n, v in variants.items() if n in sets}
    else:
        weights = (c.get("data") or {}).get("train_sets") or {}
        chosen = {n: v for n, v in variants.items() if weights.get(n, 1) != 0}
    if not chosen:
        raise BuildConfigError(f"no set selected to build among {sorted(variants)}")
    return chosen


def _readers(variants: dict[str, dict], teacher_cfg: dict | None) -> dict[str, list[str]]:
    """Source name -> what reads it: set names, and the teacher's training keys if it trains."""
    readers: dict[str, list[str]] = {}
    for name, v in variants.items():
        readers.setdefault(v["source"], []).append(name)
    for key in ("train_on", "validate_on"):
        if teacher_cfg and teacher_cfg.get(key):
            readers.setdefault(teacher_cfg[key], []).append(f"teacher.{key}")
    return readers


def _source_error(e: Exception, name: str, readers: list[str], weights: dict) -> str:
    """The source's own message and who needs it; when only weighted training sets read it
    (the pool: extra), the ``data.train_sets`` knob that leaves them out."""
    msg = f"{e} (source {name!r}, needed by {', '.join(readers)})"
    if all(r in weights for r in readers):
        drop = " ".join(f"data.train_sets.{r}=0" for r in readers)
        msg += f"; provide it, or leave {'that set' if len(readers) == 1 else 'those sets'} out: {drop}"
    return msg


def open_sources(c: dict, variants: dict[str, dict], teacher_cfg: dict | None = None) -> dict:
    """Open the sources ``variants`` read (and the teacher's, when it must be trained).

    A source that cannot be opened names the sets reading it and how to leave them out.
    """
    from data.sources import SourceError, open_source

    readers = _readers(variants, teacher_cfg)
    unknown = sorted(set(readers) - set(c["sources"]))
    if unknown:
        raise BuildConfigError(
            f"sources {unknown} (read by {[readers[u] for u in unknown]}) are not among the "
            f"configured sources {sorted(c['sources'])}"
        )
    sources = {}
    for name in sorted(readers):
        try:
            sources[name] = open_source(c["sources"][name])
        except SourceError as e:
            weights = (c.get("data") or {}).get("train_sets") or {}
            raise SourceError(_source_error(e, name, readers[name], weights)) from e
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
    c: dict,
    sets: Iterable[str] | None = None,
    rank: int = 0,
    world: int = 1,
    *,
    out_dir: str | Path | None = None,
    device: str = "auto",
    overwrite: bool = False,
) -> list:
    """Build ``sets`` (default: ``select_variants``) of a resolved build or train config.

    ``c`` needs ``variants``, ``sources``, ``teacher`` and ``build`` (and ``out_dir`` unless
    given). A mistyped teacher checkpoint fails before any source is opened; the teacher's own
    training sources are opened only when it has to be trained. Returns the sets' reports.
    """
    from data.builder import build_sets
    from data.teacher_setup import teacher_from_config, teacher_needs_training

    variants = select_variants(c, sets)
    tcfg = c["teacher"]
    labelled = any(v.get("label", True) for v in variants.values())
    trains = labelled and teacher_needs_training(tcfg)
    sources = open_sources(c, variants, tcfg if trains else None)
    teacher = None
    if labelled:
        teacher = teacher_from_config(tcfg, sources).to(_device(device))
    out = out_dir if out_dir is not None else c["out_dir"]
    return build_sets(
        variants, sources, teacher, out, c["build"], rank, world, overwrite, teacher_cfg=tcfg
    )


def run(cfg: DictConfig) -> list:
    """Resolve the config, build the selected sets, print the summary (skipped inputs by file)."""
    from data.builder import dist_env, summary

    missing = sorted(k for k in cfg if OmegaConf.is_missing(cfg, k))  # e.g. data_root: ???
    if missing:
        raise BuildConfigError(
            " ".join(f"{k}=..." for k in missing) + " must be set on the command line "
            "(e.g. dataset=folder data_root=/path/to/images)"
        )
    c = OmegaConf.to_container(cfg, resolve=True)
    remote.configure(remote.transport_from_config(c))
    rank, world, _ = dist_env()
    reports = build_from_config(
        c,
        c["only"] or None,
        rank,
        world,
        out_dir=c["out_dir"],
        device=c["device"],
        overwrite=c["overwrite"],
    )
    print(summary(reports, c["out_dir"]))
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
