"""The one render path (data/render.py, data/randaug.py): exact integer kernels with the
semantics of torchvision's RandAugment and of a bilinear crop-and-resize."""

from __future__ import annotations

import io
import random

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from data.randaug import OPS, SIGNED, RandAugment, apply_op, magnitude
from data.render import BadRecipe, blend, crop_resize, decode_source, mix


def _photo(size: int, seed: int = 0) -> np.ndarray:
    """A smooth colour field with texture (JPEG-like content, not noise)."""
    rng = np.random.default_rng(seed)
    low = rng.random((4, 4, 3)).astype(np.float32)
    img = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
    img += 0.05 * rng.standard_normal((size, size, 3)).astype(np.float32)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def _torchvision_pil(img: np.ndarray, name: str, signed_bin: int) -> np.ndarray:
    """torchvision's RandAugment op on a PIL image (the kernels the loader used before)."""
    tv = v2.RandAugment(2, 9)
    mag = magnitude(name, signed_bin, *img.shape[:2])
    out = tv._apply_image_or_video_transform(
        Image.fromarray(img), name, mag, interpolation=tv.interpolation, fill=tv._fill
    )
    return np.asarray(out)


@pytest.mark.parametrize("name", OPS)
def test_each_randaugment_op_matches_torchvisions_pil_kernel_up_to_rounding(name):
    img = (_photo(48) * 0.6 + 30).astype(np.uint8)  # not the full range: autocontrast acts
    for signed_bin in (9, -9) if name in SIGNED else (9,):
        ours = apply_op(img, name, signed_bin)
        ref = _torchvision_pil(img, name, signed_bin)
        assert ours.shape == img.shape and ours.dtype == np.uint8
        diff = np.abs(ours.astype(int) - ref.astype(int))
        if name == "Rotate":  # nearest sampling at a few boundary positions may differ
            assert (diff > 0).mean() < 0.01, (name, signed_bin)
        else:  # colour blends round once where PIL truncates: at most 2 levels
            assert diff.max() <= 2, (name, signed_bin, diff.max())
        if name != "Identity":
            assert not np.array_equal(ours, img), (name, signed_bin)  # the op did something


def test_magnitudes_follow_torchvision_and_the_sign_of_the_bin():
    tv_space = v2.RandAugment._AUGMENTATION_SPACE
    for name in OPS:
        values = tv_space[name][0](31, 48, 64)
        if values is None:
            continue
        for b in (0, 5, 9, 30):
            assert magnitude(name, b, 48, 64) == pytest.approx(float(values[b]), abs=1e-5)
            if name in SIGNED and b:
                assert magnitude(name, -b, 48, 64) == -magnitude(name, b, 48, 64)


def test_randaugment_draws_are_replayed_and_bad_records_refused():
    ra = RandAugment(2, 9)
    ops = ra.draw(random.Random(3))
    assert ops == RandAugment(2, 9).draw(random.Random(3)) and len(ops) == 2
    img = _photo(32)
    assert np.array_equal(ra.apply(img, ops), ra.apply(img.copy(), ops))
    with pytest.raises(BadRecipe, match="op 14 unknown"):
        ra.apply(img, [[14, 9]])
    with pytest.raises(BadRecipe, match="bin 31"):
        ra.apply(img, [[1, 31]])


def test_crop_resize_is_a_bilinear_crop_on_rgb_and_rgba_alike():
    img = _photo(64)
    rgba = cv2.cvtColor(img, cv2.COLOR_RGB2RGBA)
    box = [5, 7, 40, 30]
    out = crop_resize(img, box, 48)
    assert out.shape == (48, 48, 3) and np.array_equal(out, crop_resize(rgba, box, 48))
    ref = TF.resized_crop(torch.from_numpy(img).permute(2, 0, 1), *box, [48, 48], antialias=False)
    assert np.abs(out.astype(int) - ref.permute(1, 2, 0).numpy().astype(int)).max() <= 1
    assert np.array_equal(crop_resize(img, [3, 4, 48, 48], 48), img[3:51, 4:52])


def test_a_crop_twice_the_output_is_halved_exactly_first():
    img = _photo(64)
    halves = ((img.reshape(32, 2, 32, 2, 3).astype(int).sum(axis=(1, 3)) + 2) >> 2).astype(np.uint8)
    assert np.array_equal(crop_resize(img, [0, 0, 64, 64], 32), halves)


@pytest.mark.parametrize("box", [[-1, 0, 8, 8], [0, 0, 65, 8], [0, 60, 8, 8], [0, 0, 0, 8]])
def test_a_box_outside_the_image_is_a_bad_recipe(box):
    with pytest.raises(BadRecipe, match="crop box"):
        crop_resize(_photo(64), box, 32)


def test_mix_and_blend_round_the_exact_weighted_sum():
    a, b = _photo(32, 1), _photo(32, 2)
    assert np.array_equal(mix(a, b, 1.0), a)
    half = (a.astype(int) + b.astype(int) + 1) // 2
    assert np.array_equal(mix(a, b, 0.5), half)
    exact = 0.7 * a + 0.3 * b
    assert np.abs(mix(a, b, 0.7) - exact).max() <= 0.5 + 255 / 512
    blended = blend(a, b, 1.6)
    exact = np.clip(1.6 * a.astype(float) - 0.6 * b, 0, 255)
    assert np.abs(blended - exact).max() <= 0.5 + 255 / 256
    with pytest.raises(ValueError, match="blend factor"):
        blend(a, b, 2.5)


def test_sources_decode_to_rgba_with_the_rgb_of_the_jpeg():
    buf = io.BytesIO()
    Image.fromarray(_photo(40)).save(buf, format="JPEG", quality=90)
    rgba = decode_source(buf.getvalue())
    rgb = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    assert rgba.shape == (40, 40, 4) and (rgba[..., 3] == 255).all()
    assert np.abs(rgba[..., :3].astype(int) - rgb.astype(int)).max() <= 1  # libjpeg-turbo both
    png = io.BytesIO()
    Image.fromarray(_photo(12)).save(png, format="PNG")
    assert np.array_equal(decode_source(png.getvalue())[..., :3], _photo(12))
