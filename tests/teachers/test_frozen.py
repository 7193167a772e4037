"""A teacher never trains by accident: eval mode, no gradients, untouched weights and statistics."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import students
from teachers import FrozenTeacher, create_teacher


# the fast tier checks the timm teacher; the slow tier the MNv4 one as well
@pytest.fixture(params=["timm", pytest.param("mnv4", marks=pytest.mark.slow)])
def teacher(request, teacher_files) -> FrozenTeacher:
    if request.param == "timm":
        return create_teacher("timm:resnet10t", checkpoint=teacher_files["timm_st"])
    return create_teacher("mnv4:mnv4_conv_s", checkpoint=teacher_files["mnv4"], num_classes=10)


class Pair(nn.Module):
    """A parent that registers both networks, as a careless LightningModule would."""

    def __init__(self, teacher: FrozenTeacher) -> None:
        super().__init__()
        self.teacher = teacher
        self.student = students.create_model("mnv4_conv_s", num_classes=10)


def test_teacher_stays_in_eval_without_gradients_after_parent_train(teacher):
    pair = Pair(teacher)
    pair.train()
    assert pair.student.training
    assert not teacher.training
    assert not any(m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.requires_grad_(True)
    assert not any(p.requires_grad for p in teacher.parameters())


def test_student_training_step_leaves_teacher_bit_identical(teacher, images):
    pair = Pair(teacher).train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    trainable = [p for p in pair.parameters() if p.requires_grad]
    assert all(any(p is q for q in pair.student.parameters()) for p in trainable)
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    for _ in range(2):
        with torch.no_grad():
            target = teacher.probs(images)
        loss = F.cross_entropy(pair.student(images), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = teacher.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN statistics
    assert any(k.endswith("running_var") for k in before)


def test_teacher_output_has_no_graph(teacher, images):
    out = teacher(images)
    assert not out.requires_grad and out.shape == (6, 10)


def test_channels_last_teacher_gives_the_same_outputs(teacher_files, images):
    plain = create_teacher("timm:resnet10t", checkpoint=teacher_files["timm_st"])
    cl = create_teacher("timm:resnet10t", checkpoint=teacher_files["timm_st"], channels_last=True)
    torch.testing.assert_close(cl(images), plain(images), atol=1e-4, rtol=1e-4)


@pytest.mark.slow  # bfloat16 convolutions are slow on CPUs without bf16 units
def test_bf16_autocast_teacher_runs_and_agrees_roughly(teacher_files, images):
    plain = create_teacher("timm:resnet10t", checkpoint=teacher_files["timm_st"])
    bf16 = create_teacher(
        "timm:resnet10t", checkpoint=teacher_files["timm_st"], autocast_dtype=torch.bfloat16
    )
    out = bf16.probs(images)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, plain.probs(images), atol=0.05, rtol=0.1)


def test_probs_and_pre_logits_match_the_separate_outputs(teacher, images):
    """Feature distillation takes both from one forward; they must be what each alone gives."""
    probs, pre = teacher.probs_and_pre_logits(images, temperature=2.0)
    torch.testing.assert_close(probs, teacher.probs(images, 2.0))
    member = teacher.members[0]
    x = teacher._member_input(teacher.preprocessing, images)
    with torch.no_grad():
        expected = member.forward_head(member.forward_features(x), pre_logits=True)
    torch.testing.assert_close(pre, expected)
    assert pre.shape == (6, teacher.pre_logits_dim())
