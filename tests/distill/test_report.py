"""The run report: a real (tiny) run writes report.html with every figure inline, the command
line re-renders it, a directory that is not a run gets a one-line error, a failed report never
loses a run, and the calibration numbers are the textbook ones."""

from __future__ import annotations

import base64
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from distill.app import run
from distill.config import ReportConfig, WandbConfig
from distill.report import FIGURES, main, report_run, write_report
from distill.report_data import calibration
from tests.helpers import run_module

from .conftest import compose_train

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def smoke_run(tiny_cache, tmp_path_factory) -> Path:
    """``+debug=smoke`` (with its baseline) on the tiny cache; its config saved as Hydra does,
    so the command line can render it again."""
    out = tmp_path_factory.mktemp("report_run")
    # a shuffle buffer the size of the tiny sets: the default 1000 decodes them many times first
    overrides = ["+debug=smoke", *tiny_cache, "baseline.enabled=true", "data.shuffle_buffer=32"]
    cfg = compose_train(["+student=mnv4_conv_s", *overrides], out)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "disabled")
        run(cfg)
    (out / ".hydra").mkdir()
    OmegaConf.save(cfg, out / ".hydra" / "config.yaml")
    return out


def _check_page(run_dir: Path) -> None:
    page = (run_dir / "report.html").read_text()
    assert "mnv4_conv_s" in page.split("</h1>")[0]  # the title names the student
    for name in FIGURES:
        png = run_dir / "report" / f"{name}.png"
        data = png.read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, (name, len(data))
        assert f"data:image/png;base64,{base64.b64encode(data).decode()}" in page, name
        assert f"<section id='{name}'>" in page
    assert "teacher top-1" in page and "<th>agreement</th>" in page  # headline, per-class table


@pytest.mark.slow  # smoke_run: a whole +debug=smoke run with its baseline
def test_every_run_writes_a_report_with_every_figure_inline(smoke_run):
    _check_page(smoke_run)


@pytest.mark.slow
def test_report_command_line_renders_a_run_directory(smoke_run, tmp_path):
    # a copy whose saved config points elsewhere, as when DISTILL_CACHE differs at report time:
    # the validation set comes from results.json, where the run resolved it
    run_dir = shutil.copytree(smoke_run, tmp_path / "run")
    (run_dir / "report.html").unlink()
    for png in (run_dir / "report").glob("*.png"):
        png.unlink()
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    cfg.data.root = str(tmp_path / "elsewhere")
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    out = run_module("distill.report", [str(run_dir)], timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "report.html" in out.stdout
    _check_page(run_dir)


@pytest.mark.slow  # smoke_run: a whole +debug=smoke run with its baseline
def test_a_copied_run_directory_hands_out_its_own_files(smoke_run, tmp_path):
    import json

    from distill.report_data import load_results
    from distill.runtime_inputs import find_model_file

    stored = json.loads((smoke_run / "results.json").read_text())
    assert stored["exports"]["safetensors"] == "export/mnv4_conv_s.safetensors"
    assert str(smoke_run) not in (smoke_run / "results.json").read_text()
    copy = shutil.copytree(smoke_run, tmp_path / "copy")
    assert find_model_file(copy) == copy.resolve() / "export" / "mnv4_conv_s.safetensors"
    files = load_results(copy)
    assert Path(files["last_checkpoint"]) == copy.resolve() / "checkpoints" / "last.ckpt"
    assert Path(files["best_checkpoint"]).parent == copy.resolve() / "checkpoints"
    # a results.json written before paths were relative names the original run's files
    old = {
        **stored,
        "output_dir": str(smoke_run),
        "last_checkpoint": str(smoke_run / "checkpoints" / "last.ckpt"),
        "exports": {"safetensors": str(smoke_run / "export" / "mnv4_conv_s.safetensors")},
    }
    (copy / "results.json").write_text(json.dumps(old))
    assert find_model_file(copy) == copy.resolve() / "export" / "mnv4_conv_s.safetensors"
    assert Path(load_results(copy)["last_checkpoint"]).is_relative_to(copy.resolve())
    outside = {**old, "output_dir": "/elsewhere", "last_checkpoint": old["last_checkpoint"]}
    (copy / "results.json").write_text(json.dumps(outside))
    assert load_results(copy)["last_checkpoint"] is None  # never a file out of the run


def test_a_directory_that_is_not_a_run_gets_a_one_line_error(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("error:") and "not a run directory" in err and "results.json" in err


def test_a_failed_report_is_a_warning_and_never_loses_the_run(tmp_path, caplog):
    (tmp_path / "results.json").write_text('{"student": "mnv4_conv_s"}')
    report = ReportConfig(enabled=True, max_samples=None)
    with caplog.at_level(logging.WARNING, logger="distill"):
        assert report_run(tmp_path, report, None, "mnv4_conv_s-offline") is None
    assert "report not written" in caplog.text
    assert (tmp_path / "results.json").is_file() and not (tmp_path / "report.html").exists()


@pytest.mark.slow
def test_with_wandb_the_figures_and_the_per_class_table_go_to_wandb(smoke_run, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    wandb = WandbConfig(
        enabled=True,
        project="test",
        entity=None,
        name=None,
        tags=["report"],
        offline=False,
        log_model=False,
        id=None,
        init_timeout=60,
    )
    write_report(smoke_run, None, wandb)
    runs = list((smoke_run / "report" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    records = b"".join(p.read_bytes() for p in runs[0].glob("*.wandb"))
    assert b"report/per_class" in records and b"report/confusion" in records
    media = [p.name for p in runs[0].rglob("*.png")]
    assert len(media) == len(FIGURES), media


def test_calibration_bins_and_ece_by_hand():
    # two images at confidence 0.9 (one right), two at 0.7 (both right): bins (0.8, 0.9], (0.6, 0.7]
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.3, 0.7], [0.7, 0.3]])
    labels = np.array([0, 1, 1, 0])
    cal = calibration(probs, labels, bins=10)
    assert cal["count"][8] == 2 and cal["count"][6] == 2
    assert cal["accuracy"][8] == pytest.approx(0.5) and cal["confidence"][8] == pytest.approx(0.9)
    assert cal["accuracy"][6] == pytest.approx(1.0) and cal["confidence"][6] == pytest.approx(0.7)
    # ECE = 2/4 * |0.5 - 0.9| + 2/4 * |1.0 - 0.7| = 0.35
    assert cal["ece"] == pytest.approx(0.35)


def test_a_misspelt_report_key_fails_at_compose_time():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="report.enabeld"):
        compose_train(["+student=mnv4_conv_s", "report.enabeld=false"])
