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
CRC-32 of the rendered pixels and the teacher's label of exactly those pixels. The loader
renders a record with the same ``Variant.render`` the builder used and checks the digest, so a
view that does not replay exactly is a counted skip, never a silently wrong label.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import random
import zlib
from dataclasses import asdict, dataclass

import numpy as np
import torch

from common.images import decode_jpeg
from data.augment import BadRecipe, RecordedRandAugment, Variant, make_variant
from data.labels import load_npy

RECIPE_VERSION = 1
VIEWS = "views.npy"
CLASSES = "cls.npy"
RENDER_LIBRARIES = (
    "torch",
    "torchvision",
    "numpy",
    "pillow",
    "opencv-python-headless",
    "simplejpeg",
)


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


def view_digest(view: torch.Tensor) -> int:
    """CRC-32 of a rendered uint8 view (shape included): catches a replay that differs from the
    labelled pixels (a 1 in 4 billion miss), at 0.04 ms per 224-px view (blake2b: 0.16 ms)."""
    data = view.contiguous().numpy()
    return zlib.crc32(data, zlib.crc32(str(tuple(view.shape)).encode()))


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

    @property
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

    def encode(self, recipes: list[dict], digests: list[int], probs, indices) -> np.ndarray:
        """Records for ``recipes`` (with the views' digests and the teacher's labels)."""
        boxes = [r["crop"] for r in recipes] + [r.get("partner_crop", [0]) for r in recipes]
        if boxes and max(max(b) for b in boxes) > 65535:
            raise ValueError("a crop box exceeds 65535 px, the record's limit: lower raw_size")
        out = np.zeros(len(recipes), dtype=self.dtype)
        out["crop"] = [r["crop"] for r in recipes]
        out["digest"] = digests
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
            cls = row["cls"].astype(np.int64)
            if cls.max() >= self.num_classes:
                raise BadRecipe(f"label names class {int(cls.max())} of {self.num_classes}")
            out = torch.zeros(self.num_classes)
            out[torch.from_numpy(cls)] = torch.from_numpy(row["prob"].astype(np.float32))
            return out / out.sum() if out.sum() > 0 else out
        if self.label == "full":
            return torch.from_numpy(row["prob"].astype(np.float32))
        raise BadRecipe("the set has no teacher labels")


def encode_npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def tar_bytes(n: int) -> int:
    """What a tar member of ``n`` bytes costs on disk: a 512-byte header and 512-byte blocks."""
    return 512 + -(-n // 512) * 512


class Replayer:
    """Renders the views of one recipe set from its manifest's ``recipe`` section.

    Holds plain data only (it travels to loader workers); the variant is built on first use.
    """

    def __init__(self, spec: dict, num_classes: int, check_digest: bool = True) -> None:
        if spec.get("version") != RECIPE_VERSION:
            raise ValueError(
                f"recipe format {spec.get('version')} is not this loader's ({RECIPE_VERSION}): "
                "rebuild the set with python -m data.build"
            )
        if list(spec.get("ops", [])) != list(RecordedRandAugment.OPS):
            raise ValueError(
                f"the set's RandAugment op table {spec.get('ops')} differs from this "
                f"torchvision's {list(RecordedRandAugment.OPS)}: rebuild the set"
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
            self._variant = make_variant(dict(self.spec["variant"]))
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

    def render(self, sample: dict, i: int, replica: int, views: np.ndarray | None = None):
        """(view uint8 [3, H, W], record) of image ``i``'s ``replica``; ``BadRecipe`` if not exact."""
        views = self.records(sample) if views is None else views
        if not 0 <= i < views.shape[0] or not 0 <= replica < views.shape[1]:
            raise BadRecipe(f"view ({i}, {replica}) outside the sample's {views.shape}")
        row = views[i, replica]
        recipe = self.codec.recipe(row)
        images: list[torch.Tensor | None] = [None] * views.shape[0]
        for j in {i, recipe.get("partner", i)}:
            if not 0 <= j < len(images) or image_member(j) not in sample:
                raise BadRecipe(f"recipe reads source image {j}.jpg, which the sample lacks")
            images[j] = decode_jpeg(sample[image_member(j)])
        view = self.variant.render(recipe, images, i)
        if self.check_digest and view_digest(view) != int(row["digest"]):
            raise BadRecipe(
                "replayed view differs from the one the teacher labelled (digest); library "
                "versions differ? run python -m data.verify on the set"
            )
        return view, row


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
