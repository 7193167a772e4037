"""Export and compile: ONNX (checked in onnxruntime), safetensors, torch.compile in place."""

from __future__ import annotations

import pytest
import torch

import students
from students.export import export_onnx, save_safetensors
from testkit.models import randomize_like_trained


@pytest.mark.slow
@pytest.mark.parametrize("name", students.list_models())
def test_onnx_export_with_dynamic_hw_matches_pytorch_in_onnxruntime(name, tmp_path):
    torch.manual_seed(0)
    model = students.create_model(name)
    res = model.default_resolution
    randomize_like_trained(model, res)
    path = tmp_path / f"{name}.onnx"
    result = export_onnx(model, path, res, atol=1e-4)
    assert path.is_file() and result.max_abs_diff <= 1e-4
    assert result.dynamic_hw, f"{name}: H/W fell back to static"  # checked at res+32 x res+64
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.slow  # a randomised hybrid: seconds
def test_safetensors_round_trip(tmp_path):
    model = randomize_like_trained(students.create_model("mnv4_hybrid_m"), 64)
    path = save_safetensors(model, tmp_path / "hybrid_m.safetensors")
    again = students.create_model("mnv4_hybrid_m", checkpoint=path).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x), atol=0, rtol=0)


@pytest.mark.slow
def test_compile_in_place_keeps_state_dict_keys_and_outputs():
    model = randomize_like_trained(students.create_model("mnv4_conv_s"), 64)
    keys = list(model.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        eager = model(x)
        model.compile()
        compiled = model(x)
    assert list(model.state_dict()) == keys
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-4)
