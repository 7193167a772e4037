"""SIGTERM to the whole process group (SLURM ``scancel``, ``kill -TERM -<pgid>``) also kills the
DataLoader workers; the run must still save ``last.ckpt`` at that step and exit 143, not fail,
while a worker that dies on its own (a crash, the OOM killer) still fails the run."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from distill.app import run
from tests.helpers import REPO

from .conftest import compose_train

pytestmark = pytest.mark.slow

# 4 steps an epoch, validated (and last.ckpt written) after each; 2 loader workers.
RUN = [
    "+student=mnv4_conv_s",
    "+debug=smoke",
    "data.num_workers=2",
    "data.samples_per_epoch=64",
    "trainer.limit_val_batches=1",
    "export.enabled=false",
]


def _step(ckpt: Path) -> int:
    return int(torch.load(ckpt, weights_only=True, map_location="cpu")["global_step"])


@contextmanager
def _validated_run(overrides: list[str], out: Path) -> Iterator[subprocess.Popen]:
    """A training run in its own process group (as a batch job's), once past its first
    validation; killed with its workers if still running at the end."""
    with open(out / "stderr.txt", "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "distill", *RUN, *overrides, "trainer.max_steps=100000"]
            + [f"hydra.run.dir={out}"],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, "WANDB_MODE": "disabled"},
            start_new_session=True,
        )
    try:
        deadline = time.time() + 300
        while not (out / "checkpoints" / "last.ckpt").is_file():
            assert proc.poll() is None, (out / "stderr.txt").read_text()[-3000:]
            assert time.time() < deadline, "training never validated"
            time.sleep(0.2)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_sigterm_to_the_process_group_saves_the_current_step_and_exits_143(
    tiny_cache, tmp_path, env_no_wandb
):
    last = tmp_path / "checkpoints" / "last.ckpt"
    with _validated_run(tiny_cache, tmp_path) as proc:
        first_val = _step(last)
        time.sleep(1.5)  # a few steps further
        os.killpg(proc.pid, signal.SIGTERM)  # the main process and its loader workers
        proc.wait(timeout=120)
    text = (tmp_path / "stderr.txt").read_text()
    assert proc.returncode == 143, text[-3000:]
    stopped = re.search(r"stopped by SIGTERM at step (\d+)", text)
    assert stopped and "ckpt_path=last" in text, text[-3000:]
    step = int(stopped.group(1))
    saved = _step(last)
    assert step > first_val and saved == step, (first_val, step, saved)  # saved at the signal

    resume = [*RUN, *tiny_cache, f"trainer.max_steps={step + 2}", "ckpt_path=last"]
    run(compose_train(resume, tmp_path))
    assert json.loads((tmp_path / "results.json").read_text())["global_step"] == step + 2
    with open(tmp_path / "csv" / "metrics.csv", newline="") as f:
        trained = [int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss")]
    assert [s for s in trained if s >= step] == [step, step + 1], trained  # not restarted


def test_a_loader_worker_killed_without_a_sigterm_still_fails_the_run(tiny_cache, tmp_path):
    with _validated_run(tiny_cache, tmp_path) as proc:
        children = Path(f"/proc/{proc.pid}/task").glob("*/children")
        workers = [int(pid) for f in children for pid in f.read_text().split()]
        assert workers, "no loader workers"
        os.kill(workers[0], signal.SIGKILL)  # as the OOM killer does
        proc.wait(timeout=120)
    text = (tmp_path / "stderr.txt").read_text()
    assert proc.returncode not in (0, 143), text[-3000:]
    assert f"DataLoader worker (pid {workers[0]}) is killed by signal: Killed" in text
    assert "stopped by SIGTERM" not in text
