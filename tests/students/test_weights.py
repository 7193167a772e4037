"""Loading weights: timm layout in, strict keys, safe pickles, clear errors naming the problem."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

import students
from students import CheckpointError
from tests.helpers import CodeRunningPickle


@pytest.fixture(scope="module")
def conv_s_timm(timm_models):
    return timm_models["mnv4_conv_s"]


def _logits(model, x):
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize("fmt", [pytest.param("pth", marks=pytest.mark.slow), "safetensors"])
def test_timm_checkpoint_loads_and_reproduces_timm_logits(tmp_path, conv_s_timm, fmt):
    path = tmp_path / f"timm_conv_s.{fmt}"
    state = conv_s_timm.state_dict()
    if fmt == "pth":
        torch.save(state, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    model = students.create_model("mnv4_conv_s", checkpoint=path)
    x = torch.randn(2, 3, 224, 224)
    torch.testing.assert_close(_logits(model, x), _logits(conv_s_timm, x), atol=1e-4, rtol=0)


def test_wrapped_lightning_style_checkpoint_loads(tmp_path, conv_s_timm):
    path = tmp_path / "wrapped.ckpt"
    wrapped = {f"student._orig_mod.{k}": v for k, v in conv_s_timm.state_dict().items()}
    torch.save({"state_dict": wrapped, "epoch": 3}, path)
    model = students.create_model("mnv4_conv_s", checkpoint=path)
    torch.testing.assert_close(model.conv_stem.weight, conv_s_timm.conv_stem.weight)


def test_convert_timm_state_dict_drops_counters_and_keeps_every_weight(conv_s_timm):
    state = conv_s_timm.state_dict()
    converted = students.convert_timm_state_dict({f"module.{k}": v for k, v in state.items()})
    assert not any(k.endswith("num_batches_tracked") for k in converted)
    expected = {k for k in state if not k.endswith("num_batches_tracked")}
    assert set(converted) == expected


def test_wrong_architecture_lists_missing_unexpected_and_shape_keys(tmp_path, conv_s_timm):
    path = tmp_path / "conv_s.pth"
    torch.save(conv_s_timm.state_dict(), path)
    with pytest.raises(CheckpointError) as err:
        students.create_model("mnv4_conv_m", checkpoint=path)
    msg = str(err.value)
    assert "conv_s.pth" in msg and "mnv4_conv_m" in msg
    assert "missing keys" in msg and "unexpected keys" in msg and "shape keys" in msg
    assert "blocks.0.0.conv_exp.weight" in msg  # a Conv-M key that Conv-S lacks


def test_class_count_mismatch_is_named(tmp_path, conv_s_timm):
    path = tmp_path / "conv_s.safetensors"
    save_file({k: v.contiguous() for k, v in conv_s_timm.state_dict().items()}, str(path))
    with pytest.raises(
        CheckpointError, match=r"classifier.weight: checkpoint \(1000, 1280\).*class count"
    ):
        students.create_model("mnv4_conv_s", num_classes=10, checkpoint=path)


def test_truncated_checkpoint_names_the_file(tmp_path, conv_s_timm):
    path = tmp_path / "truncated.pth"
    torch.save(conv_s_timm.state_dict(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.pth"):
        students.create_model("mnv4_conv_s", checkpoint=path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickle_that_runs_code_is_refused_and_never_runs(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"conv_stem.weight": CodeRunningPickle(str(target))}, f)
    with pytest.raises(CheckpointError, match="evil.pth.*weights_only"):
        students.create_model("mnv4_conv_s", checkpoint=path)
    assert not target.exists()


def test_not_a_student_checkpoint(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(CheckpointError, match="not a MobileNetV4 state_dict.*fc.weight"):
        students.create_model("mnv4_conv_s", checkpoint=path)


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found: .*nope.pth"):
        students.create_model("mnv4_conv_s", checkpoint=tmp_path / "nope.pth")
