"""KNOWN_TEACHERS (the teachers worth knowing) names real, loadable specs with their true input size."""

from __future__ import annotations

import pytest
import timm
import torchvision

from students.specs import TIMM_NAMES
from teachers import KNOWN_TEACHERS
from teachers.zoo import parse_spec


@pytest.mark.parametrize("spec", sorted(KNOWN_TEACHERS))
def test_every_known_teacher_is_a_valid_spec_with_its_facts(spec):
    facts = KNOWN_TEACHERS[spec]
    scheme, name = parse_spec(spec)
    assert facts["params_m"] > 0 and facts["input_size"] > 0 and 0 < facts["top1"] < 100
    if scheme == "timm":
        assert name in timm.list_pretrained(name)  # the exact pretrained tag exists
        assert timm.get_pretrained_cfg(name).input_size[-1] == facts["input_size"]
    else:
        assert name in torchvision.models.list_models()


def test_the_mnv4_teacher_note_names_the_same_network():
    spec = f"timm:{TIMM_NAMES['mnv4_hybrid_l']}.ix_e600_r384_in1k"
    assert "mnv4:mnv4_hybrid_l" in KNOWN_TEACHERS[spec]["note"]
