"""Whole ``build`` and variant sections for tests and benchmarks that build sets by hand.

The YAML is the one place for the apps' defaults and ``build_sets`` reads every value from its
sections, so a hand-written section must be whole: these fill what a test leaves out with the
values the builder used to default to, which the tests' expectations were measured with.
"""

from __future__ import annotations

from typing import Any

from common.images import EVAL_CROP_PCT

BUILD = {
    "shard_size": 500,
    "store": "pixels",
    "batch_size": 64,
    "num_workers": 0,
    "top_k": None,
    "temperature": 1.0,
    "progress": True,
    "wait_s": 86400.0,
}


def build_cfg(**changes: Any) -> dict:
    """A whole ``build`` section: ``changes`` over ``BUILD``."""
    return {**BUILD, **changes}


def variant_cfg(**cfg: Any) -> dict:
    """A whole variant of ``cfg["kind"]``: ``cfg`` over one replica, seed 0, JPEG quality 90,
    the kind's paper settings and a raw size of ``image_size`` x 256/224."""
    kind, size = cfg["kind"], cfg["image_size"]
    base: dict[str, Any] = {"replicas": 1, "seed": 0, "jpeg_quality": 90}
    if kind != "plain":
        base |= {"raw_size": round(size * 256 / 224), "crop_scale": [0.08, 1.0]}
    if kind in ("randaug", "extra", "inpaint"):
        base["pack"] = 8
    if kind == "randaug":
        base["randaugment"] = {"num_ops": 2, "magnitude": 9}
    if kind == "extra":
        base |= {
            "randaugment": {"num_ops": 2, "magnitude": 5},
            "threshold": 0.3,
            "per_class": None,
            "score_crop_pct": EVAL_CROP_PCT,
        }
    if kind == "mixup":
        base |= {"alpha": 1.0, "group": 8}
    if kind == "inpaint":
        base |= {
            "mask_area": [0.05, 0.25],
            "mask_kinds": ["rect", "stroke"],
            "method": "telea",
            "radius": 3.0,
            "inpainter": None,
        }
    if kind == "plain":
        base["crop_pct"] = EVAL_CROP_PCT
    return {**base, **cfg}
