"""Every config and preset composes; the +student contract and its error message."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

import students
from distill.cli_checks import UsageError, check_command_line, student_options
from tests.helpers import CONF, REPO

from .conftest import compose_train

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("name", students.list_models())
def test_every_student_composes_with_plus(name, tmp_path):
    cfg = compose_train([f"+student={name}"], tmp_path)
    assert cfg.student.name == name
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    check_command_line(cfg)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_with_a_student(experiment, tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGENET_ROOT", "/data/imagenet")
    monkeypatch.setenv("EXTRA_POOL", "/data/pool")
    cfg = compose_train([f"+experiment={experiment}", "+student=mnv4_hybrid_l"], tmp_path)
    c = OmegaConf.to_container(cfg, resolve=True)
    assert c["student"]["name"] == "mnv4_hybrid_l"
    if experiment.startswith("from_labels_"):
        weights = c["data"]["train_sets"]
        assert c["mode"] == "labels" and {k for k, w in weights.items() if w} == {"randaug"}
    if experiment == "function_matching":
        assert c["mode"] == "online" and c["loss"]["kind"] == "kl"
    if experiment == "paper_distill_imagenet":
        assert c["data"]["train_sets"] == {"randaug": 1, "mixup": 1, "extra": 2}
        assert c["teacher"]["spec"] == "timm:tf_efficientnet_l2.ns_jft_in1k"
        loss = c["loss"]
        assert (loss["kind"], loss["temperature"], loss["standardize"]) == ("soft_ce", 1.0, False)


STANDARDISED_KL = ("kl", 2.0, True)  # the loss table's best offline loss on digits
PAPER_LOSS = ("soft_ce", 1.0, False)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], STANDARDISED_KL),
        (["+debug=smoke"], STANDARDISED_KL),
        (["loss=soft_ce"], PAPER_LOSS),  # the command line still chooses
        (["dataset=folder", "data_root=/data/mine"], STANDARDISED_KL),
        (["+experiment=paper_distill_imagenet"], PAPER_LOSS),  # the paper's recipe, kept
    ],
    ids=lambda o: " ".join(o) or "digits default" if isinstance(o, list) else None,
)
def test_default_loss_is_the_loss_tables_best_but_the_paper_preset_keeps_its_own(
    overrides, expected, tmp_path, monkeypatch
):
    monkeypatch.setenv("IMAGENET_ROOT", "/data/imagenet")
    monkeypatch.setenv("EXTRA_POOL", "/data/pool")
    cfg = compose_train(["+student=mnv4_conv_s", *overrides], tmp_path)
    c = OmegaConf.to_container(cfg, resolve=True)
    assert (c["loss"]["kind"], c["loss"]["temperature"], c["loss"]["standardize"]) == expected


@pytest.mark.parametrize(
    ("overrides", "key", "expected"),
    [
        (["trainer=gpu"], "trainer.precision", "bf16-mixed"),
        (["trainer=ddp", "trainer.num_nodes=4"], "trainer.num_nodes", 4),
        (["trainer=ddp_cpu"], "trainer.strategy.process_group_backend", "gloo"),
        (["logger=wandb"], "logger.wandb.tags", ["mnv4_conv_s", "offline", "digits"]),
        (["+debug=smoke"], "trainer.max_steps", 12),
        (["hparams_search=optuna"], "hydra.sweeper.direction", "maximize"),
        (["dataset=folder", "data_root=/data/mine"], "sources.labelled.root", "/data/mine/train"),
        (
            ["+variant@variants.inpaint=inpaint", "+data.train_sets.inpaint=1"],
            "variants.inpaint.kind",
            "inpaint",
        ),
    ],
    ids=lambda o: o[0] if isinstance(o, list) else None,
)
def test_groups_and_presets_compose(overrides, key, expected, tmp_path):
    cfg = compose_train(["+student=mnv4_conv_s", *overrides], tmp_path, hydra=True)
    assert OmegaConf.select(cfg, key) == expected


def test_build_config_composes_for_each_dataset(monkeypatch):
    from hydra import compose, initialize_config_dir

    monkeypatch.setenv("IMAGENET_ROOT", "/data/imagenet")
    monkeypatch.setenv("EXTRA_POOL", "/data/pool")
    for dataset in ("digits", "imagenet", "folder"):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            extra = ["data_root=/x"] if dataset == "folder" else []
            cfg = compose("build", overrides=[f"dataset={dataset}", *extra])
        c = OmegaConf.to_container(cfg, resolve=True)
        assert {"randaug", "mixup", "val"} <= set(c["variants"])


def test_missing_student_lists_the_choices(tmp_path):
    cfg = compose_train([], tmp_path)
    with pytest.raises(UsageError, match=r"student=<name>.*mnv4_conv_s.*mnv4_hybrid_l"):
        check_command_line(cfg)
    assert student_options() == sorted([*students.list_models(), "searched"])


def test_student_without_plus_composes_like_with_plus(tmp_path):
    plain = compose_train(["student=mnv4_conv_s", "experiment=function_matching"], tmp_path)
    plus = compose_train(["+student=mnv4_conv_s", "+experiment=function_matching"], tmp_path)
    assert plain == plus and plain.student.name == "mnv4_conv_s" and plain.mode == "online"


def test_force_add_of_a_group_is_still_rejected_by_hydra(tmp_path):
    with pytest.raises(ConfigCompositionException, match="student"):
        compose_train(["++student=mnv4_conv_s"], tmp_path)


@pytest.mark.slow  # a fresh interpreter: seconds of imports
def test_cli_without_student_exits_nonzero_with_the_message():
    out = subprocess.run(
        [sys.executable, "-m", "distill"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode != 0
    assert "student=<name>" in out.stderr and "mnv4_hybrid_m" in out.stderr


@pytest.mark.slow  # a fresh interpreter: seconds of imports
def test_unknown_student_lists_hydras_options():
    out = subprocess.run(
        [sys.executable, "-m", "distill", "+student=mnv4_conv_xl"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0
    assert "mnv4_conv_xl" in out.stderr and "mnv4_conv_s" in out.stderr


def test_student_searched_takes_a_spec_file(tmp_path):
    import dataclasses

    from students.registry import _REGISTERED

    cfg = compose_train(["student=searched"], tmp_path)
    with pytest.raises(
        UsageError, match=r"'searched' unknown.*needs student.spec_file=<run dir>/searched.yaml"
    ):
        check_command_line(cfg)
    spec = dataclasses.replace(students.SPECS["mnv4_conv_s"], name="searched")
    path = students.save_spec_file(spec, tmp_path / "searched.yaml")
    try:
        cfg = compose_train(["student=searched", f"student.spec_file={path}"], tmp_path)
        check_command_line(cfg)
        assert students.create_model("searched", num_classes=10).spec.stages == spec.stages
        other = students.save_spec_file(
            dataclasses.replace(spec, name="other"), tmp_path / "o.yaml"
        )
        cfg = compose_train(["student=searched", f"student.spec_file={other}"], tmp_path)
        with pytest.raises(UsageError, match=r"describes 'other', not student.name='searched'"):
            check_command_line(cfg)
    finally:
        _REGISTERED.pop("searched", None)
        _REGISTERED.pop("other", None)
