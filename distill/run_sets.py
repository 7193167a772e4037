"""The shard sets a distillation run reads, made sure of before it starts (``data.provision``
builds the missing ones), and the transport that reaches them."""

from __future__ import annotations

from data import remote
from data.config import build_sections
from data.provision import ensure_sets
from distill.config import TrainConfig


def wanted_sets(c: TrainConfig) -> set[str]:
    """The sets the run reads: the weighted training sets and the validation set (online: the
    raw set instead of the training sets), and the baseline's when it runs."""
    d = c.data
    wanted = {n for n, w in d.train_sets.items() if w > 0} | {d.val_set}
    # hybrid builds the offline sets: stored labels for some, source images for live recipes
    if c.mode == "online":
        wanted = {d.online.set, d.val_set}
    if c.baseline.enabled:
        wanted |= {n for n, w in c.baseline.train_sets.items() if w > 0}
    return wanted


def ensure_data(c: TrainConfig) -> None:
    """Build whichever of the run's sets are missing (rank 0 only; the others wait for them)."""
    from data.build import build_from_config

    root = c.data.root
    sections = build_sections(c, c.build, c.data.train_sets)
    ensure_sets(
        root,
        wanted_sets(c),
        c.build.store,
        sections.variants,
        c.data.build_if_missing,
        lambda missing: build_from_config(sections, missing, out_dir=root),
    )


def transport(c: TrainConfig) -> remote.Transport:
    """How sets at URLs are fetched: the ``remote`` section and the node-local shard cache."""
    return remote.transport_from_config(c.remote, c.data.cache_dir, c.data.cache_bytes)
