"""The teacher zoo: spec strings -> an architecture, its weights and its preprocessing.

Specs:
    ``timm:<name>``          any timm classifier (``timm:tf_efficientnet_l2.ns_jft_in1k`` is the
                             paper's teacher, arXiv 2404.10518 §8);
    ``torchvision:<name>``   any torchvision classification model;
    ``mnv4:<student>``       an MNv4 student as teacher (e.g. Hybrid-L teaching Conv-S).

Weights come from ``checkpoint=`` (a local file, loaded safely and strictly) or, without one,
from the model's hub (timm: Hugging Face; torchvision: download.pytorch.org; mnv4: timm's
released weights). Offline with no local file is a ``TeacherWeightsUnavailable`` that says how to
supply the weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import students
from common.images import EVAL_CROP_PCT
from common.norm import IMAGENET_MEAN, IMAGENET_STD
from common.weights import (
    load_state_dict_strict,
    read_state_dict,
    strip_wrapper_prefixes,
)
from teachers.preprocess import Preprocessing

SCHEMES = ("timm", "torchvision", "mnv4")

# Teachers worth knowing, with the facts a user needs before spending GPU hours on them.
# Top-1 figures are ImageNet-1k validation from each model's own source.
KNOWN_TEACHERS: dict[str, dict] = {
    "timm:tf_efficientnet_l2.ns_jft_in1k": {
        "params_m": 480,
        "input_size": 800,
        "top1": 88.35,
        "note": "the paper's teacher (Noisy Student EfficientNet-L2, arXiv 2404.10518 §8)",
    },
    "timm:tf_efficientnet_l2.ns_jft_in1k_475": {"params_m": 480, "input_size": 475, "top1": 88.23},
    "timm:eva02_large_patch14_448.mim_m38m_ft_in22k_in1k": {
        "params_m": 305,
        "input_size": 448,
        "top1": 90.05,
    },
    "timm:convnext_xxlarge.clip_laion2b_soup_ft_in1k": {
        "params_m": 846,
        "input_size": 256,
        "top1": 88.61,
    },
    "timm:mobilenetv4_hybrid_large.ix_e600_r384_in1k": {
        "params_m": 37.8,
        "input_size": 384,
        "top1": 83.99,
        "note": "same network as mnv4:mnv4_hybrid_l",
    },
    "torchvision:vit_h_14": {"params_m": 633, "input_size": 518, "top1": 88.55},
}


class TeacherWeightsUnavailable(RuntimeError):
    """Pretrained weights could not be fetched (offline, no local copy)."""


@dataclass
class BuiltModel:
    """A trainable model plus the facts a teacher records about it."""

    model: nn.Module
    preprocessing: Preprocessing
    num_classes: int
    classes: list[str] | None = None


def parse_spec(spec: str) -> tuple[str, str]:
    """``"timm:resnet50"`` -> ``("timm", "resnet50")``; unknown schemes are a clear error."""
    scheme, sep, name = spec.partition(":")
    if not sep or scheme not in SCHEMES or not name:
        raise ValueError(
            f"unknown teacher spec {spec!r}: expected 'timm:<model>', 'torchvision:<model>', "
            f"'mnv4:<{'|'.join(students.list_models())}>' or a teacher checkpoint written by "
            "this project (.safetensors)"
        )
    return scheme, name


def _offline_error(spec: str, cause: Exception) -> TeacherWeightsUnavailable:
    return TeacherWeightsUnavailable(
        f"cannot fetch pretrained weights for {spec!r} ({type(cause).__name__}: "
        f"{str(cause).splitlines()[0][:200]}). Offline, supply them as a local file: "
        f"create_teacher({spec!r}, checkpoint='/path/to/weights.safetensors') "
        f"(or teacher.checkpoint=... in the distill config); .pth/.pt files are loaded with "
        "weights_only=True."
    )


def _build_or_explain(spec: str, fetch: bool, build: Callable[[], nn.Module]) -> nn.Module:
    """Run ``build``; a failed download becomes ``TeacherWeightsUnavailable`` saying what to do."""
    try:
        return build()
    except (OSError, RuntimeError) as e:
        if fetch:
            raise _offline_error(spec, e) from e
        raise


def _read_local(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    return strip_wrapper_prefixes(read_state_dict(checkpoint))


def _classes_in(state: dict[str, torch.Tensor], classifier: str) -> int | None:
    """Rows of the classifier weight in a state_dict (its class count), if present."""
    weight = state.get(f"{classifier}.weight")
    return int(weight.shape[0]) if weight is not None and weight.ndim >= 2 else None


def _last_linear(model: nn.Module) -> str:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]


def _timm_classes(model: nn.Module, num_classes: int) -> list[str] | None:
    if num_classes != 1000:
        return None
    try:
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        return [info.index_to_description(i) for i in range(1000)]
    except Exception:  # class names are a convenience, never a reason to fail
        return None


def _build_timm(name: str, spec: str, num_classes: int | None, checkpoint, pretrained: bool):
    import timm

    if name.split(".")[0] not in timm.list_models():
        raise ValueError(f"unknown timm model in teacher spec {spec!r}")
    state = _read_local(checkpoint) if checkpoint is not None else None
    if state is not None and num_classes is None:  # take the class count from the weights
        classifier = timm.models.get_pretrained_cfg(name.split(".")[0]).classifier or "fc"
        num_classes = _classes_in(state, classifier)
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    fetch = pretrained and checkpoint is None
    model = _build_or_explain(
        spec, fetch, lambda: timm.create_model(name, pretrained=fetch, **kwargs)
    )
    if state is not None:
        load_state_dict_strict(model, state, str(checkpoint), spec)
    n = model.num_classes
    return BuiltModel(model, Preprocessing.from_timm(model), n, _timm_classes(model, n))


def _build_torchvision(name: str, spec: str, num_classes, checkpoint, pretrained: bool):
    import torchvision

    if name not in torchvision.models.list_models(module=torchvision.models):
        raise ValueError(f"unknown torchvision classification model in teacher spec {spec!r}")
    fetch = pretrained and checkpoint is None
    state = _read_local(checkpoint) if checkpoint is not None else None
    if state is not None and num_classes is None:  # take the class count from the weights
        probe = torchvision.models.get_model(name, weights=None)
        num_classes = _classes_in(state, _last_linear(probe))
    weights = torchvision.models.get_model_weights(name).DEFAULT if fetch else None
    kwargs = {} if num_classes is None or fetch else {"num_classes": num_classes}
    model = _build_or_explain(
        spec, fetch, lambda: torchvision.models.get_model(name, weights=weights, **kwargs)
    )
    if state is not None:
        load_state_dict_strict(model, state, str(checkpoint), spec)
    n = num_classes or 1000
    prep = Preprocessing(input_size=224, interpolation="bilinear", crop_pct=EVAL_CROP_PCT)
    classes = None
    if weights is not None:
        t = weights.transforms()
        prep = Preprocessing(
            input_size=int(t.crop_size[0]),
            mean=tuple(t.mean),
            std=tuple(t.std),
            interpolation=t.interpolation.value,
            crop_pct=float(t.crop_size[0]) / float(t.resize_size[0]),
        )
        classes = list(weights.meta.get("categories") or []) or None
        if num_classes is not None and num_classes != len(classes or []):
            raise ValueError(
                f"{spec!r} pretrained weights have {len(classes or [])} classes, asked for "
                f"{num_classes}; fine-tune with teachers.train instead"
            )
    return BuiltModel(model, prep, n, classes)


def _build_mnv4(name: str, spec: str, num_classes, checkpoint, pretrained: bool):
    if name not in students.list_models():
        raise ValueError(
            f"unknown student in teacher spec {spec!r}; available: {students.list_models()}"
        )
    state = _read_local(checkpoint) if checkpoint is not None else None
    if num_classes is None:
        num_classes = (_classes_in(state, "classifier") if state is not None else None) or 1000
    n = num_classes
    # the teacher's own channels_last flag decides its layout (FrozenTeacher)
    model = students.create_model(name, num_classes=n, drop_rate=0.0, channels_last=False)
    if checkpoint is None and pretrained:
        import timm

        released = _build_or_explain(
            spec, True, lambda: timm.create_model(students.TIMM_NAMES[name], pretrained=True)
        )
        state = students.convert_timm_state_dict(released.state_dict())
        load_state_dict_strict(model, state, f"timm {students.TIMM_NAMES[name]}", spec)
    elif state is not None:
        state = students.convert_timm_state_dict(state)
        load_state_dict_strict(model, state, str(checkpoint), spec)
    res = model.default_resolution
    prep = Preprocessing(res, IMAGENET_MEAN, IMAGENET_STD, "bicubic", 0.95)
    return BuiltModel(model, prep, n, _timm_classes(model, n))


_BUILDERS = {"timm": _build_timm, "torchvision": _build_torchvision, "mnv4": _build_mnv4}


def build_model(
    spec: str,
    num_classes: int | None = None,
    checkpoint: str | Path | None = None,
    pretrained: bool = True,
) -> BuiltModel:
    """Build the (trainable) network behind a teacher spec, with weights and preprocessing.

    Args:
        spec: ``timm:<name>``, ``torchvision:<name>`` or ``mnv4:<student>``.
        num_classes: classifier size; ``None`` keeps the model's own (1000 for ImageNet models).
        checkpoint: local weights (.safetensors, or .pth/.pt/.ckpt loaded with
            ``weights_only=True``); keys, shapes and the class count are checked strictly.
        pretrained: fetch the published weights when no checkpoint is given; ``False`` gives a
            randomly initialised network (for training a teacher from scratch).
    """
    scheme, name = parse_spec(spec)
    with torch.device("cpu"):
        return _BUILDERS[scheme](name, spec, num_classes, checkpoint, pretrained)
