"""Soft labels, ensembles, preprocessing that travels, and teachers saved by this project."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from students import CheckpointError
from teachers import (
    Preprocessing,
    build_model,
    create_teacher,
    read_teacher_metadata,
    save_teacher,
    soft_labels,
    to_model_input,
)


@pytest.fixture
def resnet(teacher_files):
    return create_teacher("timm:resnet10t", checkpoint=teacher_files["timm_st"])


def test_full_soft_labels_are_fp16_probabilities_summing_to_one(resnet, images):
    labels = soft_labels(resnet, images, batch_size=4)
    assert labels.probs.shape == (6, 10) and labels.probs.dtype == torch.float16
    assert labels.indices is None
    torch.testing.assert_close(labels.probs.float().sum(1), torch.ones(6), atol=5e-3, rtol=0)
    torch.testing.assert_close(labels.probs.float(), resnet.probs(images), atol=1e-3, rtol=0)


def test_top_k_labels_are_descending_with_their_classes(resnet, images):
    labels = soft_labels(resnet, images, top_k=3)
    assert labels.probs.shape == (6, 3) and labels.indices.shape == (6, 3)
    assert (labels.probs[:, :-1] >= labels.probs[:, 1:]).all()
    full = resnet.probs(images)
    expected = full.topk(3, dim=1)
    assert torch.equal(labels.indices.long(), expected.indices)
    torch.testing.assert_close(labels.probs.float(), expected.values, atol=1e-3, rtol=0)
    renorm = soft_labels(resnet, images, top_k=3, renormalize=True)
    torch.testing.assert_close(renorm.probs.float().sum(1), torch.ones(6), atol=5e-3, rtol=0)


def test_temperature_softens(resnet, images):
    sharp = soft_labels(resnet, images).probs.float().max(1).values
    soft = soft_labels(resnet, images, temperature=4.0).probs.float().max(1).values
    assert (soft <= sharp + 1e-3).all() and (soft < sharp).any()


@pytest.mark.slow  # eight teacher forwards at 224 px
def test_ensemble_averages_member_probabilities(teacher_files, images):
    a = create_teacher("timm:resnet10t", checkpoint=teacher_files["timm_st"])
    b = create_teacher("mnv4:mnv4_conv_s", checkpoint=teacher_files["mnv4"], num_classes=10)
    both = create_teacher(
        ["timm:resnet10t", "mnv4:mnv4_conv_s"],
        checkpoint=[teacher_files["timm_st"], teacher_files["mnv4"]],
        num_classes=10,
    )
    expected = (a.probs(images, 2.0) + b.probs(images, 2.0)) / 2
    torch.testing.assert_close(both.probs(images, 2.0), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(F.softmax(both(images), 1), (a.probs(images) + b.probs(images)) / 2)


def test_preprocessing_comes_from_timms_config_and_resizes_the_student_crop(resnet):
    prep = resnet.preprocessing
    assert prep.input_size == 224 and prep.interpolation == "bicubic"
    assert prep.mean == pytest.approx((0.485, 0.456, 0.406))
    crop = torch.rand(2, 3, 96, 96)
    x = to_model_input(crop, prep)
    assert x.shape == (2, 3, 224, 224)
    mean = torch.tensor(prep.mean).view(1, 3, 1, 1)
    std = torch.tensor(prep.std).view(1, 3, 1, 1)
    resized = F.interpolate(crop, size=(224, 224), mode="bicubic", align_corners=False)
    torch.testing.assert_close(x, (resized - mean) / std)


def test_project_checkpoint_reloads_spec_classes_preprocessing_and_outputs(tmp_path, images):
    torch.manual_seed(0)
    built = build_model("timm:resnet10t", num_classes=4, pretrained=False)
    built.classes = ["cat", "dog", "fox", "owl"]
    built.preprocessing = Preprocessing(48, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "bilinear", 1.0)
    path = save_teacher(built, "timm:resnet10t", tmp_path / "t.safetensors", {"top1": 0.5})
    teacher = create_teacher(path)
    assert teacher.info.spec == "timm:resnet10t" and teacher.info.classes == built.classes
    assert teacher.preprocessing == built.preprocessing
    assert teacher.info.metrics == {"top1": 0.5}
    built.model.eval()
    with torch.no_grad():
        expected = built.model(to_model_input(images, built.preprocessing))
    torch.testing.assert_close(teacher(images), expected, atol=0, rtol=0)
    assert read_teacher_metadata(path)["num_classes"] == 4
    with pytest.raises(ValueError, match="has 4 classes but 10 were asked for"):
        create_teacher(path, num_classes=10)


def test_bare_weights_file_is_not_mistaken_for_a_project_checkpoint(teacher_files):
    with pytest.raises(CheckpointError, match="no teacher metadata.*timm:<model>"):
        create_teacher(teacher_files["timm_st"])
    with pytest.raises(CheckpointError, match="not a teacher checkpoint written by this project"):
        create_teacher(teacher_files["timm_pth"])
