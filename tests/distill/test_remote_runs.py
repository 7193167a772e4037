"""Runs that read their sets from a URL: an unreachable server stops a run before any work, a
set served over HTTP trains exactly as on disk, and the whole path on an S3-compatible server:
``data.build`` killed mid-upload and resumed, a 2-rank DDP run reading it, a resume, the server
killed mid-run (the node-local cache carries on) and a SIGTERM that still saves and exits 143."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from data import remote
from distill.app import prepare_data, run
from distill.cli_checks import UsageError
from testkit.servers import CREDENTIALS, RangeServer, free_port, python_env
from tests.distill.conftest import compose_train
from tests.helpers import REPO, save_random_teacher

FAST_REMOTE = ["remote.retry_s=1", "remote.retries=2", "remote.connect_timeout_s=0.5"]


def test_a_server_not_reachable_at_start_is_one_line_naming_the_url(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/sets/digits"
    cfg = compose_train(["+student=mnv4_conv_s", f"data.root={url}", *FAST_REMOTE], tmp_path)
    try:
        with pytest.raises(UsageError) as e:
            prepare_data(OmegaConf.to_object(cfg))
    finally:
        remote.configure(None)
    message = str(e.value.code)
    assert len(message.splitlines()) == 1 and message.startswith("error: ")
    assert f"{url}/manifest.json: cannot reach the server" in message


def _losses(run_dir: Path) -> list[tuple[int, float]]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return [
            (int(r["step"]), float(r["train/loss"])) for r in csv.DictReader(f) if r["train/loss"]
        ]


@pytest.mark.slow
def test_a_set_served_over_http_trains_exactly_as_on_disk(tiny_cache, tmp_path, env_no_wandb):
    cache = Path(next(o for o in tiny_cache if o.startswith("paths.cache=")).split("=", 1)[1])
    server = RangeServer(cache)
    base = [
        "+student=mnv4_conv_s",
        *tiny_cache,
        "trainer.max_steps=6",
        "trainer.log_every_n_steps=1",
        "data.batch_size=16",
        "data.num_workers=1",
        "export.enabled=false",
        "report.enabled=false",
    ]
    try:
        run(compose_train(base, tmp_path / "disk"))
        run(compose_train([*base, f"data.root={server.url}/shards/digits"], tmp_path / "http"))
    finally:
        server.stop()
        remote.configure(None)
    disk, http = _losses(tmp_path / "disk"), _losses(tmp_path / "http")
    assert len(disk) == 6 and http == disk  # same seed, same batches, same losses
    gets = [p for m, p, _ in server.requests if m == "GET"]
    assert any(p.endswith(".tar") for p in gets)  # it did read the shards over HTTP


def _secrets_absent(where: list[Path], texts: list[str]) -> None:
    secrets = [CREDENTIALS["AWS_SECRET_ACCESS_KEY"], CREDENTIALS["AWS_ACCESS_KEY_ID"]]
    for text in texts:
        assert not any(s in text for s in secrets)
    for root in where:
        for path in root.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert not any(s.encode() in data for s in secrets), path


def _wait_for(predicate, what: str, proc: subprocess.Popen, limit_s: float = 600) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        assert proc.poll() is None, f"exited before {what}: {proc.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} after {limit_s} s"
        time.sleep(0.2)


def _step(run_dir: Path) -> int:
    try:
        return max((s for s, _ in _losses(run_dir)), default=-1)
    except (FileNotFoundError, KeyError, ValueError):
        return -1


@pytest.mark.slow
def test_build_to_s3_killed_and_resumed_then_ddp_trains_resumes_and_survives_the_server(
    moto_server, tmp_path, monkeypatch
):
    for key, value in moto_server.env.items():
        monkeypatch.setenv(key, value)
    moto_server.make_bucket("wholepath")
    remote.configure(remote.settings())
    root = "s3://wholepath/sets/digits"
    cache = tmp_path / "cache"
    common = [
        f"paths.cache={cache}",
        f"paths.shards={root}",
        "digits.fractions={labelled:0.04,pool:0.04,val:0.036}",
        "data.train_sets={randaug:1,mixup:0,extra:0}",
        "variants.randaug.replicas=4",
        "teacher.train_if_missing=false",
        "build.progress=false",
        "build.num_workers=0",
        "build.shard_size=8",
    ]
    cfg = compose_train(["+student=mnv4_conv_s", *common], tmp_path / "compose")
    c = OmegaConf.to_container(cfg, resolve=True)
    save_random_teacher(Path(c["teacher"]["cache_path"]))
    env = python_env({**moto_server.env, "WANDB_MODE": "offline"})
    outputs: list[str] = []

    # 1. a build killed while it uploads: no manifest; the rerun keeps what was uploaded
    build = [sys.executable, "-m", "data.build", *common, "only=[randaug,val]"]
    proc = subprocess.Popen(
        [*build, f"hydra.run.dir={tmp_path / 'b1'}"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(lambda: len(_shards(f"{root}/randaug")) >= 2, "two uploaded shards", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = len(_shards(f"{root}/randaug"))
    assert "manifest.json" not in _names(f"{root}/randaug") and kept < 36
    again = subprocess.run(
        [*build, f"hydra.run.dir={tmp_path / 'b2'}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"/{kept}" in again.stdout  # shards uploaded before the kill were kept
    outputs += [again.stdout, again.stderr]

    # 2. two DDP ranks train from the bucket (shards cached on this node), then a resume
    run_dir = tmp_path / "run"
    train = [
        sys.executable, "-m", "distill", "student=mnv4_conv_s", "trainer=ddp_cpu", *common,
        "trainer.max_steps=6", "trainer.log_every_n_steps=1",
        "data.batch_size=16",
        "data.num_workers=0", "data.samples_per_epoch=96", f"data.cache_dir={tmp_path / 'node'}",
        "baseline.enabled=false", "export.enabled=false", "report.enabled=false",
        "logger=wandb", "remote.retry_s=2", "remote.retries=2", f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    first = subprocess.run(train, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    outputs += [first.stdout, first.stderr]
    assert _step(run_dir) == 5
    assert list((tmp_path / "node").glob("*.tar"))  # the node-local cache was filled

    # 3. resumed; the server dies mid-run: cached shards carry on; SIGTERM saves, exits 143
    resumed = subprocess.Popen(
        [*train, "ckpt_path=last", "trainer.max_steps=100000"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    _wait_for(lambda: _step(run_dir) >= 8, "steps after the resume", resumed)
    moto_server.kill()
    try:
        stepped = _step(run_dir)
        _wait_for(lambda: _step(run_dir) >= stepped + 4, "steps without the server", resumed)
        os.killpg(resumed.pid, signal.SIGTERM)
        out, err = resumed.communicate(timeout=300)
    finally:
        moto_server.start()  # a fresh, empty server for any later test
    assert resumed.returncode == 143, err[-3000:]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    outputs += [out, err]
    _secrets_absent([run_dir, tmp_path / "b1", tmp_path / "b2"], outputs)


def _names(prefix: str) -> list[str]:
    try:
        return remote.list_names(prefix)
    except remote.RemoteError:
        return []


def _shards(prefix: str) -> list[str]:
    """Shards uploaded whole: the tar and its record."""
    names = set(_names(prefix))
    return [n for n in names if n.endswith(".tar") and n.removesuffix(".tar") + ".json" in names]
