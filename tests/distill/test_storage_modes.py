"""Both storage modes through the app: the digits default (recipe sets, as ``tiny_cache`` builds
them) and ``build.store=pixels``; a run never trains on sets stored otherwise than it says."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from distill.app import run
from distill.cli_checks import UsageError

from .conftest import ON_CACHE, TINY_DATA, build_cache, compose_train

SMOKE = ["+student=mnv4_conv_s", "+debug=smoke", "data.shuffle_buffer=32", "export.enabled=false"]


def _storage(cache, name: str) -> str:
    manifest = json.loads((cache / "shards" / "digits" / name / "manifest.json").read_text())
    return manifest["storage"]["mode"]


@pytest.mark.slow  # builds its own cache and trains
def test_pixel_storage_builds_and_trains_end_to_end(tmp_path, env_no_wandb):
    cache = tmp_path / "cache"
    overrides = [f"paths.cache={cache}", *TINY_DATA, *ON_CACHE, "build.store=pixels"]
    build_cache(cache, overrides, baseline=False, teacher=True)
    assert _storage(cache, "randaug") == "pixels" and _storage(cache, "val") == "pixels"
    cfg = compose_train([*SMOKE, *overrides, "report.enabled=false"], tmp_path / "run")
    assert 0.0 <= run(cfg) <= 1.0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["global_step"] == 12


def test_the_default_stores_recipes_and_a_run_refuses_other_storage(tiny_cache, tmp_path):
    cache = Path(next(o.split("=", 1)[1] for o in tiny_cache if o.startswith("paths.cache=")))
    assert _storage(cache, "randaug") == "recipe"
    assert _storage(cache, "val") == "pixels"  # plain sets always store pixels
    cfg = compose_train([*SMOKE, *tiny_cache, "build.store=pixels"], tmp_path)
    with pytest.raises(UsageError, match=r"randaug \(recipe\).*build\.store=pixels"):
        run(cfg)


def test_a_recipe_set_of_an_older_format_is_refused_with_the_rebuild_command(tiny_cache, tmp_path):
    cache = Path(next(o.split("=", 1)[1] for o in tiny_cache if o.startswith("paths.cache=")))
    copy = shutil.copytree(cache, tmp_path / "cache")
    overrides = [f"paths.cache={copy}" if o.startswith("paths.cache=") else o for o in tiny_cache]
    manifest = copy / "shards" / "digits" / "randaug" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["recipe"]["version"] = 1
    manifest.write_text(json.dumps(data))
    cfg = compose_train([*SMOKE, *overrides], tmp_path / "run")
    with pytest.raises(UsageError) as err:
        run(cfg)
    message = str(err.value)
    assert "\n" not in message and "recipe sets randaug" in message
    assert "python -m data.build build.store=recipe overwrite=true only=[randaug]" in message
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before any work
