"""Training a teacher where none exists, on real handwritten digits, then reloading it frozen."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from common.digits import DIGIT_CLASSES, load_digits_images, stratified_split
from teachers import create_teacher, evaluate, read_teacher_metadata
from teachers.train import CLI_DEFAULTS, eval_transform, train_teacher


@pytest.mark.slow
def test_digits_teacher_trains_above_90_percent_and_reloads(tmp_path):
    images, labels = load_digits_images(32)
    split = stratified_split(labels, {"train": 0.8, "val": 0.2}, seed=0)
    tr, va = split["train"], split["val"]
    recipe = replace(
        CLI_DEFAULTS,
        image_size=32,
        epochs=8,
        batch_size=64,
        lr=3e-3,
        hflip=False,
        crop_pct=1.0,
        crop_scale=(0.6, 1.0),
        randaugment_magnitude=5,
        accelerator="cpu",
    )
    out = tmp_path / "digits_teacher.safetensors"
    result = train_teacher(
        "timm:resnet10t",
        images[tr],
        labels[tr],
        images[va],
        labels[va],
        10,
        out,
        recipe,
        classes=DIGIT_CLASSES,
    )
    assert result["top1"] >= 0.90, result
    assert out.is_file() and not list(tmp_path.glob("*.tmp"))

    meta = read_teacher_metadata(out)
    assert meta["metrics"]["top1"] == pytest.approx(result["top1"])
    teacher = create_teacher(out)
    assert teacher.info.classes == DIGIT_CLASSES and teacher.preprocessing.input_size == 32
    view = eval_transform(recipe)
    val_images = torch.stack([view(img) for img in images[va]])
    again = evaluate(teacher, [(val_images, labels[va])], 10)
    assert again["top1"] == pytest.approx(result["top1"], abs=1e-6)
    assert again["samples"] == len(va)
