"""Spec files: the five students round-trip, a spec-file student builds, exports describe it,
and every malformed file is one line naming the block."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

import students
from students import SPECS, ExportMeta, SpecFileError, load_spec_file, save_spec_file
from students.export import save_safetensors
from students.registry import _REGISTERED


@pytest.fixture(autouse=True)
def _clean_registry():
    before = dict(_REGISTERED)
    yield
    _REGISTERED.clear()
    _REGISTERED.update(before)


def _copy(name: str, new: str):
    return dataclasses.replace(SPECS[name], name=new)


@pytest.mark.parametrize("name", list(SPECS))
def test_every_student_round_trips_through_a_spec_file(name, tmp_path):
    path = save_spec_file(_copy(name, f"{name}_file"), tmp_path / "s.yaml", header="a header")
    assert path.read_text().startswith("# a header\n")
    loaded = load_spec_file(path)
    assert loaded.stages == SPECS[name].stages
    assert (loaded.stem, loaded.act, loaded.layer_scale) == (
        SPECS[name].stem,
        SPECS[name].act,
        SPECS[name].layer_scale,
    )


def test_a_spec_file_student_equals_the_built_in_one(tmp_path):
    path = save_spec_file(_copy("mnv4_conv_s", "conv_s_again"), tmp_path / "s.yaml")
    torch.manual_seed(0)
    ref = students.create_model("mnv4_conv_s", num_classes=10).eval()
    model = students.create_model(spec_file=path, num_classes=10).eval()
    model.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(model(x), ref(x))
    assert students.create_model("conv_s_again", num_classes=10).spec.name == "conv_s_again"


def test_an_export_of_a_spec_file_student_rebuilds_it_alone(tmp_path):
    path = save_spec_file(_copy("mnv4_conv_s", "found"), tmp_path / "s.yaml")
    model = students.create_model(spec_file=path, num_classes=10).eval()
    meta = ExportMeta("found", 10, 32, "raw", (0.5,) * 3, (0.5,) * 3)
    save_safetensors(model, tmp_path / "found.safetensors", meta)
    _REGISTERED.clear()  # a fresh process: only the file knows the architecture
    again = students.create_model(checkpoint=tmp_path / "found.safetensors").eval()
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(again(x), model(x))


def test_a_built_in_name_cannot_be_taken_by_a_spec_file(tmp_path):
    path = save_spec_file(_copy("mnv4_conv_s", "tmp"), tmp_path / "s.yaml")
    text = path.read_text().replace("name: tmp", "name: mnv4_conv_m")
    path.write_text(text)
    with pytest.raises(ValueError, match="built-in student"):
        students.register_spec_file(path)


def _edited(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load(
        save_spec_file(_copy("mnv4_conv_s", "x"), tmp_path / "s.yaml").read_text()
    )
    edit(data)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    return bad


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["stages"][2][1].update(op="sep_conv"), r"blocks\.2\.1: unknown op 'sep_conv'"),
        (lambda d: d["stages"][3][2].update({"in": 96}), r"blocks\.3\.2: inconsistent channels"),
        (lambda d: d["stages"][4][0].update(out=512), r"blocks\.4\.0: inconsistent channels.*960"),
        (lambda d: d["stages"][2][0].update(k_mid=4), r"blocks\.2\.0: k_mid must be one of"),
        (
            lambda d: d["stages"][2][0].update(k_start=0, k_mid=0),
            r"blocks\.2\.0: .*cannot have stride 2",
        ),
        (lambda d: d["stages"][2][3].pop("expand"), r"blocks\.2\.3: op uib needs \['expand'\]"),
        (lambda d: d["stages"][2][3].update(heads=2), r"blocks\.2\.3: unknown keys \['heads'\]"),
        (lambda d: d["stages"][3][0].update(out=-8), r"blocks\.3\.0: out must be a positive"),
    ],
)
def test_a_bad_spec_file_is_one_line_naming_the_block(tmp_path, edit, message):
    bad = _edited(tmp_path, edit)
    with pytest.raises(SpecFileError, match=message) as info:
        load_spec_file(bad)
    assert "\n" not in str(info.value) and str(bad) in str(info.value)
