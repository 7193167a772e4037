"""MobileNetV4 students: the five models of arXiv 2404.10518, exact to timm's weights."""

from students.mnv4 import MobileNetV4
from students.registry import (
    create_model,
    get_spec,
    list_models,
    register_spec,
    register_spec_file,
    registered_spec,
)
from students.spec_file import SpecFileError, load_spec_file, save_spec_file
from students.specs import SPECS, TIMM_NAMES, ModelSpec
from students.weights import (
    EXPORT_FORMAT,
    CheckpointError,
    ExportMeta,
    convert_timm_state_dict,
    load_checkpoint,
    load_state_dict_strict,
    read_export_meta,
    read_state_dict,
    strip_wrapper_prefixes,
)

__all__ = [
    "EXPORT_FORMAT",
    "SPECS",
    "TIMM_NAMES",
    "CheckpointError",
    "ExportMeta",
    "MobileNetV4",
    "ModelSpec",
    "SpecFileError",
    "convert_timm_state_dict",
    "create_model",
    "get_spec",
    "list_models",
    "load_spec_file",
    "load_checkpoint",
    "load_state_dict_strict",
    "read_export_meta",
    "read_state_dict",
    "register_spec",
    "register_spec_file",
    "registered_spec",
    "save_spec_file",
    "strip_wrapper_prefixes",
]
