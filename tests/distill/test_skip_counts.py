"""End to end: ``results.json`` counts exactly the bad samples and shards in the training data, at
the default shuffle buffer, on one rank without loader workers and on two DDP ranks with two
workers each; a ``max_steps`` below the first validation interval still validates and saves."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from data.shards import read_manifest
from distill.app import run
from tests.helpers import read_samples, run_module

from .conftest import compose_train

pytestmark = pytest.mark.slow

# 6 steps an epoch (96 samples of 16), stopped at step 3: before the first validation
SHORT = ["+debug=smoke", "data.samples_per_epoch=96", "trainer.max_steps=3"]


def _drop_member(url: Path, name: str, replace: bytes | None = None) -> None:
    """Rewrite shard ``url`` without member ``name`` (or with ``replace`` as its bytes)."""
    with tarfile.open(url) as tar:
        members = [(t, tar.extractfile(t).read()) for t in tar]
    with tarfile.open(url, "w") as tar:
        for info, payload in members:
            if info.name == name:
                if replace is None:
                    continue
                payload, info.size = replace, len(replace)
            tar.addfile(info, io.BytesIO(payload))


@pytest.fixture(scope="module")
def damaged(tiny_cache, tmp_path_factory) -> tuple[Path, set[str]]:
    """The tiny cache's shards with three faults in the recipe set ``randaug`` (samples of up to 8
    images): a shard cut inside a member, a group without its image, an undecodable image; the
    root and what each fault's skip names."""
    cache = Path(next(o for o in tiny_cache if o.startswith("paths.cache=")).split("=", 1)[1])
    root = tmp_path_factory.mktemp("damaged") / "digits"
    shutil.copytree(cache / "shards" / "digits", root)
    urls = [Path(u) for u in read_manifest(root / "randaug").urls()]
    assert len(urls) >= 3
    data = urls[1].read_bytes()
    urls[1].write_bytes(data[: len(data) // 2 + 100])
    lacking = next(iter(read_samples(str(urls[2]))))
    _drop_member(urls[2], f"{lacking}.0.jpg")
    garbled = next(iter(read_samples(str(urls[0]))))
    _drop_member(urls[0], f"{garbled}.0.jpg", replace=b"not a jpeg")
    return root, {str(urls[1]), f"{urls[2]}:{lacking}:0", f"{urls[0]}:{garbled}:0"}


def _named(first: list, faults: set[str]) -> set[str]:
    """The faults the reported skips name (a shard error names its url in the reason)."""
    return {f for where, why in first for f in faults if f in f"{where} {why}"}


def test_one_rank_without_workers_counts_each_fault_once_and_validates_at_the_end(
    damaged, tiny_cache, tmp_path, env_no_wandb
):
    root, faults = damaged
    cfg = compose_train(
        ["+student=mnv4_conv_s", *SHORT, *tiny_cache, f"data.root={root}", "data.num_workers=0"],
        tmp_path,
    )
    run(cfg)
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["skipped"]["training"]["count"] == 3 and r["global_step"] == 3
    assert _named(r["skipped"]["training"]["first"], faults) == faults
    assert "val/top1" in r["student_metrics"]  # validated at step 3, mid-epoch
    assert r["best_checkpoint"] == "checkpoints/best-step=3.ckpt"
    assert (tmp_path / r["best_checkpoint"]).is_file()


def test_two_ddp_ranks_with_two_workers_count_each_fault_once(damaged, tiny_cache, tmp_path):
    root, faults = damaged
    out = run_module(
        "distill",
        [
            "+student=mnv4_conv_s",
            *SHORT,
            *tiny_cache,
            "trainer=ddp_cpu",
            f"data.root={root}",
            "data.num_workers=2",
            "report.enabled=false",
            f"hydra.run.dir={tmp_path}",
        ],
        env={"WANDB_MODE": "disabled"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["skipped"]["training"]["count"] == 3 and r["global_step"] == 3
    assert _named(r["skipped"]["training"]["first"], faults) == faults
    ranks = [json.loads((tmp_path / "ranks" / f"rank{i}.json").read_text()) for i in (0, 1)]
    assert [x["skipped"]["count"] for x in ranks] == [3, 3]  # every rank reports the union
    assert "val/top1" in r["student_metrics"] and (tmp_path / r["best_checkpoint"]).is_file()
