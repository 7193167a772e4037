"""``python -m teachers.train --data digits`` splits the digits as the distillation dataset does.

A teacher trained by the documented command must not have seen the validation images that
distillation reports on: it trains on the dataset's labelled split (what the app's own teacher
trains on) and reports on the dataset's val split.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from common.digits import DIGIT_FRACTIONS, load_digits_images
from data.sources import DigitsSource
from teachers.train import _load_data

CONF = Path(__file__).resolve().parents[2] / "conf"
SIZE = 8  # the native size: every one of the 1,797 digits is a distinct image there


def _indices(images, where: dict[bytes, int]) -> set[int]:
    """Dataset indices of ``images``, found by their pixels (all digits differ at 8 px)."""
    return {where[x.numpy().tobytes()] for x in images}


def _dataset_split(name: str, digits) -> set[int]:
    source = DigitsSource(name, SIZE, dict(digits.fractions), digits.seed)
    return {int(item.ref) for item in source.items}


def test_cli_trains_on_the_labelled_split_and_reports_on_the_dataset_val_split():
    digits = OmegaConf.load(CONF / "dataset" / "digits.yaml").digits
    assert dict(digits.fractions) == DIGIT_FRACTIONS  # the code default is the dataset's split
    tr_x, tr_y, va_x, va_y, classes, _ = _load_data("digits", SIZE, digits.seed)
    where = {x.numpy().tobytes(): i for i, x in enumerate(load_digits_images(SIZE)[0])}
    train, val = _indices(tr_x, where), _indices(va_x, where)
    dataset_val = _dataset_split("val", digits)
    assert not train & dataset_val, f"{len(train & dataset_val)} val images in the training set"
    assert val == dataset_val
    assert train == _dataset_split("labelled", digits)
    assert len(tr_y) == len(train) and len(va_y) == len(val) and len(classes) == 10
