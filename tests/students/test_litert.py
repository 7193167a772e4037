"""The LiteRT adapter: fp32 logits match PyTorch, int8 runs and is smaller, metadata travels in
the flatbuffer, a missing package names itself, a failed conversion leaves nothing behind."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import students

# optional: LiteRT's pins conflict with wandb's (students/runtimes/base.py), so CI has no LiteRT
pytest.importorskip("litert_torch", reason="LiteRT is installed on its own, not by make install")
from students.runtimes.base import ExportRejected, MissingRuntime
from students.runtimes.litert import LiteRT, read_metadata

RES = 64
META = {"student": "mnv4_conv_s", "num_classes": "5", "weights": "random-init"}


@pytest.fixture(scope="module")
def student() -> torch.nn.Module:
    torch.manual_seed(0)
    return students.create_model("mnv4_conv_s", num_classes=5).eval()


@pytest.fixture(scope="module")
def views() -> torch.Tensor:
    return torch.randn(4, 3, RES, RES, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def fp32_file(student, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("litert") / "student.tflite"
    return LiteRT().export(student, path, RES, META)


@pytest.mark.slow
def test_fp32_logits_match_pytorch(student, views, fp32_file):
    predict = LiteRT().load(fp32_file, threads=1)
    with torch.no_grad():
        expected = student(views).numpy()
    got = predict(views.numpy())
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-3 * np.abs(expected).max(), rtol=0)


@pytest.mark.slow
def test_metadata_in_the_flatbuffer(fp32_file):
    assert read_metadata(fp32_file) == {**META, "precision": "fp32", "runtime": "litert"}
    assert not list(fp32_file.parent.glob(f".{fp32_file.name}.*tmp"))


@pytest.mark.slow
def test_int8_runs_and_is_smaller(student, views, fp32_file, tmp_path):
    path = LiteRT().export(student, tmp_path / "int8.tflite", RES, META, calibration=views)
    assert path.stat().st_size < 0.5 * fp32_file.stat().st_size
    assert read_metadata(path) == {**META, "precision": "int8", "runtime": "litert"}
    got = LiteRT().load(path, threads=2)(views.numpy())
    with torch.no_grad():
        expected = student(views).numpy()
    assert got.shape == expected.shape and np.isfinite(got).all()
    # random weights: int8 can't match closely, but the logits must still track fp32's
    assert np.corrcoef(got.ravel(), expected.ravel())[0, 1] > 0.9


@pytest.mark.parametrize("module", ["litert_torch", "ai_edge_litert.interpreter"])
def test_missing_package_names_it(monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(MissingRuntime, match="litert"):
        LiteRT().check()


def test_failed_conversion_leaves_nothing(student, tmp_path, monkeypatch):
    import litert_torch

    def broken(*args, **kwargs):
        raise RuntimeError("unsupported op aten::frobnicate\nlong trace")

    monkeypatch.setattr(litert_torch, "convert", broken)
    path = tmp_path / "student.tflite"
    with pytest.raises(ExportRejected, match="frobnicate") as info:
        LiteRT().export(student, path, RES, META)
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []
