"""The search's data: the distillation run's own training shards, soft labels and mix
(``data.datamodule.DistillDataModule``, offline mode), split into the part that trains the
SuperNet and a held-out part that the reward's quality is measured on.

The paper trains the SuperNet on the offline distillation data (arXiv 2404.10518 §6.1, Tab. 5);
TuNAS measures the reward on a held-out split of the *training* data, never the validation set
(``tunas/mobile_search.py``: ``l2l_train`` / ``l2l_valid``). The split is by source: a stable
hash of a sample's source key (the replica and copy numbers stripped, a recipe group as a
whole, so every view of a held-out image or mixup group is held out) puts ``fraction`` of the
sources aside. The validation set that runs report on is never read here.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch

from data.batch_decode import decode_batch
from data.datamodule import DistillDataModule

_VIEW_SUFFIX = re.compile(r"(_c\d+)?(_r\d+)?$")


class SearchDataModule(DistillDataModule):
    """``DistillDataModule`` with the rank and world given (the search has no Lightning
    trainer to read them from) and the decode stage resolved from ``device``."""

    def __init__(self, *args, rank: int, world: int, device: torch.device, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rank, self.world, self.device = rank, world, torch.device(device)

    def _world(self) -> tuple[int, int]:
        return self.rank, self.world

    def decode_stage(self) -> str:
        if self.decode == "auto":
            return "gpu" if self.device.type == "cuda" else "cpu"
        return self.decode


def source_key(url: str, key: str) -> str:
    """The source a training sample was made from: its set and key without view suffixes."""
    return f"{Path(url).parent.name}/{_VIEW_SUFFIX.sub('', key.split('.')[0])}"


def held_out(source: str, fraction: float) -> bool:
    digest = hashlib.blake2b(source.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64 < fraction


class HeldOutPool:
    """The latest ``size`` held-out samples (images uint8 [N, 3, H, W], soft labels [N, K]):
    each step's reward is measured on them."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.images: torch.Tensor | None = None
        self.soft: torch.Tensor | None = None

    def add(self, images: torch.Tensor, soft: torch.Tensor) -> None:
        if images.shape[0] == 0:
            return
        images, soft = images.cpu(), soft.cpu()
        if self.images is not None:
            images = torch.cat([self.images, images])
            soft = torch.cat([self.soft, soft])
        self.images, self.soft = images[-self.size :], soft[-self.size :]

    def __len__(self) -> int:
        return 0 if self.images is None else self.images.shape[0]

    @property
    def full(self) -> bool:
        return len(self) >= self.size

    def state(self) -> dict:
        return {"images": self.images, "soft": self.soft}

    def load_state(self, state: dict) -> None:
        self.images, self.soft = state["images"], state["soft"]


def split_batch(batch: dict, fraction: float, device: torch.device) -> tuple[dict, dict]:
    """(training part, held-out part) of a collated batch, images decoded on ``device``."""
    batch = decode_batch(batch, device)
    held = torch.tensor(
        [
            held_out(source_key(u, k), fraction)
            for u, k in zip(batch["url"], batch["key"], strict=True)
        ],
        dtype=torch.bool,
    )
    parts = []
    for mask in (~held, held):
        idx = mask.nonzero().flatten()
        parts.append({k: batch[k][idx.to(batch[k].device)] for k in ("image", "soft", "label")})
    parts[0]["skipped"] = batch.get("skipped", [])
    return parts[0], parts[1]
