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
import random
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from common.images import BadImage, center_view
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


def random_resized_box(
    h: int, w: int, scale: tuple[float, float], rng: random.Random
) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a random crop of ``scale`` area and 3/4..4/3 aspect.

    torchvision's ``RandomResizedCrop.get_params`` drawn from ``rng``, so a builder unit and a
    training stream each crop from their own seeded generator.
    """
    lo, hi = math.log(3 / 4), math.log(4 / 3)
    for _ in range(10):
        area = h * w * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(lo, hi))
        cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            return rng.randint(0, h - ch), rng.randint(0, w - cw), ch, cw
    # no draw fitted (a very long image): the largest centred box of allowed aspect
    ch, cw = h, w
    if w / h < 3 / 4:
        ch = round(w * 4 / 3)
    elif w / h > 4 / 3:
        cw = round(h * 4 / 3)
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def random_resized_crop(
    img: torch.Tensor, size: int, scale: tuple[float, float], rng: random.Random
) -> tuple[torch.Tensor, dict]:
    """The Inception crop of ``img`` [C, H, W] resized to ``size``, with its box recorded."""
    top, left, h, w = random_resized_box(img.shape[-2], img.shape[-1], tuple(scale), rng)
    out = TF.resized_crop(img, top, left, h, w, [size, size], antialias=True)
    return out, {"crop": [int(top), int(left), int(h), int(w)]}


def extreme_mixup(
    images: torch.Tensor,
    alpha: float = 1.0,
    partners: torch.Tensor | None = None,
    draw: float | None = None,
) -> tuple[torch.Tensor, float]:
    """Extreme mixup: a ~ Beta(alpha, alpha), a = max(a, 1 - a), ``a * images + (1 - a) * partners``.

    Args:
        images: float [B, C, H, W] (or one image [C, H, W] with ``partners`` given).
        alpha: the Beta parameter (1.0: uniform).
        partners: same shape; default: the batch rolled by 1 (each image's neighbour).
        draw: a Beta draw made by the caller's seeded RNG; default: drawn from torch's RNG.

    Returns:
        The mixed float tensor and the weight a of ``images`` (a >= 0.5).
    """
    a = float(torch.distributions.Beta(alpha, alpha).sample()) if draw is None else float(draw)
    a = max(a, 1.0 - a)
    partners = images.roll(1, dims=0) if partners is None else partners
    return a * images + (1.0 - a) * partners, a


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
            img, params = self._make(unit, load, np.random.default_rng(seed), random.Random(seed))
        return to_hwc(img), {"seed": seed, **params}

    @abstractmethod
    def _make(
        self, unit: Unit, load, rng: np.random.Generator, box_rng: random.Random
    ) -> tuple[torch.Tensor, dict]:
        """Produce the CHW uint8 image under the unit's seeded RNGs (``box_rng``: crops)."""


class RandAugVariant(Variant):
    kind = "randaug"

    def __init__(self, cfg: dict) -> None:
        super().__init__(cfg)
        ra = cfg.get("randaugment", {})
        self.num_ops, self.magnitude = int(ra.get("num_ops", 2)), int(ra.get("magnitude", 9))
        self.randaugment = v2.RandAugment(self.num_ops, self.magnitude)

    def _make(self, unit, load, rng, box_rng):
        img, params = random_resized_crop(
            to_chw(load(unit.item)), self.size, self.crop_scale, box_rng
        )
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

    def _make(self, unit, load, rng, box_rng):
        a_img, a_params = random_resized_crop(
            to_chw(load(unit.item)), self.size, self.crop_scale, box_rng
        )
        partner, b_rgb = self._load_partner(unit, load)
        b_img, b_params = random_resized_crop(to_chw(b_rgb), self.size, self.crop_scale, box_rng)
        alpha = self.cfg.get("alpha", 1.0)
        mixed, a = extreme_mixup(
            a_img.float(), alpha, partners=b_img.float(), draw=rng.beta(alpha, alpha)
        )
        mixed = mixed.round().clamp(0, 255)
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

    def _make(self, unit, load, rng, box_rng):
        img, params = random_resized_crop(
            to_chw(load(unit.item)), self.size, self.crop_scale, box_rng
        )
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

    def _make(self, unit, load, rng, box_rng):
        img, params = super()._make(unit, load, rng, box_rng)
        return img, {**params, "pseudo_class": unit.info["pseudo_class"]}


class PlainVariant(Variant):
    kind = "plain"

    def _make(self, unit, load, rng, box_rng):
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
