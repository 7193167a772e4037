"""The dataset variants as recipes: which units to make, and how to make each one.

- ``randaug`` (D1): Inception crop + RandAugment(2, 9) (torchvision's ops and magnitudes,
  data/randaug.py's kernels).
- ``mixup`` (D2): Inception crops of an image and of its partner, the next image of the same
  shuffled stream, mixed with weight a ~ Beta(1, 1), a = max(a, 1 - a) (extreme mixup).
- ``inpaint``: Inception crop, random mask, filled by an inpainter (data/inpaint.py).
- ``extra`` (D3): the class-balanced selection of an unlabelled pool, Inception crop +
  RandAugment(2, 5).
- ``plain``: resize and centre crop (validation sets).

Every unit is made from its own seed (variant seed, image key, replica), so a shard comes out the
same whichever process builds it and however often it is rebuilt. Views are rendered as uint8
[H, W, 3] arrays by data/render.py, the one path the builder and the loader share.
"""

from __future__ import annotations

import hashlib
import random
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from common.images import BadImage, center_view
from data.augment import random_resized_box, to_chw, to_hwc
from data.config import (
    CropVariantConfig,
    ExtraVariantConfig,
    InpaintVariantConfig,
    MixupVariantConfig,
    PackedVariantConfig,
    RandAugVariantConfig,
    VariantConfig,
    variant_kind,
)
from data.randaug import RandAugment
from data.render import BadRecipe, crop_resize, mix
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


def shuffled_order(n: int, seed: int) -> list[int]:
    """A seeded permutation of range(n): one replica pass of a variant visits items in it."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()


class Variant(ABC):
    """A named recipe made from its typed config (data/config.py, one dataclass per kind).

    A view is planned, then rendered: ``plan`` draws every random choice of one view into a small
    dict (crop box, ops, partner, weight, mask seed) and ``render`` turns that dict and the source
    pixels into the view. Pixel sets store the rendered view; recipe sets (data/recipes.py) store
    the dict and render it again in the loader, with this same code.
    """

    kind = "variant"
    group = 1  # images one view may read: itself and, for mixup, the partners in its group

    def __init__(self, cfg: VariantConfig) -> None:
        self.cfg = cfg
        self.name, self.replicas, self.seed, self.size = (
            cfg.name,
            cfg.replicas,
            cfg.seed,
            cfg.image_size,
        )
        self.crop_scale = cfg.crop_scale if isinstance(cfg, CropVariantConfig) else None

    @property
    def pack(self) -> int:
        """Recipe sets: source images per tar sample (``pack``). Their view records share one
        member, so its tar and .npy headers are spread over pack x replicas records."""
        return self.cfg.pack if isinstance(self.cfg, PackedVariantConfig) else 1

    def units(self, source: Source) -> list[Unit]:
        """Every replica of every item, each replica pass in its own shuffled order."""
        out = []
        for r in range(self.replicas):
            for i in shuffled_order(len(source.items), self.seed * 1000 + r):
                item = source.items[i]
                out.append(Unit(len(out), item, r, item.label))
        return out

    def rngs(self, key: str) -> tuple[int, random.Random, np.random.Generator]:
        """The seed of the view named ``key`` and its two generators (crops/ops, Beta/masks)."""
        seed = unit_seed(self.seed, self.name, key)
        return seed, random.Random(seed), np.random.default_rng(seed)

    def plan(
        self, shapes: list[tuple[int, int]], i: int, rng: random.Random, nrng: np.random.Generator
    ) -> dict:
        """Every random choice of a view of image ``i`` among ``shapes`` (its group's H, W)."""
        h, w = shapes[i]
        return {"crop": list(random_resized_box(h, w, self.crop_scale, rng))}

    @abstractmethod
    def render(self, recipe: dict, images: list[np.ndarray | None], i: int) -> np.ndarray:
        """The uint8 [H, W, 3] view of image ``i`` (``images``: its group, HWC uint8)."""

    def describe(self, recipe: dict) -> dict:
        """The recipe as a pixel set's sample json records it."""
        return dict(recipe)

    def make(self, unit: Unit, load: Callable[[Item], np.ndarray]) -> tuple[np.ndarray, dict]:
        """The augmented RGB image of ``unit`` and its parameters (seeded, reproducible)."""
        seed, rng, nrng = self.rngs(unit.key)
        images = [np.ascontiguousarray(load(unit.item))]
        recipe = self.plan([images[0].shape[:2]], 0, rng, nrng)
        return self.render(recipe, images, 0), {"seed": seed, **self.describe(recipe)}


class RandAugVariant(Variant):
    kind = "randaug"

    def __init__(self, cfg: RandAugVariantConfig) -> None:
        super().__init__(cfg)
        self.num_ops, self.magnitude = cfg.randaugment.num_ops, cfg.randaugment.magnitude
        self.randaugment = RandAugment(self.num_ops, self.magnitude)

    def plan(self, shapes, i, rng, nrng):
        recipe = super().plan(shapes, i, rng, nrng)
        recipe["ops"] = self.randaugment.draw(rng)
        return recipe

    def render(self, recipe, images, i):
        view = crop_resize(images[i], recipe["crop"], self.size)
        return self.randaugment.apply(view, recipe["ops"])

    def describe(self, recipe):
        ops = [[RandAugment.OPS[op], b] for op, b in recipe["ops"]]
        return {"crop": recipe["crop"], "randaugment": [self.num_ops, self.magnitude], "ops": ops}


class MixupVariant(Variant):
    kind = "mixup"

    def __init__(self, cfg: MixupVariantConfig) -> None:
        super().__init__(cfg)
        self.group, self.alpha = cfg.group, cfg.alpha

    @property
    def pack(self) -> int:
        """A sample is one partner group."""
        return self.group

    def units(self, source: Source) -> list[Unit]:
        out = []
        for r in range(self.replicas):
            order = shuffled_order(len(source.items), self.seed * 1000 + r)
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

    def plan(self, shapes, i, rng, nrng):
        others = [j for j in range(len(shapes)) if j != i]
        if not others:
            raise BadImage("no mixup partner", "the group has one image")
        recipe = super().plan(shapes, i, rng, nrng)
        partner = others[rng.randrange(len(others))]
        ph, pw = shapes[partner]
        a = float(nrng.beta(self.alpha, self.alpha))
        recipe.update(
            partner=partner,
            partner_crop=list(random_resized_box(ph, pw, self.crop_scale, rng)),
            weight=float(np.float32(max(a, 1.0 - a))),  # stored as float32: replay is exact
        )
        return recipe

    def render(self, recipe, images, i):
        partner = int(recipe["partner"])
        if partner == i or not 0 <= partner < len(images) or images[partner] is None:
            raise BadRecipe(f"mixup partner {partner} is not another image of the sample")
        a_img = crop_resize(images[i], recipe["crop"], self.size)
        b_img = crop_resize(images[partner], recipe["partner_crop"], self.size)
        return mix(a_img, b_img, recipe["weight"])

    def describe(self, recipe):
        return {
            "crop": recipe["crop"],
            "partner_crop": recipe["partner_crop"],
            "mix_weight": round(recipe["weight"], 6),
        }

    def make(self, unit, load):
        seed, rng, nrng = self.rngs(unit.key)
        partner, b_rgb = self._load_partner(unit, load)
        images = [np.ascontiguousarray(load(unit.item)), np.ascontiguousarray(b_rgb)]
        recipe = self.plan([im.shape[:2] for im in images], 0, rng, nrng)
        params = {"seed": seed, **self.describe(recipe)}
        params.update(partner=partner.key, partner_label=partner.label)
        return self.render(recipe, images, 0), params


class InpaintVariant(Variant):
    kind = "inpaint"

    def __init__(self, cfg: InpaintVariantConfig, inpainter: Callable | None = None) -> None:
        super().__init__(cfg)
        from data.inpaint import OpenCVInpainter

        self.inpainter = inpainter or OpenCVInpainter(cfg.method, cfg.radius)
        self.area, self.mask_kinds = cfg.mask_area, cfg.mask_kinds

    def plan(self, shapes, i, rng, nrng):
        recipe = super().plan(shapes, i, rng, nrng)
        recipe["mask_seed"] = int(nrng.integers(2**32))  # the mask is drawn from it (numpy PCG64)
        return recipe

    def _mask(self, recipe: dict) -> tuple[np.ndarray, dict]:
        from data.inpaint import random_mask

        mask_rng = np.random.default_rng(int(recipe["mask_seed"]))
        return random_mask(self.size, self.size, mask_rng, self.area, self.mask_kinds)

    def render(self, recipe, images, i):
        img = crop_resize(images[i], recipe["crop"], self.size)
        filled = self.inpainter(img, self._mask(recipe)[0])
        return np.ascontiguousarray(filled, dtype=np.uint8)

    def describe(self, recipe):
        return {**recipe, "mask": self._mask(recipe)[1]}


class ExtraVariant(RandAugVariant):
    """D3: units come from a class-balanced selection (data/extra.py), not from every item."""

    kind = "extra"

    def __init__(self, cfg: ExtraVariantConfig) -> None:
        super().__init__(cfg)
        self.selection: list[tuple[int, int, int]] | None = None  # (item, class, copy)

    def units(self, source: Source) -> list[Unit]:
        if self.selection is None:
            raise RuntimeError("the extra variant needs its class-balanced selection first")
        out = []
        for r in range(self.replicas):
            for pos in shuffled_order(len(self.selection), self.seed * 1000 + r):
                i, cls, copy = self.selection[pos]
                unit = Unit(len(out), source.items[i], r, None, copy=copy)
                unit.info["pseudo_class"] = cls
                out.append(unit)
        return out

    def make(self, unit, load):
        img, params = super().make(unit, load)
        return img, {**params, "pseudo_class": unit.info["pseudo_class"]}


class PlainVariant(Variant):
    kind = "plain"

    def plan(self, shapes, i, rng, nrng):
        return {"crop_pct": self.cfg.crop_pct}

    def render(self, recipe, images, i):
        return to_hwc(center_view(to_chw(images[i]), self.size, recipe["crop_pct"]))


VARIANTS: dict[str, type[Variant]] = {
    v.kind: v for v in (RandAugVariant, MixupVariant, InpaintVariant, ExtraVariant, PlainVariant)
}


def make_variant(cfg: VariantConfig, inpainter: Callable | None = None) -> Variant:
    """The variant of ``cfg``'s kind (``inpainter``: the inpaint kind's, built from its config)."""
    kind = variant_kind(cfg)
    if kind == "inpaint":
        return InpaintVariant(cfg, inpainter)
    return VARIANTS[kind](cfg)
