"""Teachers: a frozen teacher zoo, safe weights, ensembles, soft labels, and teacher training."""

from teachers.checkpoint import read_teacher_metadata, save_teacher
from teachers.evaluate import evaluate
from teachers.frozen import FrozenTeacher, TeacherInfo
from teachers.label import SoftLabels, soft_labels
from teachers.load import create_teacher
from teachers.preprocess import Preprocessing, from_normalized, to_model_input
from teachers.zoo import KNOWN_TEACHERS, TeacherWeightsUnavailable, build_model, parse_spec

__all__ = [
    "KNOWN_TEACHERS",
    "FrozenTeacher",
    "Preprocessing",
    "SoftLabels",
    "TeacherInfo",
    "TeacherWeightsUnavailable",
    "build_model",
    "create_teacher",
    "evaluate",
    "from_normalized",
    "parse_spec",
    "read_teacher_metadata",
    "save_teacher",
    "soft_labels",
    "to_model_input",
]
