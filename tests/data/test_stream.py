"""Streaming shard sets: mixing weights, DDP rank balance, exactly-once validation, bad shards."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from common.images import decode_jpeg
from data.config import OnlineConfig
from data.datamodule import DistillDataModule
from data.shards import read_manifest
from tests.helpers import read_samples


@pytest.mark.slow  # built: five variant sets labelled by a teacher
def test_mixing_1_1_2_gives_25_25_50_percent(built):
    out, _, _ = built
    dm = DistillDataModule(
        out,
        {"randaug": 1, "mixup": 1, "extra": 2},
        "val",
        batch_size=16,
        num_workers=2,
        samples_per_epoch=16 * 250,
    )
    counts = Counter()
    batches = 0
    for batch in dm.train_dataloader():
        counts.update(batch["source"].tolist())
        batches += 1
        assert batch["soft"].shape == (16, 10) and batch["image"].dtype == torch.uint8
    assert batches == len(dm.train_dataloader()) == 250
    total = sum(counts.values())
    for source, share in ((0, 0.25), (1, 0.25), (2, 0.5)):
        assert abs(counts[source] / total - share) < 0.03, counts


@pytest.mark.slow  # built: five variant sets labelled by a teacher
def test_training_images_are_the_stored_images_or_their_mirror_only(built):
    out, _, _ = built
    stored = {}
    for url in read_manifest(out / "mixup").urls():
        for key, s in read_samples(url).items():
            stored[key] = decode_jpeg(s["jpg"])
    dm = DistillDataModule(
        out, {"mixup": 1}, "val", batch_size=8, num_workers=0, samples_per_epoch=160
    )
    flipped = 0
    for batch in dm.train_dataloader():
        for key, img in zip(batch["key"], batch["image"], strict=True):
            if torch.equal(img, stored[key]):
                continue
            assert torch.equal(img, stored[key].flip(-1))
            flipped += 1
    assert 0 < flipped < 160


@pytest.mark.slow  # built: five variant sets labelled by a teacher
def test_online_mode_crops_raw_images_afresh(built):
    out, _, _ = built
    n = read_manifest(out / "val").num_samples
    dm = DistillDataModule(
        out,
        {},
        "val",
        batch_size=8,
        num_workers=0,
        samples_per_epoch=8 * (3 * n // 8),  # every image drawn about three times
        mode="online",
        online=OnlineConfig(set="val", crop_size=24, crop_scale=[0.3, 1.0]),
    )
    first: dict[str, torch.Tensor] = {}
    repeats = fresh = 0
    for batch in dm.train_dataloader():
        assert batch["image"].shape == (8, 3, 24, 24) and "soft" not in batch
        for key, img in zip(batch["key"], batch["image"], strict=True):
            if key in first:
                repeats += 1
                fresh += not torch.equal(first[key], img)
            first.setdefault(key, img)
    # a new crop each time an image comes round (rarely two draws give the same crop)
    assert repeats > 0 and fresh >= 0.8 * repeats, (fresh, repeats)


def _broken_copy(built_dir: Path, dst: Path) -> tuple[Path, int]:
    """The val set copied with one shard truncated and one sample stripped of its image."""
    src = built_dir / "val"
    shutil.copytree(src, dst)
    m = read_manifest(dst)
    names = sorted(m.shard_counts)
    data = (dst / names[0]).read_bytes()
    (dst / names[0]).write_bytes(data[: len(data) // 2])
    with tarfile.open(dst / names[1]) as tar:
        members = [(t, tar.extractfile(t).read()) for t in tar]
    victim = members[0][0].name.partition(".")[0]
    with tarfile.open(dst / names[1], "w") as tar:
        for info, payload in members:
            if info.name != f"{victim}.jpg":
                tar.addfile(info, io.BytesIO(payload))
    intact = sum(c for n, c in m.shard_counts.items() if n not in names[:2])
    return dst, intact + m.shard_counts[names[1]] - 1


@pytest.mark.slow  # built: five variant sets labelled by a teacher
def test_truncated_shard_and_missing_key_are_skipped_and_counted_mid_epoch(built, tmp_path):
    out, _, _ = built
    _, good_in_other_shards = _broken_copy(out, tmp_path / "val")
    dm = DistillDataModule(tmp_path, {"val": 1}, "val", batch_size=4, num_workers=0)
    seen, skipped = 0, []
    for batch in dm.val_dataloader():
        seen += len(batch["key"])
        skipped += batch["skipped"]
    assert any(reason == "sample missing a key: jpg" for _, reason in skipped), skipped
    assert any(where == "shard" for where, _ in skipped), skipped  # the truncated tar
    assert seen >= good_in_other_shards  # the truncated shard's readable head may also count


class _Probe(L.LightningModule):
    """Records what each DDP rank streamed; trains a tiny head so DDP has gradients to sync."""

    def __init__(self, out: str) -> None:
        super().__init__()
        self.head = nn.Linear(3, 10)
        self.out = out
        self.urls: list[str] = []
        self.val_keys: list[str] = []
        self.batches = 0

    def training_step(self, batch, batch_idx):
        self.batches += 1
        self.urls += batch["url"]
        x = batch["image"].float().mean((2, 3))
        return F.cross_entropy(self.head(x), batch["soft"])

    def validation_step(self, batch, batch_idx):
        self.val_keys += [f"{u}:{k}" for u, k in zip(batch["url"], batch["key"], strict=True)]

    def on_train_end(self):
        record = {
            "rank": self.global_rank,
            "batches": self.batches,
            "urls": sorted(set(self.urls)),
            "val": self.val_keys,
        }
        Path(self.out, f"rank{self.global_rank}.json").write_text(json.dumps(record))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.mark.slow
def test_two_ddp_ranks_get_equal_batches_disjoint_shards_and_see_val_once(built, tmp_path):
    out, _, _ = built
    mixup = read_manifest(out / "mixup")
    val = read_manifest(out / "val")
    assert len(mixup.urls()) % 2 == 1 and len(val.urls()) % 2 == 1  # uneven over two ranks
    dm = DistillDataModule(
        out, {"mixup": 1}, "val", batch_size=4, num_workers=2, samples_per_epoch=96
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        enable_model_summary=False,
    )
    trainer.fit(_Probe(str(tmp_path)), datamodule=dm)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["batches"] == r1["batches"] == 96 // (4 * 2)
    assert not set(r0["urls"]) & set(r1["urls"])
    assert set(r0["urls"]) <= set(mixup.urls()[0::2]) and set(r1["urls"]) <= set(mixup.urls()[1::2])
    keys = r0["val"] + r1["val"]
    assert len(keys) == len(set(keys)) == val.num_samples
