"""Every bad shard and sample a training stream meets is counted once, wherever the shuffle buffer
stands when a nominal epoch ends, with or without loader workers."""

from __future__ import annotations

from pathlib import Path

import pytest

from data.datamodule import DistillDataModule
from data.shards import read_manifest
from data.stream import skip_key
from tests.helpers import garble_jpegs, read_samples, write_set


def damaged_set(root: Path) -> tuple[Path, int]:
    """Five shards of 8 real digits: one cut in half (1 shard error), one of undecodable images
    (8 samples) and one whose first image is undecodable (1 sample); the skips to expect."""
    set_dir = write_set(root, "train", [8, 8, 8, 8, 8])
    urls = [Path(u) for u in read_manifest(set_dir).urls()]
    data = urls[1].read_bytes()
    urls[1].write_bytes(data[: len(data) // 2])
    bad = garble_jpegs(urls[2])
    first = sorted(read_samples(str(urls[3])))[0]
    bad += garble_jpegs(urls[3], {first})
    return set_dir, 1 + len(bad)


@pytest.mark.parametrize("workers", [0, 2])
def test_every_bad_shard_and_sample_is_counted_once_at_the_default_buffer(tmp_path, workers):
    _, expected = damaged_set(tmp_path)
    dm = DistillDataModule(
        tmp_path, {"train": 1}, "train", batch_size=4, num_workers=workers, samples_per_epoch=24
    )
    assert dm.shuffle_buffer == 1000  # the default: far more than an epoch draws
    loader = dm.train_dataloader()
    reported = [entry for _ in range(2) for batch in loader for entry in batch["skipped"]]
    distinct = {skip_key(where, why) for where, why in reported}
    assert len(distinct) == expected == 10, sorted(distinct)
    shard_errors = [why for where, why in reported if where == "shard"]
    assert shard_errors and all(why.startswith("ReadError: ") for why in shard_errors)
