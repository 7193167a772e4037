"""The dataset variants as recipes: which units to make, and how to make each one.

- ``randaug`` (D1): Inception crop + RandAugment(2, 9) (torchvision's implementation).
- ``mixup`` (D2): Inception crops of an image and of its partner, the next image of the same
  shuffled stream, mixed with weight a ~ Beta(1, 1), a = max(a, 1 - a) (extreme mixup).
- ``inpaint``: Inception crop, random mask, filled by an inpainter (data/inpaint.py).
- ``extra`` (D3): the class-balanced selection of an unlabelled pool, Inception crop +
  RandAugment(2, 5).
- ``plain``: resize and centre crop (validation sets).

Every unit is made from its own seed (variant seed, image key, replica), so a shard comes out the
same whichever process builds it and however often it is rebuilt.
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from common.images import BadImage
from data.sources import Item, Source


@dataclass(frozen=True)
class Unit:
    """One sample to produce: an image, its replica number, its stored class and extras."""

    index: int
    item: Item
    replica: int
    label: int | None
    partner: Item | None = None
    copy: int = 0
    info: dict = field(default_factory=dict, compare=False)

    @property
    def key(self) -> str:
        copy = f"_c{self.copy}" if self.copy else ""
        return f"{self.item.key}{copy}_r{self.replica}"


def unit_seed(seed: int, variant: str, key: str) -> int:
    digest = hashlib.blake2b(f"{seed}:{variant}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _shuffled(n: int, seed: int) -> list[int]:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()


def to_chw(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.require(rgb, requirements=["C", "W"])).permute(2, 0, 1)


def to_hwc(img: torch.Tensor) -> np.ndarray:
    return img.permute(1, 2, 0).contiguous().numpy()


def inception_crop(
    img: torch.Tensor, size: int, scale: tuple[float, float], ratio=(3 / 4, 4 / 3)
) -> tuple[torch.Tensor, dict]:
    """RandomResizedCrop with its box recorded (top, left, height, width)."""
    top, left, h, w = v2.RandomResizedCrop.get_params(img, list(scale), list(ratio))
    out = TF.resized_crop(img, top, left, h, w, [size, size], antialias=True)
    return out, {"crop": [int(top), int(left), int(h), int(w)]}


def center_view(img: torch.Tensor, size: int, crop_pct: float) -> torch.Tensor:
    """Resize the short side to size / crop_pct, then centre crop ``size`` (evaluation view)."""
    img = TF.resize(img, [max(size, math.floor(size / crop_pct))], antialias=True)
    return TF.center_crop(img, [size, size])


class Variant(ABC):
    """A named recipe; ``cfg`` holds ``name``, ``replicas``, ``seed``, ``image_size`` and more."""

    kind = "variant"

    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg
        self.name = cfg["name"]
        self.replicas = int(cfg.get("replicas", 1))
        self.seed = int(cfg.get("seed", 0))
        self.size = int(cfg["image_size"])
        self.crop_scale = tuple(cfg.get("crop_scale", (0.08, 1.0)))

    def units(self, source: Source) -> list[Unit]:
        """Every replica of every item, each replica pass in its own shuffled order."""
        out = []
        for r in range(self.replicas):
            for i in _shuffled(len(source.items), self.seed * 1000 + r):
                item = source.items[i]
                out.append(Unit(len(out), item, r, item.label))
        return out

    def make(self, unit: Unit, load: Callable[[Item], np.ndarray]) -> tuple[np.ndarray, dict]:
        """The augmented RGB image of ``unit`` and its parameters (seeded, reproducible)."""
        seed = unit_seed(self.seed, self.name, unit.key)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            img, params = self._make(unit, load, np.random.default_rng(seed))
        return to_hwc(img), {"seed": seed, **params}

    @abstractmethod
    def _make(self, unit: Unit, load, rng: np.random.Generator) -> tuple[torch.Tensor, dict]:
        """Produce the CHW uint8 image under the unit's seeded RNGs."""


class RandAugVariant(Variant):
    kind = "randaug"

    def __init__(self, cfg: dict) -> None:
        super().__init__(cfg)
        ra = cfg.get("randaugment", {})
        self.num_ops, self.magnitude = int(ra.get("num_ops", 2)), int(ra.get("magnitude", 9))
        self.randaugment = v2.RandAugment(self.num_ops, self.magnitude)

    def _make(self, unit, load, rng):
        img, params = inception_crop(to_chw(load(unit.item)), self.size, self.crop_scale)
        params["randaugment"] = [self.num_ops, self.magnitude]
        return self.randaugment(img), params


class MixupVariant(Variant):
    kind = "mixup"

    def units(self, source: Source) -> list[Unit]:
        out = []
        for r in range(self.replicas):
            order = _shuffled(len(source.items), self.seed * 1000 + r)
            for pos, i in enumerate(order):
                item = source.items[i]
                # the next images of the stream; later ones stand in if a partner is unreadable
                nxt = [source.items[order[(pos + d) % len(order)]] for d in range(1, 5)]
                unit = Unit(len(out), item, r, item.label, nxt[0])
                unit.info["fallback_partners"] = nxt[1:]
                out.append(unit)
        return out

    def _load_partner(self, unit: Unit, load) -> tuple[Item, np.ndarray]:
        errors = []
        for partner in [unit.partner, *unit.info.get("fallback_partners", [])]:
            if partner is None or partner == unit.item:
                continue
            try:
                return partner, load(partner)
            except BadImage as e:
                errors.append(f"{partner.ref}: {e}")
        raise BadImage("no mixup partner", "; ".join(errors) or "the source has one image")

    def _make(self, unit, load, rng):
        a_img, a_params = inception_crop(to_chw(load(unit.item)), self.size, self.crop_scale)
        partner, b_rgb = self._load_partner(unit, load)
        b_img, b_params = inception_crop(to_chw(b_rgb), self.size, self.crop_scale)
        a = float(rng.beta(self.cfg.get("alpha", 1.0), self.cfg.get("alpha", 1.0)))
        a = max(a, 1.0 - a)
        mixed = (a * a_img.float() + (1 - a) * b_img.float()).round().clamp(0, 255)
        return mixed.to(torch.uint8), {
            "mix_weight": round(a, 6),
            "crop": a_params["crop"],
            "partner": partner.key,
            "partner_crop": b_params["crop"],
            "partner_label": partner.label,
        }


class InpaintVariant(Variant):
    kind = "inpaint"

    def __init__(self, cfg: dict, inpainter: Callable | None = None) -> None:
        super().__init__(cfg)
        from data.inpaint import OpenCVInpainter

        self.inpainter = inpainter or OpenCVInpainter(
            cfg.get("method", "telea"), float(cfg.get("radius", 3.0))
        )
        self.area = tuple(cfg.get("mask_area", (0.05, 0.25)))
        self.mask_kinds = tuple(cfg.get("mask_kinds", ("rect", "stroke")))

    def _make(self, unit, load, rng):
        img, params = inception_crop(to_chw(load(unit.item)), self.size, self.crop_scale)
        from data.inpaint import random_mask

        mask, mask_params = random_mask(self.size, self.size, rng, self.area, self.mask_kinds)
        filled = self.inpainter(to_hwc(img), mask)
        return to_chw(np.asarray(filled, dtype=np.uint8)), {**params, "mask": mask_params}


class ExtraVariant(RandAugVariant):
    """D3: units come from a class-balanced selection (data/extra.py), not from every item."""

    kind = "extra"

    def __init__(self, cfg: dict) -> None:
        cfg = {**cfg, "randaugment": cfg.get("randaugment", {"num_ops": 2, "magnitude": 5})}
        super().__init__(cfg)
        self.selection: list[tuple[int, int, int]] | None = None  # (item, class, copy)

    def units(self, source: Source) -> list[Unit]:
        if self.selection is None:
            raise RuntimeError("the extra variant needs its class-balanced selection first")
        out = []
        for r in range(self.replicas):
            for pos in _shuffled(len(self.selection), self.seed * 1000 + r):
                i, cls, copy = self.selection[pos]
                unit = Unit(len(out), source.items[i], r, None, copy=copy)
                unit.info["pseudo_class"] = cls
                out.append(unit)
        return out

    def _make(self, unit, load, rng):
        img, params = super()._make(unit, load, rng)
        return img, {**params, "pseudo_class": unit.info["pseudo_class"]}


class PlainVariant(Variant):
    kind = "plain"

    def _make(self, unit, load, rng):
        crop_pct = float(self.cfg.get("crop_pct", 0.875))
        return center_view(to_chw(load(unit.item)), self.size, crop_pct), {"crop_pct": crop_pct}


VARIANTS: dict[str, type[Variant]] = {
    v.kind: v for v in (RandAugVariant, MixupVariant, InpaintVariant, ExtraVariant, PlainVariant)
}


def make_variant(cfg: dict, inpainter: Callable | None = None) -> Variant:
    kind = cfg.get("kind")
    if kind not in VARIANTS:
        raise ValueError(f"variant kind {kind!r} unknown; expected one of {sorted(VARIANTS)}")
    if kind == "inpaint":
        return InpaintVariant(cfg, inpainter)
    return VARIANTS[kind](cfg)
