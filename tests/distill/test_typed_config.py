"""Typed configs (distill/config.py, data/config.py): misspelt keys fail at compose time naming
the key and the file, both spellings of the appended groups work, and the code's values are the
YAML's (no default of its own)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from distill.cli_checks import UsageError, check_command_line
from distill.config import (
    EmaConfig,
    LossConfig,
    module_kwargs,
    module_sections,
    normalize_overrides,
    section,
)
from distill.module import DistillModule
from tests.helpers import CONF, REPO

from .conftest import compose_train


def _compose_copy(tmp_path, name: str, overrides: list[str]):
    """Compose ``name`` from a copy of conf/ (so a test may add a broken preset to it)."""
    with initialize_config_dir(config_dir=str(tmp_path / "conf"), version_base="1.3"):
        return compose(name, overrides=normalize_overrides(overrides))


@pytest.fixture
def conf_copy(tmp_path):
    shutil.copytree(CONF, tmp_path / "conf")
    return tmp_path / "conf"


def test_misspelt_key_in_a_preset_fails_naming_key_and_file(conf_copy, tmp_path):
    (conf_copy / "experiment" / "typo.yaml").write_text(
        "# @package _global_\noptimizer: {lrr: 0.1}\n"
    )
    with pytest.raises(ConfigCompositionException, match=r"experiment/typo(.|\n)*lrr"):
        _compose_copy(tmp_path, "train", ["+student=mnv4_conv_s", "+experiment=typo"])


def test_misspelt_key_in_a_group_file_fails_naming_key_and_file(conf_copy, tmp_path):
    (conf_copy / "loss" / "typo.yaml").write_text("kind: kl\ntemprature: 2.0\n")
    with pytest.raises(ConfigCompositionException, match=r"loss/typo(.|\n)*temprature"):
        _compose_copy(tmp_path, "train", ["+student=mnv4_conv_s", "loss=typo"])


def test_misspelt_key_in_a_build_preset_fails(conf_copy, tmp_path):
    (conf_copy / "dataset" / "typo.yaml").write_text(
        "# @package _global_\ndefaults: [digits]\nbuild: {shard_sise: 10}\n"
    )
    with pytest.raises(ConfigCompositionException, match=r"dataset/typo(.|\n)*shard_sise"):
        _compose_copy(tmp_path, "build", ["dataset=typo"])


@pytest.mark.parametrize("app", ["build", "train"])
@pytest.mark.parametrize(
    ("body", "key"),
    [
        ("variants: {randaug: {replica: 3}}", "replica"),
        ("sources: {pool: {roots: /images}}", "roots"),
    ],
    ids=["variant", "source"],
)
def test_misspelt_key_under_a_source_or_variant_fails_at_compose(
    app, body, key, conf_copy, tmp_path
):
    (conf_copy / "dataset" / "typo.yaml").write_text(
        f"# @package _global_\ndefaults: [digits]\n{body}\n"
    )
    student = ["+student=mnv4_conv_s"] if app == "train" else []
    with pytest.raises(ConfigCompositionException, match=rf"dataset/typo(.|\n)*{key}"):
        _compose_copy(tmp_path, app, [*student, "dataset=typo"])


def test_key_another_kind_takes_fails_the_conversion_naming_it(tmp_path):
    """``alpha`` is a mixup key: the schema holds it, the plain kind of ``val`` does not."""
    from data.build import BuildConfigError, app_config
    from distill.value_checks import checked_config

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        build = compose("build", overrides=["variants.val.alpha=2.0"])
    with pytest.raises(BuildConfigError, match=r"^variants\.val\.alpha: variant kind 'plain'"):
        app_config(build)
    train = compose_train(["+student=mnv4_conv_s", "sources.pool.root=/images"], tmp_path)
    with pytest.raises(UsageError, match=r"sources\.pool\.root: source kind 'digits' takes no"):
        checked_config(train)


def test_kind_configs_take_their_keys_and_need_the_ones_without_a_default():
    from data.config import SourceNode, VariantNode, source_config, variant_config

    node = VariantNode(kind="mixup", source="labelled", replicas=1, seed=0, jpeg_quality=90)
    node.image_size, node.raw_size, node.crop_scale = 32, 32, [0.5, 1]
    with pytest.raises(ValueError, match=r"^variants\.d2\.alpha: variant kind 'mixup' needs"):
        variant_config("d2", node)
    node.alpha, node.group = 1.0, 8
    mixup = variant_config("d2", node)
    assert (mixup.name, mixup.alpha, mixup.crop_scale, mixup.label) == ("d2", 1.0, (0.5, 1.0), True)
    folder = source_config("val", SourceNode(kind="unlabelled"))  # root null: the hint's error
    assert folder.root is None and folder.subdir is None
    with pytest.raises(ValueError, match=r"^sources\.val: source kind 'folder' unknown"):
        source_config("val", SourceNode(kind="folder"))


def test_nodes_hold_every_key_of_every_kind_and_nothing_else():
    from dataclasses import fields

    from data.config import SOURCE_KINDS, VARIANT_KINDS, SourceNode, VariantNode

    for node, kinds in ((SourceNode, SOURCE_KINDS), (VariantNode, VARIANT_KINDS)):
        keys = {f.name for cls in kinds.values() for f in fields(cls)}
        assert {f.name for f in fields(node)} == keys | {"kind"}


@pytest.mark.parametrize(
    "override", ["optimizer.lrr=0.1", "ema.decy=0.5", "data.batchsize=8", "loss.kd_wieght=1"]
)
def test_misspelt_command_line_key_fails(override, tmp_path):
    key = override.lstrip("+").split("=")[0].split(".")[-1]
    with pytest.raises(ConfigCompositionException) as e:
        compose_train(["+student=mnv4_conv_s", override], tmp_path)
    assert key in str(e.value) + str(e.value.__cause__)


def test_added_key_fails_the_startup_check(tmp_path):
    cfg = compose_train(["+student=mnv4_conv_s", "+model.foo=1"], tmp_path)  # + opens the struct
    with pytest.raises(UsageError, match="model.foo"):
        check_command_line(cfg)
    check_command_line(compose_train(["+student=mnv4_conv_s"], tmp_path))


def test_wrong_type_on_the_command_line_fails(tmp_path):
    with pytest.raises(ConfigCompositionException):
        compose_train(["+student=mnv4_conv_s", "data.batch_size=many"], tmp_path)


@pytest.mark.parametrize("plus", ["", "+"])
def test_student_experiment_debug_with_and_without_plus(plus, tmp_path):
    cfg = compose_train(
        [
            f"{plus}student=mnv4_hybrid_m",
            f"{plus}experiment=function_matching",
            f"{plus}debug=smoke",
        ],
        tmp_path,
    )
    assert cfg.student.name == "mnv4_hybrid_m"
    assert cfg.mode == "online" and cfg.loss.kind == "kl" and cfg.trainer.max_steps == 12


def test_normalize_overrides_touches_only_the_appended_groups():
    args = ["student=a", "+student=b", "experiment=c", "debug=smoke", "student.name=x", "-m"]
    assert normalize_overrides(args) == [
        "+student=a",
        "+student=b",
        "+experiment=c",
        "+debug=smoke",
        "student.name=x",
        "-m",
    ]


def test_module_built_from_the_composed_config_has_the_yaml_values(tmp_path):
    cfg = compose_train(["+student=mnv4_conv_s"], tmp_path)
    c = OmegaConf.to_object(cfg)
    assert c.ema.decay == 0.999 and c.build.shard_size == 500
    module = DistillModule("mnv4_conv_s", 10, mode="offline", **module_sections(c))
    assert module.hparams["ema"] == {"decay": 0.999, "warmup": True}
    assert module.ema is not None
    assert module.hparams["model"]["drop_rate"] == 0.3  # the student's, model.drop_rate is null
    assert module.optim_cfg.lr == c.optimizer.lr
    assert module_kwargs()["ema"] == EmaConfig(decay=0.999, warmup=True)


def test_sections_take_exactly_their_keys():
    with pytest.raises(TypeError, match="missing keys.*temperature"):
        section(LossConfig, {"kind": "kl"})
    full = {k: v for k, v in vars(module_kwargs()["loss"]).items()}
    with pytest.raises(TypeError, match="unknown keys.*temprature"):
        section(LossConfig, {**full, "temprature": 2.0})


@pytest.mark.slow  # a fresh interpreter: seconds of imports
def test_cfg_job_prints_every_default():
    out = subprocess.run(
        [sys.executable, "-m", "distill", "student=mnv4_conv_s", "--cfg", "job"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    for line in ("decay: 0.999", "shard_size: 500", "wait_s:", "shuffle_buffer:", "kind: kl"):
        assert line in out.stdout
    assert "name: mnv4_conv_s" in out.stdout


def test_checkpoint_hyper_parameters_are_plain_containers(tmp_path):
    """Resume loads with weights_only=True: the saved sections hold no classes to unpickle, and
    the student's name stays where resolve_resume reads it."""
    import torch

    module = DistillModule("mnv4_conv_s", 10, mode="offline", **module_kwargs())
    path = tmp_path / "h.ckpt"
    torch.save({"hyper_parameters": dict(module.hparams)}, path)
    saved = torch.load(path, weights_only=True)["hyper_parameters"]
    assert saved["student"] == "mnv4_conv_s" and saved["loss"]["kind"] == "kl"
    assert set(saved) >= {"loss", "optimizer", "schedule", "model", "ema", "mode"}
