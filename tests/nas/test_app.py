"""The app's command line: presets compose, mistakes are one line before any work."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from distill.cli_checks import UsageError
from nas.__main__ import normalize_overrides
from nas.app import start
from tests.helpers import CONF


def _compose(overrides: list[str], out):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("search", overrides=[*overrides, f"paths.output_dir={out}"])


@pytest.mark.parametrize("preset", ["digits", "imagenet"])
def test_every_preset_composes_and_starts(preset, tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGENET_ROOT", "/data/imagenet")
    extra = ["dataset=imagenet"] if preset == "imagenet" else []
    c = start(_compose([f"+nas={preset}", *extra], tmp_path))
    assert c.nas.space.name == ("conv_s" if preset == "digits" else "conv_ml")
    assert c.nas.space.stages[0].stride == 2  # the schema's defaults filled in
    assert c.student.name == "searched"


def test_the_smoke_debug_shrinks_the_search(tmp_path):
    c = start(_compose(["+nas=digits", "+debug=smoke"], tmp_path))
    assert c.nas.coarse.steps <= 10 and c.nas.space.stem_widths == [16]
    assert c.trainer.max_steps == 12  # and the data and retrain shrink as for distill


def test_no_preset_names_the_presets(tmp_path):
    with pytest.raises(UsageError, match=r"choose a preset: python -m nas \+nas=digits"):
        start(_compose([], tmp_path))


def test_a_misspelt_nas_key_is_one_line(tmp_path):
    with pytest.raises(ConfigCompositionException, match="stepz"):
        _compose(["+nas=digits", "nas.coarse.stepz=3"], tmp_path)
    with pytest.raises(UsageError, match=r"nas.coarse.stepz") as info:
        start(_compose(["+nas=digits", "+nas.coarse.stepz=3"], tmp_path))
    assert "\n" not in str(info.value)


def test_bad_values_name_the_key(tmp_path):
    with pytest.raises(UsageError, match=r"nas.heldout_fraction=1.5"):
        start(_compose(["+nas=digits", "nas.heldout_fraction=1.5"], tmp_path))
    with pytest.raises(UsageError, match=r"nas.target.student='mnv4_conv_x' unknown"):
        start(_compose(["+nas=digits", "nas.target.student=mnv4_conv_x"], tmp_path))


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("nas.stages=three", r"nas.stages='three' is not valid: one of two, one"),
        ("nas.controller.reward=best", r"nas.controller.reward='best' is not valid: one of abs"),
        ("nas.latency.runtime=tflite", r"nas.latency.runtime='tflite' is not valid: one of onnx"),
        ("nas.latency.quantile=2", r"nas.latency.quantile=2.0 is not valid: in \[0, 1\]"),
        ("nas.coarse.steps=0", r"nas.coarse.steps=0 is not valid: a positive integer"),
        ("nas.coarse.steps=many", r"nas.coarse.steps: Value 'many'"),
        ("nas.space.stages.0.kind=conv", r"nas.space.stages.kind='conv' is not valid"),
        ("nas.fine.steps=???", r"nas.fine.steps must be set \(a preset sets it"),
        ("mode=online", r"mode='online' is not valid"),
        ("nas.choice.rule=best", r"nas.choice.rule='best' is not valid: one of in_band, argmax"),
        ("nas.choice.band=1.5", r"nas.choice.band=1.5 is not valid: in \[0, 1\)"),
        ("nas.choice.samples=0", r"nas.choice.samples=0 is not valid: a positive integer"),
        ("nas.latency.remeasure=maybe", r"nas.latency.remeasure: Value 'maybe'"),
    ],
)
def test_each_bad_value_is_one_line_naming_its_key(override, named, tmp_path):
    with pytest.raises(UsageError, match=named) as info:
        start(_compose(["+nas=digits", override], tmp_path))
    assert "\n" not in str(info.value)


def test_the_typed_section_is_what_nas_json_stores(tmp_path):
    """``nas.json``'s ``nas`` (``asdict``) reads back as the same section (benchmarks do)."""
    from dataclasses import asdict

    from nas.config import nas_section

    c = start(_compose(["+nas=digits", "+debug=smoke"], tmp_path))
    assert nas_section(asdict(c.nas)) == c.nas
    assert asdict(c.nas)["latency"]["cache_dir"].endswith("/latency")  # resolved
    with pytest.raises(ValueError, match=r"nas.coarse.stepz: Key 'stepz' not in 'CoarseConfig'"):
        nas_section({**asdict(c.nas), "coarse": {"stepz": 3}})


def test_a_second_search_in_the_same_folder_needs_resume(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(UsageError, match="nas.resume=true"):
        start(_compose(["+nas=digits"], tmp_path))
    start(_compose(["+nas=digits", "nas.resume=true"], tmp_path))


def test_plain_group_spellings_are_appended():
    assert normalize_overrides(["nas=digits", "debug=smoke", "seed=1"]) == [
        "+nas=digits",
        "+debug=smoke",
        "seed=1",
    ]
