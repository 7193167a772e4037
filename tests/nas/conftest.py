"""Spaces from the presets' own files (the search tests train on tests/conftest.py's ``tiny_cache``)."""

from __future__ import annotations

import pytest
import yaml

from nas.app import space_from_config
from nas.space import SearchSpace
from tests.helpers import CONF


def space(name: str, resolution: int = 32) -> SearchSpace:
    """conf/nas/space/<name>.yaml with the schema's stage defaults, as the app reads it."""
    from nas.config import nas_section

    data = yaml.safe_load((CONF / "nas" / "space" / f"{name}.yaml").read_text())
    return space_from_config(nas_section(_complete({"space": data})).space, resolution)


def _complete(section: dict) -> dict:
    """A nas section whose keys other than ``space`` hold placeholder values."""
    base = yaml.safe_load((CONF / "search.yaml").read_text())["nas"]
    base["space"] = section["space"]
    base["coarse"]["steps"] = base["fine"]["steps"] = 1
    base["latency"]["cache_dir"] = "unused"
    return base


@pytest.fixture(scope="session")
def conv_s_space() -> SearchSpace:
    return space("conv_s")


@pytest.fixture(scope="session")
def tiny_space() -> SearchSpace:
    """The +debug=smoke space (conf/nas/debug/smoke.yaml): a few blocks, quick to measure."""
    data = yaml.safe_load((CONF / "nas" / "space" / "conv_s.yaml").read_text())
    data.update(yaml.safe_load((CONF / "nas" / "debug" / "smoke.yaml").read_text())["nas"]["space"])
    from nas.config import nas_section

    return space_from_config(nas_section(_complete({"space": data})).space, 32)


@pytest.fixture(scope="session")
def conv_ml_space() -> SearchSpace:
    return space("conv_ml", 224)
