"""``python -m distill.export``: a run directory in, ``export/runtimes.json`` out, with every
runtime's top-1 computed through the runtime; each bad input is one line and an exit status
(2: usage, 1: a rejected export) and leaves nothing half-written."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import students
from common.atomic import atomic_path
from data.shards import read_manifest
from distill.export import main
from distill.runtime_table import TABLE
from students.export import save_safetensors
from students.runtimes import RUNTIMES
from students.runtimes.base import ExportRejected, MissingRuntime
from students.weights import ExportMeta

from .conftest import compose_train

KEYS = {"runtime", "precision", "file", "bytes", "p50_ms", "p90_ms", "threads", "top1"}
KEYS |= {"pytorch_top1", "max_abs_logit_diff"}


@pytest.fixture(scope="module")
def run_dir(tiny_cache, tmp_path_factory) -> Path:
    """A finished run as the app leaves it, without the training: ``.hydra/config.yaml`` and
    ``export/mnv4_conv_s.safetensors`` (a random-init Conv-S carrying its ``ExportMeta``)."""
    out = tmp_path_factory.mktemp("export_run")
    cfg = compose_train(["+student=mnv4_conv_s", *tiny_cache], out)
    (out / ".hydra").mkdir()
    OmegaConf.save(cfg, out / ".hydra" / "config.yaml")
    c = OmegaConf.to_container(cfg, resolve=True)
    m = read_manifest(Path(c["data"]["root"]) / c["data"]["val_set"])
    torch.manual_seed(0)
    model = students.create_model("mnv4_conv_s", num_classes=m.num_classes)
    meta = ExportMeta(
        student="mnv4_conv_s",
        num_classes=m.num_classes,
        resolution=c["image_size"],
        weights="raw",
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        classes=tuple(m.classes),
    )
    save_safetensors(model, out / "export" / "mnv4_conv_s.safetensors", meta)
    return out


class _Writes:
    """A runtime that writes a complete file (atomically, as the real adapters do)."""

    name, suffix = "writes", ".bin"

    def check(self) -> None:
        pass

    def export(self, model, path, resolution, metadata, calibration=None) -> Path:
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"x" * 10)
        return path

    def load(self, path, threads):
        return lambda x: torch.zeros(x.shape[0], 10).numpy()


class _Rejects(_Writes):
    name = "rejects"

    def export(self, model, path, resolution, metadata, calibration=None) -> Path:
        path.with_name(path.name + ".part").write_bytes(b"half")  # a runtime's own debris
        raise ExportRejected("rejects cannot take this model")


class _Missing(_Writes):
    name = "missing"

    def check(self) -> None:
        raise MissingRuntime("missing", "missing-pkg")


@pytest.fixture
def fakes(monkeypatch):
    for name, cls in (("writes", "_Writes"), ("rejects", "_Rejects"), ("missing", "_Missing")):
        monkeypatch.setitem(RUNTIMES, name, (__name__, cls))


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err  # one line, no traceback
    return err


def test_an_unknown_runtime_is_a_usage_error(run_dir, tmp_path, capsys):
    assert main([str(run_dir), "--runtimes", "onnx,tflite", "--out", str(tmp_path)]) == 2
    assert "unknown runtime 'tflite'; choose from onnx, executorch, litert" in _err(capsys)
    assert list(tmp_path.iterdir()) == []


def test_qat_without_executorch_is_a_usage_error(run_dir, tmp_path, capsys):
    args = [str(run_dir), "--runtimes", "onnx", "--qat-steps", "5", "--out", str(tmp_path)]
    assert main(args) == 2
    assert "add executorch to --runtimes" in _err(capsys)
    assert list(tmp_path.iterdir()) == []


def test_a_run_directory_without_a_checkpoint_is_a_usage_error(run_dir, tmp_path, capsys):
    empty = tmp_path / "run"
    (empty / ".hydra").mkdir(parents=True)
    (empty / ".hydra" / "config.yaml").write_text((run_dir / ".hydra" / "config.yaml").read_text())
    assert main([str(empty), "--runtimes", "onnx"]) == 2
    assert "no exported student" in _err(capsys)
    assert not (empty / "export").exists()


def test_a_checkpoint_of_another_student_is_a_usage_error(run_dir, tmp_path, capsys):
    other = run_dir / "checkpoints" / "other.ckpt"
    other.parent.mkdir(exist_ok=True)
    torch.save({"state_dict": {}, "hyper_parameters": {"student": "mnv4_conv_m"}}, other)
    try:
        assert main([str(other), "--runtimes", "onnx", "--out", str(tmp_path)]) == 2
    finally:
        other.unlink()
    err = _err(capsys)
    assert "holds mnv4_conv_m weights" in err and "mnv4_conv_s" in err
    assert main([str(run_dir), "--student", "mnv4_hybrid_m", "--out", str(tmp_path)]) == 2
    assert "--student is mnv4_hybrid_m" in _err(capsys)
    assert list(tmp_path.iterdir()) == []


def test_a_missing_runtime_names_the_extra(run_dir, tmp_path, fakes, capsys):
    assert main([str(run_dir), "--runtimes", "writes,missing", "--out", str(tmp_path)]) == 2
    assert "pip install -e '.[mobile]'" in _err(capsys)
    assert list(tmp_path.iterdir()) == []


def test_a_rejected_export_exits_1_and_leaves_nothing_half_written(
    run_dir, tmp_path, fakes, capsys
):
    args = [str(run_dir), "--runtimes", "writes,rejects", "--runs", "2", "--out", str(tmp_path)]
    assert main(args) == 1
    assert "rejects cannot take this model" in _err(capsys)
    assert list(tmp_path.iterdir()) == []  # not even the first runtime's complete file


def test_the_table_has_a_row_per_runtime_precision_and_thread_count(run_dir, tmp_path, fakes):
    args = [str(run_dir), "--runtimes", "writes", "--threads", "1,2", "--runs", "3"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / TABLE).read_text())
    assert [(r["runtime"], r["precision"], r["threads"]) for r in rows] == [
        ("writes", "fp32", 1),
        ("writes", "fp32", 2),
    ]
    assert all(set(r) >= KEYS for r in rows) and rows[0]["bytes"] == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnv4_conv_s.bin", TABLE]


KILLED_EXPORT = """
import os, signal, sys
stage = os.path.join(sys.argv[1], f".runtimes-{os.getpid()}.tmp")
os.makedirs(stage)
open(os.path.join(stage, "mnv4_conv_s.onnx"), "wb").write(b"half an export")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_rerun_removes_the_staging_folder_a_killed_export_left(run_dir, tmp_path, fakes):
    killed = subprocess.run([sys.executable, "-c", KILLED_EXPORT, str(tmp_path)], check=False)
    assert killed.returncode == -signal.SIGKILL
    (left,) = tmp_path.glob(".runtimes-*.tmp")
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".runtimes-{socket.gethostname()}-{running.pid}.tmp"
        live.mkdir()  # an export still at work in the same folder
        args = [str(run_dir), "--runtimes", "writes", "--threads", "1", "--runs", "2"]
        assert main([*args, "--out", str(tmp_path)]) == 0
    finally:
        running.kill()
        running.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "mnv4_conv_s.bin", TABLE]


@pytest.mark.slow
def test_onnx_fp32_and_int8_end_to_end_through_the_command_line(run_dir, tmp_path, capsys):
    """Real files in a real runtime, calibrated on the run's own training shards: fp32 scores
    what PyTorch scores, int8 is smaller. (ExecuTorch's files: tests/students/test_runtimes.py.)"""
    args = [str(run_dir), "--runtimes", "onnx", "--int8", "--threads", "1,2", "--runs", "5"]
    assert main([*args, "--calibration", "32", "--out", str(tmp_path)]) == 0
    assert "max|dlogit|" in capsys.readouterr().out  # the printed table
    rows = json.loads((tmp_path / TABLE).read_text())
    assert [(r["precision"], r["threads"]) for r in rows] == [
        ("fp32", 1),
        ("fp32", 2),
        ("int8", 1),
        ("int8", 2),
    ]
    fp32, int8 = rows[0], rows[2]
    for row in rows:
        assert set(row) >= KEYS and row["p50_ms"] > 0 and row["p90_ms"] >= row["p50_ms"]
        assert (tmp_path / row["file"]).stat().st_size == row["bytes"]
        assert row["val_samples"] > 50 and row["pytorch_top1"] == fp32["pytorch_top1"]
    assert fp32["top1"] == fp32["pytorch_top1"] and fp32["agree_pytorch"] == 100.0
    assert fp32["max_abs_logit_diff"] < 1e-2  # float rounding on random-init logits of ~50
    assert int8["bytes"] < 0.5 * fp32["bytes"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "mnv4_conv_s.onnx",
        "mnv4_conv_s_int8.onnx",
        TABLE,
    ]


def test_export_runtimes_is_a_config_key_and_a_failure_at_the_end_of_a_run_is_a_warning(
    run_dir, tmp_path, fakes, caplog
):
    from dataclasses import replace

    from distill.config import ExportConfig, section
    from distill.export import runtimes_at_end
    from distill.runtime_inputs import RunData

    cfg = compose_train(["+student=mnv4_conv_s", "export.runtimes=[onnx,executorch]"], tmp_path)
    assert list(cfg.export.runtimes) == ["onnx", "executorch"] and cfg.export.int8 is False
    c = OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra" / "config.yaml"), resolve=True)
    exports = {"safetensors": str(run_dir / "export" / "mnv4_conv_s.safetensors")}
    export = section(ExportConfig, {**c["export"], "runtimes": ["writes"], "int8": False})
    data = RunData.from_run_dir(run_dir)
    done = runtimes_at_end(export, data, exports, tmp_path)
    assert done["runtimes"] == str(tmp_path / "export" / TABLE)
    export = replace(export, runtimes=["rejects"])
    failed = runtimes_at_end(export, data, exports, tmp_path / "again")
    assert failed == {"runtimes_error": "ExportRejected: rejects cannot take this model"}
    assert "mobile runtime export failed" in caplog.text
