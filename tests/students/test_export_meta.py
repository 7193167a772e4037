"""Exports that describe themselves: metadata in safetensors and ONNX, loading by metadata,
dynamic H/W in onnxruntime, the run's EMA-or-raw choice, and the ``python -m students`` CLI."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import students
from common.norm import IMAGENET_MEAN, IMAGENET_STD
from distill.config import ExportConfig, module_kwargs
from distill.export import choose_weights, export_student
from distill.module import DistillModule
from students import CheckpointError, ExportMeta, read_export_meta
from students.export import export_onnx, read_onnx_meta, save_safetensors
from testkit.models import randomize_like_trained

REPO = Path(__file__).resolve().parents[2]
CLASSES = tuple(f"class {i}" for i in range(10))
MEAN, STD = IMAGENET_MEAN, IMAGENET_STD


def _export(onnx: bool) -> ExportConfig:
    """The ``export`` section with ``onnx`` on or off (the rest as conf/train.yaml sets it)."""
    return ExportConfig(enabled=True, onnx=onnx, resolution=None, runtimes=[], int8=False)


def _meta(**changes) -> ExportMeta:
    base = dict(
        student="mnv4_conv_s",
        num_classes=10,
        resolution=64,
        weights="ema",
        mean=MEAN,
        std=STD,
        classes=CLASSES,
        val_top1=0.75,
    )
    return ExportMeta(**(base | changes))


def _ten_class_export(path: Path) -> torch.nn.Module:
    model = randomize_like_trained(students.create_model("mnv4_conv_s", num_classes=10), 64)
    save_safetensors(model, path, _meta())
    return model


def _assert_same_weights(path: Path, model: torch.nn.Module) -> None:
    """Every tensor equal; BN step counters aside, which loading skips (they hold no weights)."""
    stored = load_file(str(path))
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        torch.testing.assert_close(stored[key], value.detach().cpu(), atol=0, rtol=0)


def _module() -> DistillModule:
    """A real 10-class module whose EMA differs from the raw student."""
    torch.manual_seed(0)
    module = DistillModule("mnv4_conv_s", 10, mode="offline", **module_kwargs(ema={"decay": 0.9}))
    with torch.no_grad():
        module.student.classifier.bias.add_(1.0)
    return module


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "students", "--repeats", "1", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "2"},
    )


# -- metadata and loading -------------------------------------------------------------------
def test_safetensors_metadata_round_trip_and_load_by_metadata(tmp_path):
    path = tmp_path / "student.safetensors"
    model = _ten_class_export(path)
    assert read_export_meta(path) == _meta()
    again = students.create_model(checkpoint=path).eval()  # name and classes from the file
    assert again.spec.name == "mnv4_conv_s" and again.num_classes == 10
    same = students.create_model("mnv4_conv_s", checkpoint=path).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x), atol=0, rtol=0)
        torch.testing.assert_close(same(x), model(x), atol=0, rtol=0)


def test_metadata_contradictions_are_named(tmp_path):
    path = tmp_path / "student.safetensors"
    _ten_class_export(path)
    with pytest.raises(CheckpointError, match=r"student.safetensors.*10 classes.*num_classes=1000"):
        students.create_model("mnv4_conv_s", num_classes=1000, checkpoint=path)
    with pytest.raises(CheckpointError, match=r"student.safetensors holds mnv4_conv_s.*conv_m"):
        students.create_model("mnv4_conv_m", checkpoint=path)


def test_file_without_metadata_needs_a_name_and_reads_classes_from_the_classifier(tmp_path):
    model = students.create_model("mnv4_conv_s", num_classes=7)
    path = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    assert read_export_meta(path) is None
    with pytest.raises(CheckpointError, match="plain.safetensors has no project export metadata"):
        students.create_model(checkpoint=path)
    assert students.create_model("mnv4_conv_s", checkpoint=path).num_classes == 7


def test_invalid_metadata_names_file_and_key(tmp_path):
    model = students.create_model("mnv4_conv_s", num_classes=10)
    bad = _meta().to_strings() | {"num_classes": "ten"}
    path = save_safetensors(model, tmp_path / "bad.safetensors", bad)
    with pytest.raises(CheckpointError, match="bad.safetensors: invalid export metadata"):
        read_export_meta(path)


@pytest.mark.slow
def test_onnx_dynamic_hw_matches_pytorch_and_carries_metadata(tmp_path):
    import onnxruntime as ort

    model = randomize_like_trained(students.create_model("mnv4_conv_s", num_classes=10), 64)
    result = export_onnx(model, tmp_path / "s.onnx", 64, metadata=_meta())
    assert result.dynamic_hw and set(result.checked) == {"64x64", "96x128"}
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    for shape in [(2, 3, 64, 64), (1, 3, 96, 96), (3, 3, 64, 96)]:
        x = torch.randn(shape)
        with torch.no_grad():
            ref = model(x).numpy()
        got = session.run(None, {"images": x.numpy()})[0]
        assert got.shape == (shape[0], 10)
        assert np.abs(got - ref).max() <= 1e-4 * max(1.0, float(np.abs(ref).max())), shape
    props = session.get_modelmeta().custom_metadata_map
    assert props["weights"] == "ema" and props["dynamic_hw"] == "true"
    assert read_onnx_meta(result.path) == _meta(dynamic_hw=True)


class _FixedSize(torch.nn.Module):
    """A classifier over flattened pixels: its input size is fixed by the Linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3 * 32 * 32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


@pytest.mark.slow  # two ONNX exports
def test_model_that_cannot_vary_hw_falls_back_to_a_static_export_and_says_so(tmp_path, caplog):
    result = export_onnx(_FixedSize(), tmp_path / "fixed.onnx", 32, metadata=_meta(resolution=32))
    assert not result.dynamic_hw and set(result.checked) == {"32x32"}
    assert read_onnx_meta(result.path).dynamic_hw is False
    assert "dynamic height/width export failed" in caplog.text
    assert not list(tmp_path.glob("*.tmp"))


# -- the run's export -----------------------------------------------------------------------
def test_choose_weights_prefers_better_top1_and_ema_on_ties():
    assert choose_weights({"val/top1": 0.5, "val/ema_top1": 0.6}, True) == "ema"
    assert choose_weights({"val/top1": 0.6, "val/ema_top1": 0.5}, True) == "raw"
    assert choose_weights({"val/top1": 0.6, "val/ema_top1": 0.6}, True) == "ema"
    assert choose_weights({"val/top1": 0.6}, True) == "raw"
    assert choose_weights({"val/top1": 0.5, "val/ema_top1": 0.6}, False) == "raw"


def test_export_student_writes_raw_when_it_validates_better(tmp_path):
    module = _module()
    metrics = {"val/top1": 0.8, "val/ema_top1": 0.7}
    r = export_student(module, tmp_path, "mnv4_conv_s", _export(onnx=False), metrics, CLASSES, 64)
    assert r["exported"] == "raw" and "onnx" not in r
    assert r["safetensors"] == r["raw_safetensors"] == str(tmp_path / "mnv4_conv_s.safetensors")
    assert r["ema_safetensors"] == str(tmp_path / "mnv4_conv_s_ema.safetensors")
    _assert_same_weights(Path(r["safetensors"]), module.student)
    _assert_same_weights(Path(r["ema_safetensors"]), module.ema.module)
    meta = read_export_meta(r["safetensors"])
    assert meta.weights == "raw" and meta.val_top1 == 0.8 and meta.classes == CLASSES
    assert meta.mean == MEAN and meta.std == STD and meta.resolution == 64
    assert read_export_meta(r["ema_safetensors"]).weights == "ema"
    assert not list(tmp_path.glob("*.tmp"))


def test_exported_safetensors_have_the_mode_of_every_other_output(tmp_path):
    r = export_student(_module(), tmp_path, "mnv4_conv_s", _export(onnx=False), {}, CLASSES, 64)
    (tmp_path / "notes.txt").write_text("any other output")
    expected = stat.S_IMODE((tmp_path / "notes.txt").stat().st_mode)  # 0644 under umask 022
    modes = {stat.S_IMODE(Path(r[k]).stat().st_mode) for k in ("safetensors", "ema_safetensors")}
    assert modes == {expected}, (oct(expected), [oct(m) for m in modes])


@pytest.mark.slow
def test_export_student_exports_the_better_ema_and_leaves_the_module_as_it_was(tmp_path):
    module = _module().train()
    params = {k: (p, p.data_ptr()) for k, p in module.named_parameters()}
    metrics = {"val/top1": 0.5, "val/ema_top1": 0.7}
    r = export_student(module, tmp_path, "mnv4_conv_s", _export(onnx=True), metrics, CLASSES, 64)
    assert r["exported"] == "ema" and r["onnx_dynamic_hw"] is True
    _assert_same_weights(tmp_path / "mnv4_conv_s.safetensors", module.ema.module)
    _assert_same_weights(tmp_path / "mnv4_conv_s_raw.safetensors", module.student)
    onnx_meta = read_onnx_meta(r["onnx"])
    assert onnx_meta.weights == "ema" and onnx_meta.classes == CLASSES
    assert module.training and module.student.training and module.ema.training
    after = dict(module.named_parameters())
    assert all(after[k] is p and p.data_ptr() == ptr for k, (p, ptr) in params.items())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_export_student_keeps_the_module_on_its_device(tmp_path):
    module = _module().cuda()
    metrics = {"val/top1": 0.5, "val/ema_top1": 0.7}
    export_student(module, tmp_path, "mnv4_conv_s", _export(onnx=True), metrics, None, 64)
    assert all(p.is_cuda for p in module.parameters())
    assert module.student.training


# -- the CLI ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_export_times_only_that_student_and_says_random_init(tmp_path):
    r = _cli("--export", "mnv4_conv_s", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    others = [n for n in students.list_models() if n != "mnv4_conv_s"]
    assert "mnv4_conv_s" in r.stdout and not any(n in r.stdout for n in others), r.stdout
    assert "random init" in r.stdout
    assert read_export_meta(tmp_path / "mnv4_conv_s.safetensors").weights == "random-init"
    assert read_onnx_meta(tmp_path / "mnv4_conv_s.onnx").weights == "random-init"


@pytest.mark.slow
def test_cli_exports_the_checkpoint_it_is_given(tmp_path):
    ckpt = tmp_path / "trained.safetensors"
    model = _ten_class_export(ckpt)
    out = tmp_path / "out"
    r = _cli("--export", "mnv4_conv_s", "--checkpoint", str(ckpt), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "random init" not in r.stdout and "trained.safetensors" in r.stdout
    _assert_same_weights(out / "mnv4_conv_s.safetensors", model)
    meta = read_onnx_meta(out / "mnv4_conv_s.onnx")
    assert meta.classes == CLASSES and meta.weights == "ema" and meta.num_classes == 10


@pytest.mark.slow  # a fresh interpreter: seconds of imports
@pytest.mark.parametrize("kind", ["missing", "invalid"])
def test_cli_bad_checkpoint_is_a_clear_error_naming_the_file(tmp_path, kind):
    ckpt = tmp_path / "weights.safetensors"
    if kind == "invalid":
        ckpt.write_text("not a safetensors file")
    r = _cli("--export", "mnv4_conv_s", "--checkpoint", str(ckpt), "--out", str(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert str(ckpt) in r.stderr and "error" in r.stderr
    assert "mnv4_conv_s" not in r.stdout  # failed before timing anything
