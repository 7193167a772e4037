"""The ONNX and ExecuTorch adapters on real files: fp32 logits match PyTorch, int8 runs and is
smaller, metadata travels with the file, the registry names its runtimes, a missing package
names the extra, and a rejected export leaves nothing behind."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import students
from students.runtimes import RUNTIMES, get_runtime, parse_runtimes
from students.runtimes.base import MOBILE_EXTRA, ExportRejected, MissingRuntime

RES = 32  # digits size: Conv-S ends at 1x1, the smallest input the students take
META = {"student": "mnv4_conv_s", "num_classes": "5", "weights": "random-init"}


@pytest.fixture(scope="module")
def student() -> nn.Module:
    torch.manual_seed(0)
    return students.create_model("mnv4_conv_s", num_classes=5).eval()


@pytest.fixture(scope="module")
def views() -> torch.Tensor:
    return torch.randn(48, 3, RES, RES, generator=torch.Generator().manual_seed(1))


def _logits(runtime, path: Path, x: torch.Tensor, threads: int = 1) -> np.ndarray:
    predict = runtime.load(path, threads)
    return np.concatenate([predict(v.numpy()) for v in x.split(1)])


def _close(got: np.ndarray, ref: np.ndarray, atol: float = 1e-4) -> None:
    scale = max(1.0, float(np.abs(ref).max()))  # untrained logits are large: scale the limit
    assert np.abs(got - ref).max() <= atol * scale


def test_registry_names_every_runtime_and_refuses_a_typo():
    assert set(RUNTIMES) == {"onnx", "executorch", "litert"}
    assert get_runtime("onnx").suffix == ".onnx"
    assert get_runtime("executorch").suffix == ".pte"
    with pytest.raises(ValueError, match="unknown runtime 'tflite'; choose from onnx, executorch"):
        get_runtime("tflite")
    assert parse_runtimes("onnx, executorch,onnx") == ["onnx", "executorch"]
    with pytest.raises(ValueError, match="unknown runtime 'coreml'"):
        parse_runtimes("onnx,coreml")


@pytest.mark.parametrize("name,module", [("onnx", "onnxruntime"), ("executorch", "executorch")])
def test_a_missing_package_is_one_line_naming_the_extra(name, module, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # import of it now raises ImportError
    with pytest.raises(MissingRuntime) as e:
        get_runtime(name).check()
    assert MOBILE_EXTRA in str(e.value) and "\n" not in str(e.value)


@pytest.mark.slow
def test_onnx_fp32_matches_pytorch_and_int8_is_smaller(student, views, tmp_path):
    import onnxruntime as ort

    rt = get_runtime("onnx")
    fp32 = rt.export(student, tmp_path / "s.onnx", RES, META)
    int8 = rt.export(student, tmp_path / "s_int8.onnx", RES, META, calibration=views[:32])
    ref = student(views[32:]).detach().numpy()
    _close(_logits(rt, fp32, views[32:]), ref)
    got8 = _logits(rt, int8, views[32:], threads=2)
    assert got8.shape == ref.shape and np.isfinite(got8).all()
    assert int8.stat().st_size < 0.5 * fp32.stat().st_size
    for path, precision in ((fp32, "fp32"), (int8, "int8")):
        meta = ort.InferenceSession(str(path)).get_modelmeta().custom_metadata_map
        assert meta["student"] == "mnv4_conv_s" and meta["precision"] == precision
        assert int(meta["opset"]) >= 18
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.onnx", "s_int8.onnx"]


@pytest.mark.slow
def test_executorch_fp32_matches_pytorch_and_int8_is_smaller(student, views, tmp_path):
    from students.runtimes.executorch import read_pte_meta

    rt = get_runtime("executorch")
    fp32 = rt.export(student, tmp_path / "s.pte", RES, META)
    int8 = rt.export(student, tmp_path / "s_int8.pte", RES, META, calibration=views[:32])
    ref = student(views[32:]).detach().numpy()
    _close(_logits(rt, fp32, views[32:]), ref)
    got8 = _logits(rt, int8, views[32:], threads=2)
    assert got8.shape == ref.shape and np.isfinite(got8).all()
    assert int8.stat().st_size < 0.5 * fp32.stat().st_size
    assert read_pte_meta(fp32) == {**META, "precision": "fp32", "runtime": "executorch"}
    assert read_pte_meta(int8)["precision"] == "int8"
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["s.pte", "s.pte.json", "s_int8.pte", "s_int8.pte.json"]


class _DataDependent(nn.Module):
    """Control flow on a tensor's value: torch.export cannot trace it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if x.sum() > 0 else x


@pytest.mark.slow  # imports ExecuTorch and tries to lower
def test_save_pte_rejects_what_it_cannot_lower_and_leaves_nothing(tmp_path):
    from students.runtimes.executorch import save_pte

    with pytest.raises(ExportRejected, match="ExecuTorch could not lower bad.pte"):
        save_pte(_DataDependent(), torch.randn(1, 3, 8, 8), tmp_path / "bad.pte", {"a": "b"})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # ExecuTorch lowering
def test_save_pte_lowers_a_float_module_with_its_sidecar(tmp_path):
    """``save_pte`` is also the QAT path's writer: any exportable module, fixed input shape."""
    from students.runtimes.executorch import ExecuTorch, read_pte_meta, save_pte

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    x = torch.randn(1, 3, 8, 8)
    path = save_pte(net.eval(), x, tmp_path / "tiny.pte", {"k": "v"})
    got = ExecuTorch().load(path, 1)(x.numpy())
    np.testing.assert_allclose(got, net(x).detach().numpy(), atol=1e-5)
    assert json.loads((tmp_path / "tiny.pte.json").read_text()) == read_pte_meta(path)
    assert read_pte_meta(path)["k"] == "v"


@pytest.mark.slow  # ExecuTorch lowering
def test_executorch_files_loaded_with_different_thread_counts_can_take_turns(tmp_path):
    """The thread knob resets a process-wide pool that loaded methods point into: running a
    method loaded before a reset crashed the process (how the table times 1 and 2 threads)."""
    from students.runtimes.executorch import ExecuTorch, save_pte

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    x = torch.randn(1, 3, 32, 32)
    path = save_pte(net.eval(), x, tmp_path / "tiny.pte", {"k": "v"})
    runtime = ExecuTorch()
    one, two = runtime.load(path, 1), runtime.load(path, 2)
    ref = net(x).detach().numpy()
    for _ in range(20):
        for predict in (one, two):
            np.testing.assert_allclose(predict(x.numpy()), ref, atol=1e-5)
