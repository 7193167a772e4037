"""The your-own-images path end to end: teacher CLI, shard build and their shared rules.

Real JPEG folders (scikit-learn digits written with PIL), real Hydra composition and the real
command lines; no mocks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from data.build import build_from_config, run
from data.config import build_sections
from data.sources import SourceError
from data.teacher_setup import MissingTeacherError
from teachers import read_teacher_metadata
from teachers.train import main as teacher_cli
from tests.helpers import CONF, REPO, run_module

SMALL = [
    "image_size=32",
    "raw_size=32",
    "variants.randaug.replicas=1",
    "variants.mixup.replicas=1",
    "build.num_workers=0",
    "build.progress=false",
]
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


@pytest.mark.slow  # trains a teacher
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


def _run(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    return run_module(args[0], args[1:], timeout=timeout)


@pytest.mark.slow
def test_readme_folder_flow_teacher_cli_then_build_lists_the_same_files(
    messy_digit_folder, tmp_path
):
    """README: fine-tune with teachers.train, then data.build dataset=folder; no unlabelled/."""
    root, bad = messy_digit_folder
    ckpt = tmp_path / "mine.safetensors"
    trained = _run(["teachers.train", *TINY_RECIPE, f"--data={root}", f"--out={ckpt}"])
    assert trained.returncode == 0, trained.stderr[-3000:]
    _assert_lists_bad_inputs(trained.stdout, root, bad)

    built = _run(
        [
            "data.build",
            "dataset=folder",
            f"data_root={root}",
            f"teacher.checkpoint={ckpt}",
            *SMALL,
            f"paths.cache={tmp_path / 'cache'}",
            f"hydra.run.dir={tmp_path / 'hydra'}",
        ]
    )
    assert built.returncode == 0, built.stderr[-3000:]
    _assert_lists_bad_inputs(built.stdout, root, bad)
    sets = {
        p.parent.name for p in (tmp_path / "cache" / "shards" / "folder").glob("*/manifest.json")
    }
    assert sets == {"randaug", "mixup", "val", "raw"}  # extra (weight 0, no pool) is not built


def _compose(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(name, overrides=overrides)


def _folder_build(root: Path, tmp_path: Path, *overrides: str):
    return _compose(
        "build",
        ["dataset=folder", f"data_root={root}", *SMALL, f"out_dir={tmp_path / 'shards'}"]
        + [f"paths.cache={tmp_path / 'cache'}", *overrides],
    )


@pytest.mark.slow  # builds every set but extra
def test_folder_without_unlabelled_builds_every_set_but_extra(
    digit_root, project_teacher, tmp_path
):
    cfg = _folder_build(digit_root, tmp_path, f"teacher.checkpoint={project_teacher}")
    reports = run(cfg)
    assert {r.name for r in reports} == {"randaug", "mixup", "val", "raw"}
    assert all(r.complete for r in reports)


def test_asking_for_extra_without_a_pool_names_the_folder_and_the_knob(
    digit_root, project_teacher, tmp_path
):
    cfg = _folder_build(
        digit_root,
        tmp_path,
        f"teacher.checkpoint={project_teacher}",
        "data.train_sets.extra=2",
    )
    pool = digit_root / "unlabelled"
    with pytest.raises(SourceError, match="data.train_sets.extra=0") as err:
        run(cfg)
    assert f"image folder not found: {pool}" in str(err.value)
    assert not (tmp_path / "shards").exists()  # before any work


def test_build_from_config_builds_the_named_sets_of_a_distill_config(
    digit_root, project_teacher, tmp_path
):
    """The function the distill app's ensure_data can call with its own (train.yaml) config."""
    cfg = _compose(
        "train",
        ["+student=mnv4_conv_s", "dataset=folder", f"data_root={digit_root}", *SMALL]
        + [f"teacher.checkpoint={project_teacher}", f"paths.output_dir={tmp_path / 'run'}"],
    )
    c = OmegaConf.to_object(cfg)
    sections = build_sections(c, c.build, c.data.train_sets)
    reports = build_from_config(sections, {"val"}, tmp_path / "shards")
    assert [r.name for r in reports] == ["val"] and reports[0].complete
    assert (tmp_path / "shards" / "val" / "manifest.json").is_file()


TRAINABLE = ["teacher.spec=timm:resnet10t", "teacher.pretrained=false", "teacher.recipe.epochs=1"]


def test_mistyped_teacher_checkpoint_is_an_error_not_a_new_teacher(digit_root, tmp_path):
    typo = tmp_path / "mine.safetensor"
    cfg = _folder_build(
        digit_root, tmp_path, *TRAINABLE, f"teacher.checkpoint={typo}", "only=[val]"
    )
    with pytest.raises(MissingTeacherError) as err:
        run(cfg)
    assert str(err.value).startswith(f"teacher.checkpoint={typo} does not exist; fix the path")
    assert "\n" not in str(err.value)
    assert not typo.exists() and not (tmp_path / "shards").exists()


@pytest.mark.slow  # trains a teacher
def test_default_cache_path_trains_and_caches_the_teacher(digit_root, tmp_path):
    cfg = _folder_build(digit_root, tmp_path, *TRAINABLE, "only=[val]")
    run(cfg)
    cached = tmp_path / "cache" / "teachers" / "folder-resnet50.safetensors"
    assert cfg.teacher.checkpoint == cfg.teacher.cache_path == str(cached)
    assert read_teacher_metadata(cached)["spec"] == "timm:resnet10t"


def _imagenet_build(tmp_path: Path, *overrides: str):
    return _compose(
        "build",
        ["dataset=imagenet", *SMALL, f"out_dir={tmp_path / 'shards'}", *overrides],
    )


def test_imagenet_without_imagenet_root_says_which_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("IMAGENET_ROOT", raising=False)
    monkeypatch.delenv("EXTRA_POOL", raising=False)
    with pytest.raises(SourceError) as err:
        run(_imagenet_build(tmp_path))
    msg = "dataset=imagenet needs IMAGENET_ROOT=/path/to/imagenet (train/ and val/ inside)"
    assert str(err.value).startswith(msg)


def test_imagenet_without_extra_pool_names_the_variable_and_the_knob(
    monkeypatch, tmp_path, digit_root, project_teacher
):
    monkeypatch.setenv("IMAGENET_ROOT", str(digit_root))
    monkeypatch.delenv("EXTRA_POOL", raising=False)
    teacher = f"teacher.checkpoint={project_teacher}"
    with pytest.raises(SourceError, match=r"needs EXTRA_POOL=.*data\.train_sets\.extra=0"):
        run(_imagenet_build(tmp_path, teacher))


@pytest.mark.slow  # builds every imagenet set but extra
def test_imagenet_without_extra_pool_builds_with_the_knob_the_error_names(
    monkeypatch, tmp_path, digit_root, project_teacher
):
    monkeypatch.setenv("IMAGENET_ROOT", str(digit_root))
    monkeypatch.delenv("EXTRA_POOL", raising=False)
    teacher = f"teacher.checkpoint={project_teacher}"
    reports = run(_imagenet_build(tmp_path, teacher, "data.train_sets.extra=0"))
    assert {r.name for r in reports} == {"randaug", "mixup", "val", "raw"}


def test_folder_name_names_the_shards_and_the_cached_teacher(tmp_path):
    built = _compose("build", ["dataset=folder", "data_root=/x", "folder_name=cats"])
    assert built.out_dir.endswith("shards/cats")
    assert built.teacher.checkpoint == built.teacher.cache_path
    assert built.teacher.cache_path.endswith("teachers/cats-resnet50.safetensors")
    train = _compose(
        "train",
        ["+student=mnv4_conv_s", "dataset=folder", "data_root=/x", "folder_name=cats"]
        + [f"paths.output_dir={tmp_path}"],
    )
    assert train.data.root == built.out_dir and train.dataset_name == "cats"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["dataset=folder", "data_root=/x", "teacher.checkpoint=/nope/t.safetensors"],
            "error: teacher.checkpoint=/nope/t.safetensors does not exist; fix the path",
        ),
        (["dataset=imagenet"], "error: dataset=imagenet needs IMAGENET_ROOT=/path/to/imagenet"),
        (["dataset=folder"], "error: data_root=... must be set"),
    ],
    ids=["mistyped-checkpoint", "no-IMAGENET_ROOT", "no-data_root"],
)
def test_build_cli_config_mistakes_are_one_line_errors(overrides, message, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("IMAGENET_ROOT", "EXTRA_POOL")}
    out = subprocess.run(
        [sys.executable, "-m", "data.build", *overrides, f"hydra.run.dir={tmp_path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode != 0
    assert out.stderr.strip().splitlines() == [out.stderr.strip()]  # one line, no traceback
    assert out.stderr.startswith(message), out.stderr[-2000:]
