"""Teacher weights: safe formats, refused pickles, and errors that name the problem up front."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from students import CheckpointError
from teachers import TeacherWeightsUnavailable, create_teacher
from tests.helpers import CodeRunningPickle


def test_safetensors_and_pth_give_the_same_teacher(teacher_files, images):
    a = create_teacher("timm:resnet10t", checkpoint=teacher_files["timm_st"])
    b = create_teacher("timm:resnet10t", checkpoint=teacher_files["timm_pth"])
    torch.testing.assert_close(a(images), b(images), atol=0, rtol=0)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickle_with_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "created_by_pickle"
    path = tmp_path / "teacher.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"conv1.weight": CodeRunningPickle(str(marker))}}, f)
    with pytest.raises(CheckpointError, match="refused to load .*teacher.pth"):
        create_teacher("timm:resnet10t", checkpoint=path)
    assert not marker.exists()


def test_truncated_file_is_named(tmp_path, teacher_files):
    data = Path(teacher_files["timm_st"]).read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="cut.safetensors"):
        create_teacher("timm:resnet10t", checkpoint=path)


def test_wrong_architecture_lists_keys(teacher_files):
    with pytest.raises(CheckpointError, match="does not fit timm:resnet18.*missing keys"):
        create_teacher("timm:resnet18", checkpoint=teacher_files["timm_st"], num_classes=10)


def test_class_count_mismatch_is_reported_before_work(teacher_files):
    with pytest.raises(CheckpointError, match=r"fc.weight: checkpoint \(10, 512\).*class count"):
        create_teacher("timm:resnet10t", checkpoint=teacher_files["timm_st"], num_classes=100)


def test_unknown_spec_lists_the_forms():
    with pytest.raises(ValueError, match="timm:<model>.*torchvision:<model>.*mnv4:"):
        create_teacher("resnet50")
    with pytest.raises(ValueError, match="unknown timm model"):
        create_teacher("timm:not_a_model_at_all", pretrained=False)


@pytest.mark.slow  # a fresh interpreter: seconds of imports
def test_offline_hub_says_how_to_supply_weights():
    code = (
        "from teachers import create_teacher, TeacherWeightsUnavailable\n"
        "try:\n    create_teacher('timm:resnet10t.gluon_in1k')\n"
        "except TeacherWeightsUnavailable as e:\n    print('OFFLINE-ERROR', e)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # the hub's own offline switch
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert "OFFLINE-ERROR" in out.stdout, out.stderr
    assert "checkpoint=" in out.stdout and "resnet10t.gluon_in1k" in out.stdout


def test_offline_torchvision_download_says_how_to_supply_weights(tmp_path, monkeypatch):
    # An empty cache forces a download; a dead proxy makes it fail the way an offline machine does.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    with pytest.raises(TeacherWeightsUnavailable, match="torchvision:squeezenet1_0.*checkpoint="):
        create_teacher("torchvision:squeezenet1_0")
