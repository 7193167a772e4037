"""How streams end and repeat: unusable sets fail fast, validation is exact and balanced on any
shard count, the same seed gives the same batches, and skips are counted with their reasons."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from data.builder import build_sets
from data.config import OnlineConfig
from data.datamodule import DistillDataModule
from data.shards import ManifestError, read_manifest
from data.sources import ImageFolderSource
from data.stream import loader, train_pipeline, val_pipeline
from testkit.configs import build_cfg, variant_cfg
from tests.helpers import write_set

from .conftest import rgb, set_keys

REPO = Path(__file__).resolve().parents[2]


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group; on a hang kill the group (loader workers and DDP
    ranks included) and fail the test instead of the suite."""
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"still running after {timeout} s (a stream that never ends?): {err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _python(code: str, timeout: float, *args: str) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-c", textwrap.dedent(code), *args], timeout)


def _rewrite(url: Path, change) -> None:
    """Rewrite a shard member by member: ``change(name, payload)`` -> payload or None (drop)."""
    with tarfile.open(url) as tar:
        members = [(t, tar.extractfile(t).read()) for t in tar]
    with tarfile.open(url, "w") as tar:
        for info, payload in members:
            payload = change(info.name, payload)
            if payload is not None:
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))


def _garble_images(url: Path) -> None:
    _rewrite(url, lambda name, p: b"not a jpeg" if name.endswith(".jpg") else p)


# -- 5. a training set with nothing usable -----------------------------------------------------
@pytest.fixture
def unusable_set(tmp_path) -> Path:
    """Three shards, each unusable differently: cut in its first member, empty, undecodable."""
    set_dir = write_set(tmp_path, "bad", [4, 4, 4])
    names = sorted(read_manifest(set_dir).shard_counts)
    data = (set_dir / names[0]).read_bytes()
    (set_dir / names[0]).write_bytes(data[:700])
    (set_dir / names[1]).write_bytes(b"")
    _garble_images(set_dir / names[2])
    return set_dir


TRAIN_ONCE = """
    import sys
    from data.datamodule import DistillDataModule
    dm = DistillDataModule(sys.argv[1], {"bad": 1}, "bad", batch_size=2,
                           num_workers=int(sys.argv[2]), samples_per_epoch=64)
    for batch in dm.train_dataloader():
        pass
    print("EPOCH ENDED")
"""


@pytest.mark.slow  # a fresh interpreter: seconds of imports
@pytest.mark.parametrize("workers", [0, 2])
def test_training_on_a_set_with_no_usable_sample_fails_fast_naming_each_shard(
    unusable_set, workers
):
    start = time.monotonic()
    out = _python(TRAIN_ONCE, 120, str(unusable_set.parent), str(workers))
    took = time.monotonic() - start
    assert out.returncode != 0 and "EPOCH ENDED" not in out.stdout, out.stdout
    err = out.stderr
    assert "NoUsableSample" in err, err[-3000:]
    assert "no usable sample in training set bad after trying all 3 shards" in err, err[-3000:]
    assert "bad-000000.tar: ReadError" in err and "truncated" in err, err[-3000:]
    assert "bad-000001.tar: no samples (empty shard)" in err, err[-3000:]
    assert "bad-000002.tar: " in err and "UnidentifiedImageError" in err, err[-3000:]
    assert took < 60, took


ONE_RANK = """
    import json, sys
    from data.stream import loader, train_pipeline
    urls = json.loads(sys.argv[1])
    ld = loader(train_pipeline([urls], [1.0], 1, 2, 2, 10, shuffle=8), 0, 0, 1, steps=10)
    out = {"urls": [], "skipped": []}
    for batch in ld:
        out["urls"] += batch["url"]
        out["skipped"] += batch["skipped"]
    print(json.dumps(out))
"""


@pytest.mark.slow  # a fresh interpreter: seconds of imports
def test_a_rank_whose_shards_are_all_unusable_reads_the_rest_of_the_set(tmp_path):
    set_dir = write_set(tmp_path, "half", [5, 5])
    urls = read_manifest(set_dir).urls()
    _garble_images(Path(urls[1]))  # rank 1 of 2 owns only this shard
    out = _python(ONE_RANK, 120, json.dumps(urls))
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(got["urls"]) == 20 and set(got["urls"]) == {urls[0]}
    assert any(key.startswith(f"{urls[1]}:") for key, _ in got["skipped"]), got["skipped"]


def test_bad_shards_among_good_ones_are_skipped_with_reasons_and_training_goes_on(tmp_path):
    set_dir = write_set(tmp_path, "mixed", [5, 5, 5, 5])
    urls = read_manifest(set_dir).urls()
    data = Path(urls[1]).read_bytes()
    Path(urls[1]).write_bytes(data[: len(data) // 2])  # readable head, then cut
    _garble_images(Path(urls[2]))
    ld = loader(train_pipeline([urls], [1.0], 0, 1, 4, 10, shuffle=8), 0, 0, 0, steps=30)
    seen, skipped = set(), []
    for batch in ld:
        seen |= set(batch["url"])
        skipped += batch["skipped"]
    assert urls[2] not in seen and {urls[0], urls[3]} <= seen
    shard_errors = [why for where, why in skipped if where == "shard"]
    assert shard_errors and all(why.startswith(f"ReadError: {urls[1]}: ") for why in shard_errors)
    garbled = [why for where, why in skipped if where.startswith(f"{urls[2]}:")]
    assert garbled and all("UnidentifiedImageError" in why for why in garbled), skipped


def test_prepare_refuses_a_set_whose_manifest_says_zero_samples(tmp_path):
    write_set(tmp_path, "val", [4])
    empty = write_set(tmp_path, "empty", [0])
    manifest = json.loads((empty / "manifest.json").read_text())
    manifest |= {"skipped": 2, "skipped_examples": [["a.jpg", "corrupt image"], ["b.jpg", "x"]]}
    (empty / "manifest.json").write_text(json.dumps(manifest))
    dm = DistillDataModule(tmp_path, {"empty": 1}, "val", batch_size=2, num_workers=0)
    with pytest.raises(ManifestError, match=r"shard set empty .* holds 0 samples.*a\.jpg"):
        dm.prepare()


# -- 6. validation: exact and balanced whatever the shard count --------------------------------
def _val_keys(set_dir: Path, rank: int, world: int, workers: int) -> list[str]:
    pipe = val_pipeline(read_manifest(set_dir).urls(), rank, world, 3, 10, True)
    keys = []
    for batch in loader(pipe, workers, 0, rank):
        keys += [f"{u}:{k}" for u, k in zip(batch["url"], batch["key"], strict=True)]
    return keys


@pytest.mark.parametrize("shards", [[7], [5, 5, 2]], ids=["one_shard", "three_shards"])
@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("world", [2, 3])
def test_validation_sees_each_sample_once_and_every_rank_a_fair_share(
    tmp_path, shards, workers, world
):
    set_dir = write_set(tmp_path, "val", shards)
    per_rank = [_val_keys(set_dir, r, world, workers) for r in range(world)]
    every = [k for keys in per_rank for k in keys]
    assert len(every) == len(set(every)) and set(every) == set_keys(set_dir)
    sizes = [len(keys) for keys in per_rank]
    assert min(sizes) > 0 and max(sizes) - min(sizes) <= 1, sizes


def test_fewer_validation_samples_than_ranks_is_refused_up_front(tmp_path):
    set_dir = write_set(tmp_path, "val", [2])
    with pytest.raises(ValueError, match="validation set val has 2 samples, fewer than the 3"):
        val_pipeline(read_manifest(set_dir).urls(), 0, 3, 2, 10, True)


DDP_RUN = """
    import json, os, sys
    from pathlib import Path
    import lightning as L, torch, torch.nn.functional as F
    from lightning.pytorch.strategies import DDPStrategy
    from data.datamodule import DistillDataModule

    class Probe(L.LightningModule):
        def __init__(self, out):
            super().__init__()
            self.head, self.out, self.keys = torch.nn.Linear(3, 10), out, []
        def training_step(self, batch, i):
            return F.cross_entropy(self.head(batch["image"].float().mean((2, 3))), batch["soft"])
        def validation_step(self, batch, i):
            self.keys += [f"{u}:{k}" for u, k in zip(batch["url"], batch["key"])]
            loss = F.cross_entropy(self.head(batch["image"].float().mean((2, 3))), batch["soft"])
            self.log("val_loss", loss, on_epoch=True, sync_dist=True)
        def on_validation_epoch_end(self):
            seen = self.all_gather(torch.tensor(len(self.keys)))
            Path(self.out, f"rank{self.global_rank}.json").write_text(
                json.dumps({"keys": self.keys, "seen": seen.tolist()}))
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    if __name__ == "__main__":
        root, out = sys.argv[1], sys.argv[2]
        dm = DistillDataModule(root, {"train": 1}, "val", batch_size=2, num_workers=1,
                               samples_per_epoch=16)
        trainer = L.Trainer(accelerator="cpu", devices=2,
                            strategy=DDPStrategy(process_group_backend="gloo"),
                            max_epochs=1, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False,
                            num_sanity_val_steps=0)
        trainer.fit(Probe(out), datamodule=dm)
        # one write(2) of a short line: the two ranks share the pipe, and print's pieces
        # interleaved (FIT DONE, FIT DONE 1, then rank 0's number)
        os.write(1, f"FIT DONE {trainer.global_rank}\\n".encode())
"""


@pytest.mark.slow
def test_two_ddp_ranks_validate_on_a_one_shard_set_and_finish(tmp_path):
    write_set(tmp_path / "sets", "train", [6, 6])
    val = write_set(tmp_path / "sets", "val", [5], offset=100)
    script = tmp_path / "ddp_val.py"
    script.write_text(textwrap.dedent(DDP_RUN))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    run = _run([sys.executable, str(script), str(tmp_path / "sets"), str(out_dir)], 300)
    assert run.returncode == 0 and "FIT DONE 0" in run.stdout, run.stderr[-3000:]
    r0, r1 = (json.loads((out_dir / f"rank{r}.json").read_text()) for r in (0, 1))
    keys = r0["keys"] + r1["keys"]
    assert len(keys) == len(set(keys)) and set(keys) == set_keys(val)
    assert sorted([len(r0["keys"]), len(r1["keys"])]) == [2, 3] and r0["seen"] == r1["seen"]


# -- 7. the same seed gives the same batches ---------------------------------------------------
def _first_batches(root: Path, seed: int, workers: int, mode: str, epochs: int = 2) -> list:
    online = (
        OnlineConfig(set="a", crop_size=12, crop_scale=[0.3, 1.0]) if mode == "online" else None
    )
    dm = DistillDataModule(
        root,
        {"a": 1, "b": 1},
        "a",
        batch_size=4,
        num_workers=workers,
        samples_per_epoch=4 * 5,
        mode=mode,
        online=online,
        seed=seed,
        shuffle_buffer=16,
    )
    ld = dm.train_dataloader()
    return [[(b["key"], b["image"]) for b in ld] for _ in range(epochs)]


def _same(x: list, y: list) -> bool:
    return all(kx == ky and torch.equal(ix, iy) for (kx, ix), (ky, iy) in zip(x, y, strict=True))


@pytest.mark.parametrize("mode", ["offline", "online"])
@pytest.mark.parametrize("workers", [0, 2])
def test_the_same_seed_gives_the_same_batches(tmp_path, workers, mode):
    write_set(tmp_path, "a", [6, 6, 6])
    write_set(tmp_path, "b", [6, 6], offset=40)
    first = _first_batches(tmp_path, 7, workers, mode)
    again = _first_batches(tmp_path, 7, workers, mode)
    other = _first_batches(tmp_path, 8, workers, mode)
    assert all(_same(e1, e2) for e1, e2 in zip(first, again, strict=True))
    assert [k for k, _ in first[0]] != [k for k, _ in other[0]]
    assert [k for k, _ in first[0]] != [k for k, _ in first[1]]  # a new draw each epoch


# -- 15. skips are counted, kept and named -----------------------------------------------------
def test_manifest_counts_every_skipped_input_including_the_source_listing(tmp_path):
    root = tmp_path / "folder"
    for c in "012":
        (root / c).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rgb(24, 24, seed=i)).save(root / c / f"good{i}.jpg")
    (root / "0" / "empty.jpg").write_bytes(b"")  # left out when the folder is listed
    (root / "1" / "notes.jpg").write_text("this is not a picture")  # also at listing
    buf = io.BytesIO()
    Image.fromarray(rgb(64, 64, seed=9)).save(buf, format="JPEG")
    (root / "2" / "cut.jpg").write_bytes(buf.getvalue()[:600])  # fails only when decoded
    variants = {
        "plain": variant_cfg(kind="plain", source="s", image_size=16, crop_pct=1.0, label=False)
    }
    cfg = build_cfg(shard_size=4, batch_size=4, num_workers=0, progress=False)
    (report,) = build_sets(variants, {"s": ImageFolderSource(root)}, None, tmp_path / "out", cfg)
    m = read_manifest(tmp_path / "out" / "plain")
    assert m.num_samples == 6
    refs = {Path(ref).name: why for ref, why in m.skipped_examples}
    assert set(refs) == {"empty.jpg", "notes.jpg", "cut.jpg"}, refs
    assert m.skipped == 3 == len(set(report.skipped))
    assert sum(m.data["skipped_by_reason"].values()) == 3


def test_a_manifest_from_before_the_skip_list_still_reads(tmp_path):
    set_dir = write_set(tmp_path, "old", [3])
    data = json.loads((set_dir / "manifest.json").read_text())
    assert "skipped_examples" not in data
    m = read_manifest(set_dir)
    assert m.skipped == 0 and m.skipped_examples == []
    data.pop("skipped")
    (set_dir / "manifest.json").write_text(json.dumps(data))
    assert read_manifest(set_dir).skipped == 0


@pytest.mark.parametrize("workers", [0, 1])
def test_skips_at_the_end_of_a_validation_shard_are_reported_not_lost(tmp_path, workers):
    set_dir = write_set(tmp_path, "val", [4])
    (url,) = read_manifest(set_dir).urls()
    last = sorted(k.split(":")[-1] for k in set_keys(set_dir))[-1]
    _rewrite(Path(url), lambda name, p: None if name == f"{last}.jpg" else p)
    pipe = val_pipeline([url], 0, 1, 2, 10, True)
    seen, skipped = 0, []
    for batch in loader(pipe, workers, 0, 0):
        seen += len(batch["key"])
        skipped += batch["skipped"]
    assert seen == 3 and [tuple(x) for x in skipped] == [
        (f"{url}:{last}", "sample missing a key: jpg")
    ]
