"""The your-own-images path end to end: teacher CLI, shard build and their shared rules.

Real JPEG folders (scikit-learn digits written with PIL), real Hydra composition and the real
command lines; no mocks.
"""

from __future__ import annotations

from pathlib import Path

from teachers import read_teacher_metadata
from teachers.train import main as teacher_cli

DIGITS = [str(i) for i in range(10)]
TINY_RECIPE = [
    "--spec=timm:resnet10t",
    "--epochs=1",
    "--image-size=32",
    "--batch-size=16",
    "--accelerator=cpu",
]


def _listed(text: str, root: Path) -> dict[str, str]:
    """``relative path -> reason`` of the by-file skip lines a tool printed."""
    out = {}
    for line in text.splitlines():
        ref, sep, reason = line.strip().partition(": ")
        if sep and ref.startswith(str(root)):
            out[str(Path(ref).relative_to(root))] = reason
    return out


def _assert_lists_bad_inputs(text: str, root: Path, bad: dict[str, str]) -> None:
    listed = _listed(text, root)
    for name, reason in bad.items():
        assert name in listed, f"{name} not listed in:\n{text[-3000:]}"
        assert listed[name].startswith(reason), (name, listed[name])
    assert set(listed) == set(bad), sorted(listed)


def test_teacher_cli_skips_bad_files_lists_them_and_keeps_the_empty_class(
    messy_digit_folder, tmp_path, capsys
):
    root, bad = messy_digit_folder
    out = tmp_path / "teacher.safetensors"
    teacher_cli([*TINY_RECIPE, f"--data={root}", f"--out={out}"])
    printed = capsys.readouterr().out
    _assert_lists_bad_inputs(printed, root, bad)
    meta = read_teacher_metadata(out)
    assert meta["classes"] == [*DIGITS, "zebra"] and meta["num_classes"] == 11
    assert meta["metrics"]["samples"] == 10  # every val image, none lost to the bad ones
