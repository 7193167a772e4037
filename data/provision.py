"""A run's shard sets: build whichever are missing (rank 0 only; the other ranks wait for their
manifests), and refuse built sets stored other than ``build.store`` says. Which sets a run needs
and how they are built is the caller's (``distill.run_sets``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection, Mapping

from common.files import wait_for_files
from data import remote, urls
from data.config import VariantConfig, variant_kind
from data.set_storage import storage_mode

log = logging.getLogger(__name__)


class StorageMismatch(ValueError):
    """Built sets stored other than the run asks (``build.store``, the recipe format)."""


def is_launcher_rank_zero() -> bool:
    """True in the process that launched the job (children of DDP have LOCAL_RANK>0 set)."""
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def ensure_sets(
    root: str,
    wanted: Collection[str],
    store: str,
    variants: Mapping[str, VariantConfig],
    build_if_missing: bool,
    build: Callable[[list[str]], list],
) -> None:
    """Build the sets of ``wanted`` missing under ``root`` with ``build(missing)`` (its reports)
    on rank 0, the other ranks wait for them; built sets must be stored as ``store`` says
    (``variants``: the configured variants, by set name)."""
    from data.builder import summary

    root = urls.check(root)
    remote.check_reachable(root)
    missing = sorted(n for n in wanted if not remote.exists(urls.join(root, n, "manifest.json")))
    check_storage(root, sorted(set(wanted) - set(missing)), store, variants)
    if not missing:
        return
    if not build_if_missing:
        raise FileNotFoundError(
            f"shard sets {missing} not found under {urls.redact(root)}; build them with python -m data.build "
            "or set data.build_if_missing=true"
        )
    if not is_launcher_rank_zero():
        manifests = [urls.join(root, n, "manifest.json") for n in missing]
        wait_for_files(
            manifests, 24 * 3600, f"waited a day for rank 0 to build {missing}", 5, remote.exists
        )
        return
    log.info("building shard sets %s under %s", missing, root)
    reports = build(missing)
    print(summary(reports, root))


def check_storage(
    root: str, built: list[str], store: str, variants: Mapping[str, VariantConfig]
) -> None:
    """Built sets must be stored the way ``build.store`` says (a changed default must not leave
    a run silently training on the old pixel views), and recipe sets in this loader's format."""
    from data.recipes import RECIPE_VERSION

    wrong, stale = [], []
    for name in built:
        variant = variants.get(name)  # a set on disk the config no longer names: plain
        want = storage_mode(variant_kind(variant) if variant else "plain", store)
        manifest = remote.read_json(urls.join(root, name, "manifest.json"))
        have = (manifest.get("storage") or {}).get("mode", "pixels")
        if have != want:
            wrong.append(f"{name} ({have})")
        elif have == "recipe" and (manifest.get("recipe") or {}).get("version") != RECIPE_VERSION:
            stale.append(name)
    if stale:
        raise StorageMismatch(
            f"recipe sets {', '.join(stale)} under {root} were built with an older recipe format "
            f"(this version renders format {RECIPE_VERSION}): rebuild them with python -m "
            f"data.build build.store=recipe overwrite=true only=[{','.join(stale)}] and this "
            "run's dataset options"
        )
    if wrong:
        raise StorageMismatch(
            f"shard sets {', '.join(wrong)} under {urls.redact(root)} are not stored as build.store="
            f"{store}: rebuild them (python -m data.build build.store="
            f"{store} overwrite=true only=[{','.join(w.split()[0] for w in wrong)}] "
            "with this run's dataset options) or pass build.store to match them"
        )
