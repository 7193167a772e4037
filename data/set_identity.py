"""A set's identity: everything that decides its bytes, hashed into its ``build.json``.

A rerun with the same identity resumes the set's finished shards; a different one is refused
(or, with ``overwrite``, the set is cleared), so shards of two configs never mix in one set.
"""

from __future__ import annotations

from data import urls
from data.recipes import RECIPE_VERSION
from data.set_store import SetStore
from data.shards import config_hash
from data.sources import Source
from data.variants import Variant
from teachers import FrozenTeacher

RECIPE_ONLY_KEYS = (
    "raw_size",
    "group",
    "pack",
)  # left out of a pixel set's identity (hash unchanged)


def set_identity(
    variant: Variant,
    source: Source,
    teacher: FrozenTeacher | None,
    top_k: int | None,
    temperature: float,
    shard_size: int,
    recipe: bool,
    raw_size: int,
    pack: int,
) -> dict:
    """The config a set's shards are built from (``recipe``: stored as recipes, not pixels)."""
    return {
        "variant": {
            k: v for k, v in variant.cfg.record().items() if recipe or k not in RECIPE_ONLY_KEYS
        },
        "source": source.describe(),
        "items": len(source.items),
        "teacher": None if teacher is None else teacher.info.spec,
        "top_k": top_k,
        "temperature": temperature,
        "shard_size": shard_size,
        # only recipe sets name their storage: pixel sets built before it keep their hash
        **(
            {
                "store": "recipe",
                "raw_size": raw_size,
                "recipe_version": RECIPE_VERSION,
                "pack": pack,
            }
            if recipe
            else {}
        ),
    }


def check_identity(place: SetStore, ident: dict, rank: int, overwrite: bool) -> str:
    """The hash of ``ident``, after checking it against the set's ``build.json`` (rank 0
    writes it)."""
    h = config_hash(ident)
    old = place.read_json("build.json")
    if old is not None and old.get("config_hash") != h:
        if not overwrite:
            raise ValueError(
                f"{urls.redact(place.url)} holds shards built from a different config "
                f"({old.get('config_hash')} vs {h}); pass overwrite=true to rebuild it or "
                "choose another out_dir"
            )
        place.clear()
    place.dir.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        place.write_json("build.json", {"config_hash": h, "config": ident})
    return h
