"""Fixtures for the student tests: timm models with weights that make every branch matter."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

import students
from students import SPECS, TIMM_NAMES
from testkit.models import randomize_like_trained


@pytest.fixture(scope="session")
def timm_models() -> dict[str, nn.Module]:
    """One randomised timm ``mobilenetv4_*`` model per student name, in eval mode (built lazily)."""

    class Lazy(dict):
        def __missing__(self, name: str) -> nn.Module:
            torch.manual_seed(0)
            model = timm.create_model(TIMM_NAMES[name])
            self[name] = randomize_like_trained(model, SPECS[name].resolution)
            return self[name]

    return Lazy()


@pytest.fixture(scope="session")
def default_models() -> dict[str, nn.Module]:
    """One ``students.create_model(name)`` per name (built lazily), shared by the tests that only
    read a default model: they must not change its weights (eval/train mode aside)."""

    class Lazy(dict):
        def __missing__(self, name: str) -> nn.Module:
            self[name] = students.create_model(name)
            return self[name]

    return Lazy()
