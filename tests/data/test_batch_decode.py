"""``data.decode=gpu``: workers pass JPEG bytes, the device decodes each batch (on the CPU here,
with the same batch decode function the GPU runs; nvJPEG itself needs a CUDA machine)."""

from __future__ import annotations

import io
import json
import random
import sys

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from common.images import decode_jpeg_hwc
from data.batch_decode import (
    decode_batch,
    decode_jpegs,
    jpeg_decoder,
    jpeg_problem,
    pack_jpegs,
    unpack_jpegs,
)
from data.datamodule import DistillDataModule
from data.shards import write_set_json
from data.stream import collate, train_pipeline, val_pipeline
from distill.config import module_kwargs
from distill.module import DistillModule
from tests.helpers import read_samples, write_set

SIZE = 16


def _jpeg(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _broken_jpeg(arr: np.ndarray) -> bytes:
    """Whole markers (start and end), garbage between: only a real decode finds it."""
    good = _jpeg(arr)
    return good[:200] + bytes(len(good) - 202) + good[-2:]


def _image(seed: int, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)


def test_workers_refuse_what_is_not_a_whole_jpeg_without_decoding():
    assert jpeg_problem(_jpeg(_image(0))) is None
    assert "PNG" in jpeg_problem(_png(_image(0)))
    assert "truncated" in jpeg_problem(_jpeg(_image(0))[:-40])
    assert "not a JPEG" in jpeg_problem(b"")


def test_packed_bytes_unpack_to_the_same_images():
    blobs = [_jpeg(_image(i)) for i in range(3)]
    data, offsets = pack_jpegs(blobs)
    assert [bytes(t.numpy()) for t in unpack_jpegs(data, offsets)] == blobs


@pytest.mark.parametrize("backend", ["torchcodec", "torchvision"])
def test_batch_decode_equals_the_worker_decoder_and_names_each_bad_image(backend, monkeypatch):
    if backend == "torchvision":  # the fallback where TorchCodec cannot load (another torch)
        for name in ("torchcodec", "torchcodec.decoders"):
            monkeypatch.setitem(sys.modules, name, None)
    jpeg_decoder.cache_clear()
    try:
        assert jpeg_decoder()[0] == backend
        blobs = [_jpeg(_image(0)), _broken_jpeg(_image(1)), _jpeg(_image(2, 24)), _jpeg(_image(3))]
        images, kept, bad = decode_jpegs(
            [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs],
            torch.device("cpu"),
        )
    finally:
        jpeg_decoder.cache_clear()
    assert kept == [0, 3] and set(bad) == {1, 2}
    assert "(3, 24, 24)" in bad[2] or "24, 24" in bad[2]
    for row, i in zip(images, kept, strict=True):  # the very pixels the CPU path trains on
        assert torch.equal(row, decode_jpeg_hwc(blobs[i]).permute(2, 0, 1))


def test_decode_batch_drops_bad_rows_from_every_per_sample_entry():
    jpegs = [_jpeg(_image(0)), _broken_jpeg(_image(1)), _jpeg(_image(2))]
    samples = [
        {
            "jpeg": b,
            "flip": i == 2,
            "label": i,
            "source": 0,
            "url": "s.tar",
            "key": f"k{i}",
            "soft": torch.full((10,), float(i)),
            "skipped": [],
        }
        for i, b in enumerate(jpegs)
    ]
    rendered = {**samples[0], "image": torch.zeros(SIZE, SIZE, 3, dtype=torch.uint8), "key": "r"}
    del rendered["jpeg"], rendered["flip"]
    batch = decode_batch(
        collate([samples[0], rendered, samples[1], samples[2]]), torch.device("cpu")
    )
    assert batch["key"] == ["r", "k0", "k2"]  # rendered views first, then the decoded ones
    assert batch["label"].tolist() == [0, 0, 2]
    assert batch["soft"][:, 0].tolist() == [0.0, 0.0, 2.0]
    assert batch["skipped"] == [("s.tar:k1", batch["skipped"][0][1])]
    assert batch["image"].shape == (3, 3, SIZE, SIZE)
    assert torch.equal(batch["image"][2], decode_jpeg_hwc(jpegs[2]).permute(2, 0, 1).flip(-1))


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu_decode")
    write_set(root, "train", [20, 20], size=SIZE)
    write_set(root, "val", [7, 6], size=SIZE, offset=100)
    return root


def _batches(pipeline, n: int) -> list[dict]:
    it = iter(pipeline)
    return [decode_batch(next(it), torch.device("cpu")) for _ in range(n)]


def test_same_seed_same_batches_whether_workers_or_the_device_decode(sets):
    urls = sorted(str(p) for p in (sets / "train").glob("*.tar"))
    make = lambda decode: train_pipeline([urls], [1.0], 0, 1, 8, 10, seed=3, decode=decode)  # noqa: E731
    cpu, device = _batches(make("cpu"), 4), _batches(make("gpu"), 4)
    for a, b in zip(cpu, device, strict=True):
        assert a["key"] == b["key"]
        assert torch.equal(a["image"], b["image"])  # flips included
        assert torch.equal(a["soft"], b["soft"]) and torch.equal(a["label"], b["label"])


def test_validation_sees_each_sample_once_either_way(sets):
    urls = sorted(str(p) for p in (sets / "val").glob("*.tar"))
    keys = {}
    for decode in ("cpu", "gpu"):
        batches = _batches(val_pipeline(urls, 0, 1, 4, 10, True, [7, 6], decode), 4)
        keys[decode] = [k for b in batches for k in b["key"]]
    assert keys["cpu"] == keys["gpu"] and len(set(keys["gpu"])) == 13


def _damage(set_dir, kind: str) -> str:
    """Replace one sample's image in the first shard with a bad one; returns its key."""
    shard = sorted(set_dir.glob("*.tar"))[0]
    samples = read_samples(str(shard))
    key = sorted(samples)[3]
    arr = np.asarray(Image.open(io.BytesIO(samples[key]["jpg"])).convert("RGB"))
    samples[key]["jpg"] = _png(arr) if kind == "png" else _broken_jpeg(arr)
    import tarfile

    with tarfile.open(shard, "w") as tar:
        for k, members in samples.items():
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{k}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return key


@pytest.mark.slow  # a real Lightning fit
@pytest.mark.parametrize("kind", ["png", "broken"])
def test_a_real_trainer_with_device_decode_counts_bad_images_and_finishes(kind, tmp_path):
    root = tmp_path / "sets"
    write_set(root, "train", [20, 20], size=32)
    write_set(root, "val", [8], size=32, offset=100)
    bad = _damage(root / "train", kind)
    manifest = json.loads((root / "train" / "manifest.json").read_text())
    write_set_json(root / "train" / "manifest.json", manifest)
    dm = DistillDataModule(
        root,
        {"train": 1.0},
        "val",
        batch_size=8,
        num_workers=1,
        samples_per_epoch=8 * 10,
        shuffle_buffer=16,
        decode="gpu",
    )
    module = DistillModule("mnv4_conv_s", 10, mode="offline", **module_kwargs(ema={"decay": 0.9}))
    random.seed(0)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=10,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 10
    skipped = module.skipped_summary()
    assert skipped["count"] >= 1
    assert any(bad in where for where, _ in skipped["first"])
    assert "val/top1" in trainer.callback_metrics
