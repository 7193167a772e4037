"""A training set with no usable sample ends the run with one line naming each shard."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from distill.app import run
from distill.cli_checks import UsageError

from .conftest import compose_train


def test_a_set_with_no_usable_sample_is_a_one_line_error(tiny_cache, tmp_path, env_no_wandb):
    cache = Path(next(o for o in tiny_cache if o.startswith("paths.cache=")).split("=", 1)[1])
    root = tmp_path / "shards"
    shutil.copytree(cache / "shards" / "digits", root)
    shards = sorted((root / "randaug").glob("*.tar"))
    for shard in shards:
        shard.write_bytes(b"")
    cfg = compose_train(
        [
            "+student=mnv4_conv_s",
            "+debug=smoke",
            *tiny_cache,
            f"data.root={root}",
            "data.num_workers=1",  # raised inside a loader worker
            "report.enabled=false",
            "export.enabled=false",
        ],
        tmp_path / "out",
    )
    with pytest.raises(UsageError) as err:
        run(cfg)
    message = str(err.value.code)
    assert message.startswith("error: no usable sample in training set randaug"), message
    assert "Traceback" not in message and "\n" not in message
    assert all(s.name in message for s in shards) and "python -m data.build" in message
