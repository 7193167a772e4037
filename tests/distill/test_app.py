"""The app end to end: every student, the distillation gain, DDP, resume, sweeps, W&B, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import students
from distill.app import run
from tests.helpers import REPO, run_module

from .conftest import compose_train

pytestmark = pytest.mark.slow


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def _cli(args: list[str], env: dict | None = None, timeout: int = 600):
    return run_module("distill", args, env, timeout)


@pytest.mark.parametrize("name", students.list_models())
def test_tiny_run_per_student_trains_validates_and_checkpoints(
    name, digits_cache, tmp_path, env_no_wandb
):
    cfg = compose_train([f"+student={name}", "+debug=smoke", *digits_cache], tmp_path)
    metric = run(cfg)
    r = _results(tmp_path)
    assert r["global_step"] == 12 and 0.0 <= metric <= 1.0
    assert {"val/top1", "val/top5", "val/ema_top1", "val/agree_top1"} <= set(r["student_metrics"])
    assert (tmp_path / r["last_checkpoint"]).is_file()
    assert (tmp_path / r["best_checkpoint"]).is_file()  # relative to the run directory
    weights = tmp_path / r["exports"]["safetensors"]
    again = students.create_model(name, num_classes=10, checkpoint=weights)
    assert again.num_classes == 10
    assert (tmp_path / "csv" / "metrics.csv").is_file()


def test_distilled_student_beats_the_from_labels_baseline(digits_cache, tmp_path, env_no_wandb):
    """The embedded default at a reduced budget (same split, same steps for both)."""
    cfg = compose_train(
        [
            "+student=mnv4_conv_s",
            "trainer.max_steps=120",
            "data.samples_per_epoch=3840",
            "export.onnx=false",
            "trainer.enable_progress_bar=false",
            *digits_cache,
            "baseline.enabled=true",
        ],
        tmp_path,
    )
    run(cfg)
    r = _results(tmp_path)
    distilled, baseline = r["student_metrics"]["val/top1"], r["baseline_metrics"]["val/top1"]
    assert distilled > baseline + 0.02, (distilled, baseline)
    assert r["teacher_top1"] > distilled - 0.1


def test_labels_mode_trains_from_the_shards_classes_without_a_teacher(
    digits_cache, tmp_path, env_no_wandb
):
    """``mode=labels`` (the from_labels_* experiments) reads the offline shards' ``cls``."""
    cfg = compose_train(
        ["+student=mnv4_conv_s", "+debug=smoke", "mode=labels", *digits_cache], tmp_path
    )
    run(cfg)
    r = _results(tmp_path)
    assert r["mode"] == "labels" and r["global_step"] == 12
    metrics = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "train/loss_gt" in metrics and "train/loss_kd" not in metrics


def test_resume_from_last_continues_at_the_same_step(digits_cache, tmp_path, env_no_wandb):
    base = ["+student=mnv4_conv_s", "+debug=smoke", *digits_cache]
    run(compose_train(base, tmp_path))
    assert _results(tmp_path)["global_step"] == 12
    run(compose_train([*base, "ckpt_path=last", "trainer.max_steps=18"], tmp_path))
    r = _results(tmp_path)
    assert r["global_step"] == 18
    metrics = (tmp_path / "csv" / "metrics.csv").read_text()
    assert "step" in metrics


def _smoke_cli(args: list[str], digits_cache: list[str], flags: tuple[str, ...] = ()) -> None:
    """``python -m distill FLAGS +student=mnv4_conv_s +debug=smoke ARGS`` as a user types it
    (Hydra's flags such as ``-m`` come before the overrides); must pass."""
    out = _cli(
        [*flags, "+student=mnv4_conv_s", "+debug=smoke", *args, *digits_cache],
        env={"WANDB_MODE": "disabled"},
    )
    assert out.returncode == 0, out.stderr[-3000:]


def test_two_process_ddp_run_started_like_a_user_does(digits_cache, tmp_path):
    _smoke_cli(["trainer=ddp_cpu", f"hydra.run.dir={tmp_path}"], digits_cache)
    r0, r1 = (json.loads((tmp_path / "ranks" / f"rank{i}.json").read_text()) for i in (0, 1))
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["global_step"] == r1["global_step"] == 12
    assert r0["metrics"] == r1["metrics"]  # torchmetrics synchronised across ranks
    assert (tmp_path / "results.json").is_file()


def test_sweep_over_two_values_gives_two_run_directories(digits_cache, tmp_path):
    _smoke_cli(["optimizer.lr=0.001,0.003", f"hydra.sweep.dir={tmp_path}"], digits_cache, ("-m",))
    for d, lr in (("0", "0.001"), ("1", "0.003")):
        assert f"optimizer.lr={lr}" in (tmp_path / d / ".hydra" / "overrides.yaml").read_text()
        assert _results(tmp_path / d)["global_step"] == 12


def test_sweep_with_ddp_is_refused_before_any_work(tmp_path):
    out = _cli(
        ["-m", "+student=mnv4_conv_s", "trainer=ddp_cpu", "seed=1,2", f"hydra.sweep.dir={tmp_path}"]
    )
    assert out.returncode != 0
    assert "cannot be combined with multi-process DDP" in out.stderr
    assert not list(tmp_path.rglob("results.json"))


def test_wandb_offline_run_records_the_metrics(digits_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run(
        compose_train(
            ["+student=mnv4_conv_s", "+debug=smoke", "logger=wandb", *digits_cache], tmp_path
        )
    )
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    records = b"".join(p.read_bytes() for p in runs[0].glob("*.wandb"))
    assert b"val/top1" in records and b"train/loss" in records


def test_wandb_without_key_or_network_does_not_hang(digits_cache, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    env["HOME"] = str(tmp_path)  # no ~/.netrc, so no API key: the run goes offline
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "distill",
            "+student=mnv4_conv_s",
            "+debug=smoke",
            "logger=wandb",
            *digits_cache,
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))


def test_online_teacher_with_the_wrong_class_count_fails_before_training(digits_cache, tmp_path):
    from teachers import build_model, save_teacher

    wrong = save_teacher(
        build_model("timm:resnet10t", 3, pretrained=False),
        "timm:resnet10t",
        tmp_path / "three.safetensors",
    )
    cfg = compose_train(
        [
            "+student=mnv4_conv_s",
            "+debug=smoke",
            "mode=online",
            *digits_cache,
            f"teacher.checkpoint={wrong}",
        ],
        tmp_path / "out",
    )
    with pytest.raises(ValueError, match="has 3 classes but 10 were asked for"):
        run(cfg)
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_missing_data_path_fails_before_any_work(tmp_path):
    out = _cli(
        [
            "+student=mnv4_conv_s",
            "dataset=folder",
            f"data_root={tmp_path / 'nope'}",
            f"paths.cache={tmp_path / 'cache'}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ]
    )
    assert out.returncode != 0
    assert "image folder not found" in out.stderr and "nope" in out.stderr
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").rglob("*.tar"))


def test_sigterm_saves_last_checkpoint_and_exits_non_zero(digits_cache, tmp_path):
    import signal
    import time

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "distill",
            "+student=mnv4_conv_s",
            "+debug=smoke",
            "trainer.max_steps=100000",
            "data.samples_per_epoch=100000",
            *digits_cache,
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "WANDB_MODE": "disabled"},
    )
    metrics = tmp_path / "csv" / "metrics.csv"
    deadline = time.time() + 300
    while not (metrics.is_file() and metrics.read_text().count("\n") > 3):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < deadline, "training never started"
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]  # 128 + SIGTERM: a scheduler must not see success
    assert "stopped by SIGTERM" in err and "ckpt_path=last" in err
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert "SIGTERM: saved" in (tmp_path / "distill.log").read_text()
