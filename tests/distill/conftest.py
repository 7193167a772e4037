"""Composed configs and a small, real digits cache (shards + trained teacher) shared by the tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[2] / "conf"
REPO = CONF.parent

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
    ``hydra=True`` keeps the ``hydra`` node (sweeper, launcher)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        extra = [f"paths.output_dir={output_dir}"] if output_dir else []
        return compose(
            config_name="train", overrides=[*overrides, *extra], return_hydra_config=hydra
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
    from distill.app import ensure_data

    cache = tmp_path_factory.mktemp("cache")
    overrides = [f"paths.cache={cache}", *SMALL_DATA]
    cfg = compose_train(["+student=mnv4_conv_s", "mode=online", *overrides], cache / "out")
    c = OmegaConf.to_container(cfg, resolve=True)
    c["baseline"]["enabled"] = True
    ensure_data(c)  # train sets, val, raw (online) and the baseline's sets
    c["mode"] = "offline"
    ensure_data(c)
    return [*overrides, *ON_CACHE]


@pytest.fixture
def env_no_wandb(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    return os.environ
