"""The search under real DDP (gloo, two CPU processes via torchrun): each replica samples its own
architecture, the rewards are averaged across them and the controllers stay identical."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO


def _rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # two processes, the smoke search (a few minutes on 2 cores)
def test_each_replica_samples_its_own_architecture_and_rewards_are_averaged(tiny_cache, tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29731",
        "-m",
        "nas",
        "+nas=digits",
        "+debug=smoke",
        *tiny_cache,
        "data.shuffle_buffer=32",
        "data.num_workers=0",
        "nas.target.ms=1.0",
        "nas.coarse.steps=10",
        "nas.fine.steps=4",
        f"hydra.run.dir={out}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    zero, one = _rows(out / "nas" / "coarse.csv"), _rows(out / "nas" / "coarse.rank1.csv")
    assert [r["step"] for r in zero] == [r["step"] for r in one] == [str(i) for i in range(10)]
    searched = [(a, b) for a, b in zip(zero, one, strict=True) if a["reward"]]
    assert searched
    assert any(a["arch"] != b["arch"] for a, b in zip(zero, one, strict=True))
    for a, b in searched:
        mean = (float(a["reward"]) + float(b["reward"])) / 2
        assert float(a["reward_mean"]) == pytest.approx(mean) == float(b["reward_mean"])
        assert a["baseline"] == b["baseline"]
    probs = [k for k in zero[0] if k.startswith("p/")]
    assert all(a[k] == b[k] for a, b in zip(zero, one, strict=True) for k in probs)
    assert (out / "searched.yaml").is_file() and (out / "checkpoints" / "fine.rank1.pt").is_file()
