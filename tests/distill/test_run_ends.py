"""Every run ends right: last.ckpt is the last step, resumes keep their logs, bad values and bad
checkpoints fail before any work, damaged shards still give results, seeds reproduce runs."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from distill.app import run
from distill.checkpoints import CheckpointError, resolve_resume
from distill.cli_checks import UsageError
from distill.logs import RunCSVLogger
from tests.helpers import run_module

from .conftest import compose_train


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def _rows(out: Path) -> list[dict]:
    with open(out / "csv" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _train_steps(out: Path) -> list[int]:
    return [int(r["step"]) for r in _rows(out) if r.get("train/loss")]


# -- fast: mistakes caught before any work ------------------------------------------------------


@pytest.mark.parametrize(
    "override, key",
    [
        ("data.batch_size=0", "data.batch_size"),
        ("data.batch_size=-4", "data.batch_size"),
        ("data.num_workers=-1", "data.num_workers"),
        ("trainer.max_steps=0", "trainer.max_steps"),
        ("ema.decay=1.5", "ema.decay"),
        ("data.train_sets.randaug=-1", "data.train_sets"),
        ("build.store=recipes", "build.store"),
        ("loss.kind=nonsense", "loss.kind"),
    ],
)
def test_bad_values_fail_before_any_work_naming_the_key(override, key, tmp_path):
    cfg = compose_train(
        ["+student=mnv4_conv_s", f"paths.cache={tmp_path / 'cache'}", override], tmp_path / "out"
    )
    with pytest.raises(UsageError, match=key.replace(".", r"\.")):
        run(cfg)
    assert not (tmp_path / "cache").exists()  # no teacher trained, no shard built


class _RunsCode:
    """Unpickling this would create a file: the project must never do it."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def _write_bad(kind: str, path: Path, tmp_path: Path) -> None:
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(os.urandom(4096))
    elif kind == "code":
        torch.save({"state_dict": {}, "loops": {}, "x": _RunsCode(tmp_path / "pwned")}, path)
    elif kind == "weights":
        torch.save({"conv.weight": torch.zeros(2)}, path)
    elif kind == "other_student":
        torch.save(
            {"state_dict": {}, "loops": {}, "hyper_parameters": {"student": "mnv4_conv_m"}}, path
        )


@pytest.mark.parametrize(
    "kind, message",
    [
        ("empty", "is empty"),
        ("random", "not a PyTorch checkpoint"),
        ("code", "other than tensors"),
        ("weights", "not a Lightning training checkpoint"),
        ("other_student", "'mnv4_conv_m' but this run's student is 'mnv4_conv_s'"),
    ],
)
def test_bad_resume_checkpoints_get_a_clear_safe_error(kind, message, tmp_path):
    path = tmp_path / "bad.ckpt"
    _write_bad(kind, path, tmp_path)
    with pytest.raises(CheckpointError) as e:
        resolve_resume(str(path), tmp_path, "mnv4_conv_s")
    text = str(e.value)
    assert message in text and str(path) in text
    assert "weights_only=False" not in text  # never advise unsafe loading
    assert not (tmp_path / "pwned").exists()


def test_resume_checkpoint_is_checked_before_any_work(tmp_path):
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    cfg = compose_train(
        ["+student=mnv4_conv_s", f"paths.cache={tmp_path / 'cache'}", f"ckpt_path={empty}"],
        tmp_path / "out",
    )
    with pytest.raises(CheckpointError, match="empty"):
        run(cfg)
    assert not (tmp_path / "cache").exists()


def test_resume_from_last_in_a_new_folder_says_which_folder_to_pass(tmp_path):
    with pytest.raises(CheckpointError, match=r"hydra\.run\.dir="):
        resolve_resume("last", tmp_path / "checkpoints", "mnv4_conv_s")


def test_csv_logger_keeps_the_rows_before_the_resume_step(tmp_path):
    first = RunCSVLogger(tmp_path)
    for step in range(10):
        first.log_metrics({"train/loss": float(step)}, step=step)
    first.save()
    resumed = RunCSVLogger(tmp_path, resume_step=5)
    resumed.log_metrics({"train/loss": 60.0, "val/top1": 0.5}, step=6)
    resumed.save()
    steps = _train_steps(tmp_path)
    assert steps == [0, 1, 2, 3, 4, 5, 6]  # rows after the checkpoint were dropped, then appended
    assert _rows(tmp_path)[-1]["val/top1"] == "0.5"


# -- slow: real runs on the digits cache ---------------------------------------------------------


@pytest.mark.slow
def test_last_checkpoint_is_the_last_step_and_resume_keeps_the_logs(
    digits_cache, tmp_path, env_no_wandb
):
    # epochs of 6 steps, validation every 2 epochs (step 12) and at the end (step 15): last.ckpt
    # is the last step whether or not step 15 is a new best
    base = [
        "+student=mnv4_conv_s",
        "+debug=smoke",
        *digits_cache,
        "trainer.check_val_every_n_epoch=2",
    ]
    run(compose_train([*base, "trainer.max_steps=15"], tmp_path))
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True, map_location="cpu")["global_step"] == 15
    assert _results(tmp_path)["last_checkpoint"] == "checkpoints/last.ckpt"
    before = _train_steps(tmp_path)
    assert min(before) == 0 and max(before) == 14

    run(compose_train([*base, "trainer.max_steps=21", "ckpt_path=last"], tmp_path))
    assert _results(tmp_path)["global_step"] == 21
    assert torch.load(last, weights_only=True, map_location="cpu")["global_step"] == 21
    steps = _train_steps(tmp_path)
    assert steps[: len(before)] == before  # the first run's rows survived the resume
    assert max(steps) == 20 and len(steps) == len(set(steps))


def _damage(shard: Path, keep: float = 0.5) -> None:
    """Cut a tar shard inside a member (what a full disk or a killed copy leaves)."""
    data = shard.read_bytes()
    shard.write_bytes(data[: int(len(data) * keep) + 100])


@pytest.mark.slow
def test_damaged_shards_still_give_summary_results_and_export(
    digits_cache, tmp_path, env_no_wandb, capsys
):
    cache = Path(next(o for o in digits_cache if o.startswith("paths.cache=")).split("=", 1)[1])
    root = tmp_path / "shards"
    shutil.copytree(cache / "shards" / "digits", root)
    val_shard = sorted((root / "val").glob("*.tar"))[0]
    _damage(val_shard)
    for shard in (root / "randaug").glob("*.tar"):  # each still yields its first samples
        _damage(shard, keep=0.1)
    out = tmp_path / "out"
    cfg = compose_train(
        [
            "+student=mnv4_conv_s",
            "+debug=smoke",
            *digits_cache,
            f"data.root={root}",
            "teacher.spec=timm:resnet50",  # the config names another teacher than the shards'
        ],
        out,
    )
    run(cfg)
    r = _results(out)
    assert r["global_step"] == 12 and (out / r["exports"]["safetensors"]).is_file()
    assert r["teacher"] == "timm:resnet10t"  # what the manifests record labelled the data
    assert set(r["data_teachers"].values()) == {"timm:resnet10t"}
    assert r["teacher_top1"] is not None  # from the readable part of the validation set
    damaged = r["skipped"]["teacher_top1"]
    assert [Path(p).name for p, _ in damaged] == [val_shard.name]
    train = r["skipped"]["training"]
    assert train["count"] > 0 and train["first"]
    assert any("Error" in reason for _, reason in train["first"])
    printed = capsys.readouterr().out
    assert "skipped inputs" in printed and "teacher timm:resnet10t" in printed


@pytest.mark.slow
def test_same_seed_same_losses(digits_cache, tmp_path, env_no_wandb):
    losses = []
    for i in range(2):
        out = tmp_path / str(i)
        run(
            compose_train(
                [
                    "+student=mnv4_conv_s",
                    "+debug=smoke",
                    *digits_cache,
                    "trainer.max_steps=4",
                    "trainer.limit_val_batches=1",
                    "data.num_workers=2",
                    "seed=3",
                    "export.enabled=false",
                ],
                out,
            )
        )
        losses.append([r["train/loss"] for r in _rows(out) if r.get("train/loss")])
    assert len(losses[0]) == 4 and losses[0] == losses[1]


def _cli(args: list[str], env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return run_module("distill", args, env, timeout)


@pytest.mark.slow
def test_command_line_mix_replaces_the_default_and_wandb_offline_says_how_to_sync(
    digits_cache, tmp_path
):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    out = _cli(
        [
            "+student=mnv4_conv_s",
            "+debug=smoke",
            *digits_cache,
            "data.train_sets={randaug: 1}",
            "logger=wandb",
            f"hydra.run.dir={tmp_path}",
        ],
        {**env, "WANDB_MODE": "offline", "HOME": str(tmp_path)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    r = _results(tmp_path)
    assert set(r["data_teachers"]) == {"randaug", "val"}  # mixup and extra dropped
    both = out.stdout + out.stderr
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert f"wandb sync {runs[0]}" in both
    for noise in ("anonymous", "sync_dist", "litlogger", "Previous log files"):
        assert noise not in both, noise


@pytest.mark.slow
def test_smoke_preset_runs_every_stage_from_a_cold_cache(tmp_path):
    out = _cli(
        ["+student=mnv4_conv_s", "+debug=smoke", f"hydra.run.dir={tmp_path / 'run'}"],
        {"WANDB_MODE": "disabled", "DISTILL_CACHE": str(tmp_path / "cache")},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    r = _results(tmp_path / "run")
    assert list((tmp_path / "cache" / "smoke" / "teachers").glob("digits-*.safetensors"))
    built = {p.parent.name for p in (tmp_path / "cache").rglob("manifest.json")}
    assert {"randaug", "mixup", "extra", "val"} <= built
    assert r["global_step"] == 12 and "val/top1" in r["baseline_metrics"]
    exported = (
        tmp_path / "run" / r["exports"]["onnx"],
        tmp_path / "run" / r["exports"]["safetensors"],
    )
    assert all(p.is_file() for p in exported)
    assert r["exports"]["onnx_dynamic_hw"] is True  # a 32-px model varies H/W too
    assert io.StringIO(out.stdout).getvalue().count("distillation summary") == 1

    # the same seed on the now warm cache trains the same student: building the data in the
    # cold run must not shift the student's initialisation or its batches
    warm = _cli(
        ["+student=mnv4_conv_s", "+debug=smoke", "export.onnx=false", "report.enabled=false"]
        + ["baseline.enabled=false", f"hydra.run.dir={tmp_path / 'warm'}"],
        {"WANDB_MODE": "disabled", "DISTILL_CACHE": str(tmp_path / "cache")},
    )
    assert warm.returncode == 0, warm.stderr[-3000:]
    losses = {
        run: [r["train/loss"] for r in _rows(tmp_path / run) if r.get("train/loss")]
        for run in ("run", "warm")
    }
    assert losses["run"] and losses["run"] == losses["warm"], losses


def test_a_requeued_slurm_job_resumes_from_lightnings_newest_hpc_checkpoint(tmp_path):
    ckpt = {"state_dict": {}, "loops": {}, "global_step": 40, "hyper_parameters": {}}
    for n, step in ((1, 20), (2, 40)):
        torch.save({**ckpt, "global_step": step}, tmp_path / f"hpc_ckpt_{n}.ckpt")
    path, step = resolve_resume(None, tmp_path / "checkpoints", "mnv4_conv_s")
    assert Path(path).name == "hpc_ckpt_2.ckpt" and step == 40
    assert resolve_resume(None, tmp_path / "elsewhere" / "checkpoints", "mnv4_conv_s") == (None, 0)
