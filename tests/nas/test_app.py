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
    assert c["nas"]["space"]["name"] == ("conv_s" if preset == "digits" else "conv_ml")
    assert c["nas"]["space"]["stages"][0]["stride"] == 2  # the schema's defaults filled in
    assert c["student"]["name"] == "searched"


def test_the_smoke_debug_shrinks_the_search(tmp_path):
    c = start(_compose(["+nas=digits", "+debug=smoke"], tmp_path))
    assert c["nas"]["coarse"]["steps"] <= 10 and c["nas"]["space"]["stem_widths"] == [16]
    assert c["trainer"]["max_steps"] == 12  # and the data and retrain shrink as for distill


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
