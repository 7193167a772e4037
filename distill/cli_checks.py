"""Command-line checks of ``python -m distill`` and the Hydra workarounds they need: fail fast,
before any work, on the mistakes users actually make, with a message that says what to type."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

import students
from common.weights import CheckpointError as WeightsError
from data.build import BuildConfigError
from data.provision import StorageMismatch
from data.remote import RemoteError
from data.sources import SourceError
from data.teacher_setup import MissingTeacherError
from data.urls import UrlError
from distill.config import check_schema


class UsageError(SystemExit):
    """A command-line mistake: exits non-zero with a message that says what to type."""

    def __init__(self, message: str) -> None:
        super().__init__(f"error: {message}")


# config mistakes, refused teacher weights, unreachable or mis-stored sets: a one-line usage
# error, not a traceback
SETUP_ERRORS = (
    BuildConfigError,
    SourceError,
    MissingTeacherError,
    WeightsError,
    UrlError,
    RemoteError,
    StorageMismatch,
)


def one_line(e: BaseException) -> str:
    """``e``'s message on one line (a usage error prints as one)."""
    return "; ".join(line.strip() for line in str(e).splitlines() if line.strip())


def student_options(cfg_dir: Path | None = None) -> list[str]:
    """The ``student=`` choices: conf/student/*.yaml (plus --config-dir additions via Hydra)."""
    try:
        from hydra.core.global_hydra import GlobalHydra

        gh = GlobalHydra.instance()
        if gh.is_initialized():
            return sorted(gh.config_loader().get_group_options("student"))
    except Exception:
        pass
    root = cfg_dir or Path(__file__).resolve().parents[1] / "conf"
    return sorted(p.stem for p in (root / "student").glob("*.yaml"))


def check_command_line(cfg: DictConfig) -> None:
    """Fail fast, before any work, on the mistakes users actually make."""
    if OmegaConf.is_missing(cfg, "student"):
        raise UsageError(
            "choose a student with student=<name>, e.g. "
            f"python -m distill student=mnv4_conv_s. Choices: {', '.join(student_options())}"
        )
    unset = sorted(k for k in cfg if k != "student" and OmegaConf.is_missing(cfg, k))
    if unset:  # e.g. dataset=folder without data_root
        raise UsageError(
            " ".join(f"{k}=..." for k in unset) + " must be set on the command line "
            "(e.g. dataset=folder data_root=/path/to/images)"
        )
    try:
        check_schema(cfg)
    except ValueError as e:
        raise UsageError(
            f"{e} (a misspelt or extra key? python -m distill --cfg job shows all)"
        ) from None
    name = cfg.student.name
    if cfg.student.spec_file:
        register_student_spec(cfg.student)
    elif name not in students.list_models():
        raise UsageError(
            f"student.name={name!r} unknown; available: {students.list_models()}, or a student "
            "found by python -m nas, which needs student.spec_file=<run dir>/searched.yaml"
        )
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        t = cfg.trainer
        devices = t.devices if isinstance(t.devices, int) else 2
        if (devices > 1 or t.num_nodes > 1) and "spawn" not in str(t.strategy):
            raise UsageError(
                "-m (sweeps) cannot be combined with multi-process DDP: Lightning's DDP launcher "
                "re-runs the command line and would rerun the sweep in every process (Lightning "
                "#11300). Run one command per sweep point instead (a shell loop, or "
                "hydra/launcher=submitit_slurm with one process per job)."
            )


def register_student_spec(student: DictConfig) -> None:
    """``student=searched student.spec_file=<file>``: register the spec file's student (every
    process that builds it runs this, DDP children included); its name must be the config's."""
    try:
        spec = students.register_spec_file(student.spec_file)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if spec.name != student.name:
        raise UsageError(
            f"student.spec_file={student.spec_file} describes {spec.name!r}, not "
            f"student.name={student.name!r}"
        )


REPLACED_ON_COMMAND_LINE = ("data.train_sets", "baseline.train_sets", "data.labels_from")


def replace_dict_overrides(cfg: DictConfig) -> None:
    """``data.train_sets={randaug: 1}`` on the command line is the whole mix, not a patch.

    Hydra merges a dict given on the command line into the configured one, so the other sets
    (mixup, extra) stayed in at their default weights. For these keys the command line's dict
    replaces the configured one; presets (YAML files) still merge.
    """
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task))
    for o in parsed:
        if o.key_or_group in REPLACED_ON_COMMAND_LINE and not o.is_delete():
            value = o.value()
            if isinstance(value, dict):
                OmegaConf.update(cfg, o.key_or_group, value, merge=False)
