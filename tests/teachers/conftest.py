"""Local weight files for teachers: real timm/MNv4 networks saved the way users save them."""

from __future__ import annotations

from pathlib import Path

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


@pytest.fixture(scope="session")
def messy_digit_folder(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A ``dataset=folder`` root of real digit JPEGs with bad files and an empty class folder.

    No ``unlabelled/``: the README calls it optional. Returns the root and, for each bad input
    (relative to the root), the reason both tools must give.
    """
    from tests.helpers import write_digit_folder

    root = tmp_path_factory.mktemp("messy_digits")
    write_digit_folder(root / "train", per_class=3, size=32)
    write_digit_folder(root / "val", per_class=1, size=32, offset=40)
    good = root / "train" / "2" / sorted(p.name for p in (root / "train" / "2").iterdir())[0]
    (root / "train" / "0" / "notes.jpg").write_text("this is not a picture")
    (root / "train" / "1" / "empty.jpg").write_bytes(b"")
    (root / "train" / "2" / "truncated.jpg").write_bytes(good.read_bytes()[:-200])
    for split in ("train", "val"):
        (root / split / "zebra").mkdir()
    bad = {
        "train/0/notes.jpg": "not an image",
        "train/1/empty.jpg": "empty file",
        "train/2/truncated.jpg": "corrupt image",
        "train/zebra": "empty class",
        "val/zebra": "empty class",
    }
    return root, bad


@pytest.fixture(scope="session")
def digit_root(tmp_path_factory) -> Path:
    """A clean ``dataset=folder`` root (10 digit classes in train/ and val/), no unlabelled/."""
    from tests.helpers import write_digit_folder

    root = tmp_path_factory.mktemp("digit_root")
    write_digit_folder(root / "train", per_class=2, size=32)
    write_digit_folder(root / "val", per_class=1, size=32, offset=40)
    return root


@pytest.fixture(scope="session")
def project_teacher(tmp_path_factory) -> Path:
    """A 10-class ``timm:resnet10t`` teacher checkpoint written by this project (no hub), taking
    the folders' 32-px digits as they are (as a digits teacher trained at 32 px does)."""
    from tests.helpers import save_random_teacher

    path = tmp_path_factory.mktemp("project_teacher") / "digits10.safetensors"
    return save_random_teacher(path, input_size=32)
