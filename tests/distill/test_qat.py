"""QAT distillation: the fake-quantized student learns from real stored teacher labels, the
converted module lowers to a .pte that ExecuTorch runs with the same logits."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

import students
from common.norm import IMAGENET_MEAN, IMAGENET_STD
from data.datamodule import DistillDataModule
from distill.qat import freeze_bn_stats, prepare_qat, qat_distill

from .conftest import compose_train

RES = 32  # the tiny digits sets' image size


class ConvBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


@pytest.mark.slow  # torch.export and the ExecuTorch quantizer: seconds even for a tiny module
def test_freeze_bn_stops_running_stats():
    prepared = prepare_qat(ConvBN(), 8)
    x = torch.randn(4, 3, 8, 8)

    def stats() -> list[torch.Tensor]:
        return [b.clone() for n, b in prepared.named_buffers() if "running_mean" in n]

    before = stats()
    prepared(x)
    moved = stats()
    assert any(not torch.equal(a, b) for a, b in zip(before, moved, strict=True))
    freeze_bn_stats(prepared)
    prepared(x + 1)
    assert all(torch.equal(a, b) for a, b in zip(moved, stats(), strict=True))


@pytest.mark.slow  # qat_distill exports and prepares the module before it reads a batch
def test_batches_without_teacher_labels_are_refused():
    batch = {"image": torch.zeros(2, 3, 8, 8, dtype=torch.uint8), "label": torch.zeros(2)}
    with pytest.raises(ValueError, match="teacher labels"):
        qat_distill(ConvBN(), [batch], IMAGENET_MEAN, IMAGENET_STD, 1, 1e-3, 8, progress=False)


@pytest.fixture(scope="module")
def batches(tiny_cache, tmp_path_factory) -> list[dict]:
    """Four real training batches (16 digits views each, stored teacher probabilities)."""
    out = tmp_path_factory.mktemp("qat_out")
    c = OmegaConf.to_container(
        compose_train(["+student=mnv4_conv_s", *tiny_cache], out), resolve=True
    )
    d = c["data"]
    dm = DistillDataModule(
        d["root"], d["train_sets"], "val", batch_size=16, num_workers=0,
        samples_per_epoch=64, shuffle_buffer=32,
    )  # fmt: skip
    return list(itertools.islice(dm.train_dataloader(), 4))


@pytest.fixture(scope="module")
def lowered(batches, tmp_path_factory) -> tuple:
    """QAT-distilled Conv-S (16 steps), its reference outputs on 4 views and ExecuTorch's."""
    from students.runtimes.executorch import ExecuTorch, save_pte

    torch.manual_seed(0)
    model = students.create_model("mnv4_conv_s", num_classes=batches[0]["soft"].shape[1])
    converted = qat_distill(
        model, batches, IMAGENET_MEAN, IMAGENET_STD, steps=16, lr=1e-3, resolution=RES,
        progress=False,
    )  # fmt: skip
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    x = (batches[0]["image"][:4].float() / 255 - mean) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = converted(x).numpy()
    path = save_pte(
        converted, x[:1], tmp_path_factory.mktemp("qat") / "qat.pte", {"weights": "qat"}
    )
    predict = ExecuTorch().load(path, threads=1)
    got = np.concatenate([predict(x[i : i + 1].numpy()) for i in range(len(x))])
    return converted, expected, got


@pytest.mark.slow
def test_qat_learns_and_lowers_to_executorch(batches, lowered):
    assert batches[0]["image"].dtype == torch.uint8 and "soft" in batches[0]
    converted, expected, got = lowered
    losses = converted.qat_losses
    assert len(losses) == 16 and np.mean(losses[-4:]) < np.mean(losses[:4])
    assert got.shape == expected.shape and np.isfinite(got).all()


@pytest.mark.slow
# was a strict xfail (logits correlating 0.65 with the reference graph's on an earlier install's
# views); on the 2026-12-04 install it passes with the tiny cache's teacher at 176 px and at
# 32 px alike: the earlier mismatch is not understood, and this test catches its return
def test_qat_executorch_logits_match_the_converted_graph(lowered):
    _, expected, got = lowered
    # XNNPACK's int8 kernels round differently from the reference q/dq graph, and 16 steps
    # leave near-uniform logits, so a few output quantisation steps apart is expected
    assert np.corrcoef(got.ravel(), expected.ravel())[0, 1] > 0.8
    assert np.abs(got - expected).max() < 0.5 * np.ptp(expected)
