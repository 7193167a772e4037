"""A teacher checkpoint that is refused (a pickle that would run code, a safetensors header that
claims 10 GB, another architecture's weights) ends both apps with one line naming the file,
before any shard is written, and nothing in it runs."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from distill.app import run
from distill.cli_checks import UsageError
from tests.helpers import CodeRunningPickle, run_module

from .conftest import compose_train


def refused_checkpoint(kind: str, tmp_path: Path) -> Path:
    if kind == "code":
        path = tmp_path / "evil.pth"
        torch.save({"fc.weight": CodeRunningPickle(str(tmp_path / "pwned"))}, path)
    elif kind == "huge":
        path = tmp_path / "huge.safetensors"
        entry = {"dtype": "F32", "shape": [2_500_000_000], "data_offsets": [0, 10_000_000_000]}
        header = json.dumps({"fc.weight": entry}).encode()
        path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(64))
    else:
        path = tmp_path / "other.safetensors"
        save_file({"head.weight": torch.zeros(10, 8)}, str(path))
    return path


@pytest.mark.parametrize(
    "kind, message",
    [
        ("code", "weights_only=True rejected it"),
        ("huge", "cannot read checkpoint"),
        ("other", "does not fit timm:resnet10t"),
    ],
)
def test_distill_refuses_a_teacher_checkpoint_in_one_line_before_building(
    kind, message, tmp_path, env_no_wandb
):
    ckpt = refused_checkpoint(kind, tmp_path)
    cfg = compose_train(
        ["+student=mnv4_conv_s", f"paths.cache={tmp_path / 'cache'}", f"teacher.checkpoint={ckpt}"],
        tmp_path / "out",
    )
    with pytest.raises(UsageError) as err:
        run(cfg)
    text = str(err.value.code)
    assert text.startswith("error: ") and "\n" not in text, text
    assert str(ckpt) in text and message in text, text
    assert not list((tmp_path / "cache").rglob("*.tar")) and not (tmp_path / "pwned").exists()


def test_online_distillation_refuses_a_teacher_checkpoint_in_one_line(
    tiny_cache, tmp_path, env_no_wandb
):
    ckpt = refused_checkpoint("code", tmp_path)
    cfg = compose_train(
        ["+student=mnv4_conv_s", *tiny_cache, "mode=online", f"teacher.checkpoint={ckpt}"],
        tmp_path / "out",
    )
    with pytest.raises(UsageError) as err:
        run(cfg)
    text = str(err.value.code)
    assert text.startswith(f"error: refused to load {ckpt}") and "\n" not in text, text
    assert not (tmp_path / "pwned").exists()


@pytest.mark.slow  # a fresh interpreter
def test_data_build_refuses_a_teacher_checkpoint_in_one_line(tmp_path):
    ckpt = refused_checkpoint("huge", tmp_path)
    out = run_module(
        "data.build",
        [
            f"teacher.checkpoint={ckpt}",
            f"paths.cache={tmp_path / 'cache'}",
            f"hydra.run.dir={tmp_path / 'hydra'}",
            "build.progress=false",
        ],
        timeout=300,
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"cannot read checkpoint {ckpt}" in errors[0], out.stderr
    assert not list(tmp_path.rglob("*.tar"))
