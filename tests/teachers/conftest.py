"""Local weight files for teachers: real timm/MNv4 networks saved the way users save them."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

import students


@pytest.fixture(scope="session")
def teacher_files(tmp_path_factory) -> dict[str, str]:
    """``timm:resnet10t`` (10 classes) as .safetensors and .pth, ``mnv4:mnv4_conv_s`` (10)."""
    root = tmp_path_factory.mktemp("teacher_weights")
    torch.manual_seed(0)
    resnet = timm.create_model("resnet10t", num_classes=10)
    state = {k: v.contiguous() for k, v in resnet.state_dict().items()}
    save_file(state, str(root / "resnet10t.safetensors"))
    torch.save(state, root / "resnet10t.pth")
    mnv4 = students.create_model("mnv4_conv_s", num_classes=10)
    save_file(
        {k: v.contiguous() for k, v in mnv4.state_dict().items()}, str(root / "conv_s.safetensors")
    )
    return {
        "timm_st": str(root / "resnet10t.safetensors"),
        "timm_pth": str(root / "resnet10t.pth"),
        "mnv4": str(root / "conv_s.safetensors"),
    }


@pytest.fixture
def images() -> torch.Tensor:
    """A batch of RGB images in [0, 1] at a student resolution."""
    return torch.rand(6, 3, 64, 64, generator=torch.Generator().manual_seed(0))
