"""Views stored as recipes: each view in a few dozen bytes, rendered again exactly in the loader.

A recipe set (``build.store=recipe``) stores each source image once and, per image, one record
per replica. A tar sample is a *group* of source images (1 image; mixup: ``group`` images, so a
partner is always in the same sample and the loader never needs random access)::

    <key>.0.jpg ... <key>.<G-1>.jpg   the group's source images (short side <= raw_size)
    <key>.cls.npy                     their classes (int32, -1: unlabelled)
    <key>.views.npy                   records [G, replicas] (``ViewCodec.dtype``)
    <key>.json                        keys and refs of the images

A record holds the crop box, the RandAugment ops (op index, signed magnitude bin), the mixup
partner (an index into the group) with its crop and float32 weight, the inpaint mask's seed, a
digest and the teacher's label of exactly those pixels. The digest covers everything the loader
trusts about the view: the rendered pixels, every other field of the record (the label
included) and the image's stored class. The loader renders a record with the same
``Variant.render`` the builder used and checks the digest, so a view that does not replay
exactly, or whose label or class was changed, is a counted skip, never a silently wrong label.

A sample holds ``pack`` source images (8; mixup: its partner ``group``), so a set at 10
replicas spreads one member's tar and .npy headers over 80 records.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import random
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import torch
import xxhash

from data.config import variant_config
from data.labels import densify_topk, load_npy
from data.randaug import RandAugment
from data.render import BadRecipe, decode_source
from data.variants import Variant, make_variant

if TYPE_CHECKING:
    from data.shards import Manifest

# 2: one uint8 HWC renderer (OpenCV resize, integer RandAugment kernels, fixed-point mix), a
# digest over pixels, record and class, samples of ``pack`` images
RECIPE_VERSION = 2
VIEWS = "views.npy"
CLASSES = "cls.npy"
RENDER_LIBRARIES = ("numpy", "opencv-python-headless", "simplejpeg", "pillow", "xxhash")


def image_member(i: int) -> str:
    return f"{i}.jpg"


def group_size(sample: dict) -> int:
    """How many source images a recipe sample holds: as many as its classes (``cls.npy``) list,
    else up to its highest ``<i>.jpg`` member. A member missing in between is an image to skip
    and count (counting up to the first gap lost every later image of the group unseen)."""
    if CLASSES in sample:
        return len(load_npy(sample[CLASSES]))
    found = [int(k[:-4]) for k in sample if k.endswith(".jpg") and k[:-4].isdigit()]
    return max(found) + 1 if found else 0


def render_versions() -> dict[str, str]:
    """Versions of the libraries whose code renders a view (recorded in recipe manifests)."""
    out = {}
    for name in RENDER_LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def version_drift(recorded: dict[str, str]) -> dict[str, tuple[str, str]]:
    """Library -> (recorded, here) for every render library whose version differs."""
    here = render_versions()
    return {k: (v, here.get(k, "missing")) for k, v in recorded.items() if here.get(k) != v}


def pixel_hash(view: np.ndarray) -> int:
    """64-bit XXH3 of a rendered uint8 view, its shape included (a few microseconds at 224 px)."""
    h = xxhash.xxh3_64(str(view.shape).encode())
    h.update(np.ascontiguousarray(view))
    return h.intdigest()


def view_digest(pixels: int, row: np.void, cls: int) -> int:
    """The 32-bit digest stored in a record: the view's ``pixel_hash``, the record's bytes with
    its digest field zeroed (label included) and the image's class. A view that replays
    differently, or whose label or class changed, fails the check (a 1 in 4 billion miss)."""
    record = row.copy()
    record["digest"] = 0
    h = xxhash.xxh3_64(pixels.to_bytes(8, "little"))
    h.update(record.tobytes())
    h.update(int(cls).to_bytes(8, "little", signed=True))
    return h.intdigest() & 0xFFFFFFFF


@dataclass(frozen=True)
class ViewCodec:
    """The fixed-width record of one view of one variant kind, and its label format.

    ``label``: ``"topk"`` (``top_k`` classes + fp16 probabilities), ``"full"`` (fp16 over all
    classes) or ``None`` (unlabelled).
    """

    kind: str
    num_ops: int
    num_classes: int
    label: str | None
    top_k: int | None = None

    @cached_property
    def dtype(self) -> np.dtype:
        fields: list[tuple] = [("crop", "<u2", (4,)), ("digest", "<u4")]
        if self.kind in ("randaug", "extra") and self.num_ops:
            fields.append(("ops", "i1", (self.num_ops, 2)))
        if self.kind == "mixup":
            fields += [("partner", "u1"), ("partner_crop", "<u2", (4,)), ("weight", "<f4")]
        if self.kind == "inpaint":
            fields.append(("mask_seed", "<u4"))
        if self.label == "topk":
            cls = "<u2" if self.num_classes <= 65536 else "<i4"
            fields += [("cls", cls, (self.top_k,)), ("prob", "<f2", (self.top_k,))]
        elif self.label == "full":
            fields.append(("prob", "<f2", (self.num_classes,)))
        return np.dtype(fields)

    def spec(self) -> dict:
        return asdict(self)

    def encode(
        self, recipes: list[dict], pixels: list[int], classes: list[int], probs, indices
    ) -> np.ndarray:
        """Records for ``recipes``: the views' ``pixel_hash`` values and their images' classes
        (both go into each digest, with the record itself) and the teacher's labels."""
        boxes = [r["crop"] for r in recipes] + [r.get("partner_crop", [0]) for r in recipes]
        if boxes and max(max(b) for b in boxes) > 65535:
            raise ValueError("a crop box exceeds 65535 px, the record's limit: lower raw_size")
        out = np.zeros(len(recipes), dtype=self.dtype)
        out["crop"] = [r["crop"] for r in recipes]
        if "ops" in self.dtype.names:
            out["ops"] = [r["ops"] for r in recipes]
        if self.kind == "mixup":
            out["partner"] = [r["partner"] for r in recipes]
            out["partner_crop"] = [r["partner_crop"] for r in recipes]
            out["weight"] = [r["weight"] for r in recipes]
        if self.kind == "inpaint":
            out["mask_seed"] = [r["mask_seed"] for r in recipes]
        if self.label is not None:
            out["prob"] = np.stack(probs)
        if self.label == "topk":
            out["cls"] = np.stack(indices)
        for row, px, cls in zip(out, pixels, classes, strict=True):
            row["digest"] = view_digest(px, row, cls)
        return out

    def recipe(self, row: np.void) -> dict:
        """The record as ``Variant.render`` takes it."""
        rec = {"crop": [int(v) for v in row["crop"]]}
        if "ops" in self.dtype.names:
            rec["ops"] = row["ops"].tolist()
        elif self.kind in ("randaug", "extra"):
            rec["ops"] = []
        if self.kind == "mixup":
            rec.update(
                partner=int(row["partner"]),
                partner_crop=[int(v) for v in row["partner_crop"]],
                weight=float(row["weight"]),
            )
        if self.kind == "inpaint":
            rec["mask_seed"] = int(row["mask_seed"])
        return rec

    def soft_label(self, row: np.void) -> torch.Tensor:
        """The stored label as dense fp32 probabilities (top-k renormalised, as in pixel sets)."""
        if self.label == "topk":
            try:
                return densify_topk(row["cls"], row["prob"], self.num_classes)
            except ValueError as e:
                raise BadRecipe(str(e)) from None
        if self.label == "full":
            return torch.from_numpy(row["prob"].astype(np.float32))
        raise BadRecipe("the set has no teacher labels")


def tar_bytes(n: int) -> int:
    """What a tar member of ``n`` bytes costs on disk: a 512-byte header and 512-byte blocks."""
    return 512 + -(-n // 512) * 512


def stale_recipe_message(spec: dict) -> str:
    """One line: the set was rendered by another recipe format, and the command that rebuilds it."""
    name = (spec.get("variant") or {}).get("name", "<set>")
    return (
        f"recipe set {name} was built with recipe format {spec.get('version')}, this loader "
        f"renders format {RECIPE_VERSION}: rebuild it with python -m data.build "
        f"build.store=recipe overwrite=true only=[{name}] (plus the build's dataset options)"
    )


class Replayer:
    """Renders the views of one recipe set from its manifest's ``recipe`` section.

    Holds plain data only (it travels to loader workers); the variant is built on first use.
    """

    def __init__(self, spec: dict, num_classes: int, check_digest: bool = True) -> None:
        if spec.get("version") != RECIPE_VERSION:
            raise ValueError(stale_recipe_message(spec))
        if list(spec.get("ops", [])) != list(RandAugment.OPS):
            raise ValueError(
                f"the set's RandAugment op table {spec.get('ops')} differs from this "
                f"loader's {list(RandAugment.OPS)}: rebuild the set"
            )
        self.spec, self.check_digest = spec, check_digest
        self.codec = ViewCodec(**spec["codec"])
        if self.codec.num_classes != num_classes:
            raise ValueError(
                f"recipe labels have {self.codec.num_classes} classes, the run {num_classes}"
            )
        self._variant: Variant | None = None

    @property
    def variant(self) -> Variant:
        if self._variant is None:
            recorded = self.spec["variant"]
            self._variant = make_variant(variant_config(recorded["name"], recorded))
        return self._variant

    def records(self, sample: dict) -> np.ndarray:
        """The sample's ``views.npy`` as [images, replicas] records of the set's dtype."""
        if VIEWS not in sample:
            raise BadRecipe(f"sample has no {VIEWS}")
        views = load_npy(sample[VIEWS])
        if views.dtype != self.codec.dtype or views.ndim != 2:
            raise BadRecipe(
                f"{VIEWS} holds {views.dtype} {views.shape}, the manifest says "
                f"{self.codec.dtype} [images, replicas]"
            )
        return views

    def classes(self, sample: dict, views: np.ndarray) -> np.ndarray:
        """The sample's ``cls.npy``: one class per source image (-1: unlabelled)."""
        if CLASSES not in sample:
            raise BadRecipe(f"sample has no {CLASSES}")
        classes = load_npy(sample[CLASSES])
        if classes.shape != (views.shape[0],) or classes.dtype.kind not in "iu":
            raise BadRecipe(
                f"{CLASSES} holds {classes.dtype} {classes.shape}, expected one int per image "
                f"({views.shape[0]})"
            )
        return classes

    def row(self, views: np.ndarray, i: int, replica: int) -> np.void:
        """The record of image ``i``'s ``replica``; ``BadRecipe`` outside the sample's views."""
        if not 0 <= i < views.shape[0] or not 0 <= replica < views.shape[1]:
            raise BadRecipe(f"view ({i}, {replica}) outside the sample's {views.shape}")
        return views[i, replica]

    def render(
        self,
        sample: dict,
        i: int,
        replica: int,
        views: np.ndarray | None = None,
        sources: dict[int, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.void, int]:
        """(view uint8 [H, W, 3], record, class) of image ``i``'s ``replica``.

        ``sources`` caches decoded source images by index across calls on one sample (a mixup
        group's views read each other's images). ``BadRecipe`` when a field is out of range or,
        with the digest check on, when the view, its label or its class is not what was built.
        """
        views = self.records(sample) if views is None else views
        row = self.row(views, i, replica)
        cls = int(self.classes(sample, views)[i])
        recipe = self.codec.recipe(row)
        sources = {} if sources is None else sources
        images: list[np.ndarray | None] = [None] * views.shape[0]
        for j in {i, recipe.get("partner", i)}:
            if not 0 <= j < len(images) or image_member(j) not in sample:
                raise BadRecipe(f"recipe reads source image {j}.jpg, which the sample lacks")
            if j not in sources:
                sources[j] = decode_source(sample[image_member(j)])
            images[j] = sources[j]
        view = self.variant.render(recipe, images, i)
        if self.check_digest and view_digest(pixel_hash(view), row, cls) != int(row["digest"]):
            raise BadRecipe(
                "view differs from the one the teacher labelled (digest over pixels, label and "
                "class): a changed record, or other library versions (run python -m data.verify "
                "on the set)"
            )
        return view, row, cls


class ReplicaPicker:
    """Which replica of an image to render on each visit: a different one each time.

    Each image starts at a seeded offset (per seed, rank and worker) and steps through its
    replicas in order, so R visits see R distinct views. Visit counts live as long as the stream
    object (loader workers are persistent, so across epochs).
    """

    def __init__(self, seed: int, rank: int, worker: int) -> None:
        self.salt = f"{seed}/{rank}/{worker}"
        self.visits: dict[int, int] = {}

    def __call__(self, name: str, replicas: int) -> int:
        h = hashlib.blake2b(f"{self.salt}/{name}".encode(), digest_size=8).digest()
        key = int.from_bytes(h, "little")
        n = self.visits.get(key, 0)
        self.visits[key] = n + 1
        return (key + n) % replicas


def random_views(
    counts: dict[str, int], n: int, seed: int
) -> dict[str, list[tuple[int, float, float]]]:
    """``n`` random (sample position, image draw, replica draw) per shard, for verification."""
    rng = random.Random(seed)
    shards = sorted(counts)
    total = sum(counts.values())
    if total == 0:
        return {}
    picks: dict[str, list[tuple[int, float, float]]] = {}
    for _ in range(n):
        k = rng.randrange(total)
        for s in shards:
            if k < counts[s]:
                picks.setdefault(s, []).append((k, rng.random(), rng.random()))
                break
            k -= counts[s]
    return picks


def sample_json(keys: list[str], refs: list[str], extra: dict | None = None) -> bytes:
    return json.dumps({"keys": keys, "refs": refs, **(extra or {})}).encode()


def set_replayer(manifest: Manifest, check_digest: bool = True) -> Replayer | None:
    """How a set's views are read back: a recipe set (its manifest records a ``recipe``) renders
    each view again with a ``Replayer``; a pixel set stores every view whole and gets None."""
    spec = manifest.data.get("recipe")
    return Replayer(spec, manifest.num_classes, check_digest) if spec else None
