"""Composed configs and real digits caches for the tests: the recipe of ``tiny_cache`` (a few
dozen images per set labelled by a random-init teacher: seconds; the fixture lives in
tests/conftest.py so every package shares one) for the fast tier, ``digits_cache`` (a trained
teacher and every set at test scale: minutes) for the slow end-to-end runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.helpers import CONF, save_random_teacher

# The embedded default, shrunk for tests: a shorter teacher recipe and fewer replicas.
SMALL_DATA = [
    "teacher.recipe.epochs=20",
    "variants.randaug.replicas=4",
    "variants.mixup.replicas=4",
    "variants.extra.replicas=2",
    "build.progress=false",
    "build.shard_size=250",
]


def compose_train(overrides: list[str], output_dir: Path | None = None, hydra: bool = False):
    """Compose conf/train.yaml as the app sees it (output dir set, since compose has no job);
    ``hydra=True`` keeps the ``hydra`` node (sweeper, launcher). ``student=x`` means
    ``+student=x``, as on the command line (``distill.config.normalize_overrides``)."""
    from distill.config import normalize_overrides  # registers the schemas

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        extra = [f"paths.output_dir={output_dir}"] if output_dir else []
        return compose(
            config_name="train",
            overrides=[*normalize_overrides(overrides), *extra],
            return_hydra_config=hydra,
        )


# +debug=smoke keeps its own small data (<cache>/smoke/) for a cold start; tests point it back at
# the shared cache, and leave the baseline and ONNX to the tests that check them.
ON_CACHE = [
    "paths.shards=${paths.cache}/shards/${dataset_name}",
    "paths.teachers=${paths.cache}/teachers",
    "baseline.enabled=false",
    "export.onnx=false",
]


@pytest.fixture(scope="session")
def digits_cache(tmp_path_factory) -> list[str]:
    """Build the digits shards and train the digits teacher once; returns the overrides to use
    (the cache, the small-data settings and ``ON_CACHE``)."""
    cache = tmp_path_factory.mktemp("cache")
    overrides = [f"paths.cache={cache}", *SMALL_DATA]
    build_cache(cache, overrides, baseline=True)  # trains the teacher; the baseline's sets too
    return [*overrides, *ON_CACHE]


def build_cache(cache: Path, overrides: list[str], baseline: bool, teacher: bool = False) -> None:
    """Build every set a run needs in online (raw, val) and offline mode (the train sets), and
    with ``baseline`` the from-labels baseline's; ``teacher`` first saves a random-init one
    taking ``image_size`` px, as the digits teacher trained by teachers/train.py does."""
    from distill.run_sets import ensure_data

    cfg = compose_train(["+student=mnv4_conv_s", "mode=online", *overrides], cache / "out")
    c = OmegaConf.to_object(cfg)
    if teacher:
        save_random_teacher(Path(c.teacher.cache_path), input_size=c.image_size)
    c.baseline.enabled = baseline
    ensure_data(c)
    c.mode = "offline"
    ensure_data(c)


# About 64 real digits per split at 32 px: one RandAugment replica to train on (set mixing is the
# data tests' business), the raw set for online mode and validation, in shards of 32.
TINY_DATA = [
    "digits.fractions={labelled:0.04,pool:0.04,val:0.036}",
    "data.train_sets={randaug:1,mixup:0,extra:0}",
    "variants.randaug.replicas=1",
    "teacher.train_if_missing=false",
    "build.progress=false",
    "build.num_workers=0",
    "build.shard_size=32",
]


@pytest.fixture
def env_no_wandb(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    return os.environ
