"""Student spec files: a ``ModelSpec`` as YAML, so that an architecture found by the search
(``python -m nas``) is a student like the five built in.

A spec file is one mapping: the ``ModelSpec`` fields (``name``, ``resolution``, ``stem``, ``act``,
``layer_scale``, ``drop_rate``, optional ``num_features`` 960, ``head_hidden_size`` 1280 and
``source``) and ``stages``, a list of stages, each a list of blocks. A block is a mapping whose
``op`` names its row type (``students/specs.py``)::

    {op: conv, out: 32, kernel: 3, stride: 2}                      # ConvBnAct
    {op: fused_ib, out: 48, expand: 4, stride: 2, kernel: 3}       # FusedIB
    {op: uib, k_start: 5, k_mid: 5, expand: 3, out: 96, stride: 2}  # UIB (0 = DW absent)
    {op: mqa, heads: 4, dim: 64, kv_stride: 2, kernel: 3}          # Mobile MQA

An optional ``in`` (the block's input channels, as the paper's tables print them) is checked
against the previous block's output. Every mistake is one ``SpecFileError`` line naming the file
and the block (``blocks.<stage>.<index>``, the module the block becomes).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from common.atomic import write_text
from students.layers import ACTIVATIONS
from students.specs import ConvBnActRow, FusedIBRow, ModelSpec, MQARow, Row, UIBRow

OPS: dict[str, type] = {
    "conv": ConvBnActRow,
    "fused_ib": FusedIBRow,
    "uib": UIBRow,
    "mqa": MQARow,
}
OP_OF = {cls: op for op, cls in OPS.items()}
DW_KERNELS = (0, 3, 5, 7)  # a UIB depthwise conv: absent or an odd size the blocks support
TOP_KEYS = {
    "name",
    "resolution",
    "stem",
    "act",
    "layer_scale",
    "drop_rate",
    "num_features",
    "head_hidden_size",
    "source",
    "stages",
}


class SpecFileError(ValueError):
    """A spec file that cannot describe a student; the message names the file and the block."""


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _row(block: Any, where: str) -> Row:
    """One block mapping -> its spec row; ``where`` names it in errors."""
    if not isinstance(block, Mapping):
        raise SpecFileError(f"{where}: expected a mapping with an 'op' key, got {block!r}")
    op = block.get("op")
    if op not in OPS:
        raise SpecFileError(f"{where}: unknown op {op!r}; expected one of {', '.join(OPS)}")
    cls = OPS[op]
    fields = _fields(cls)
    unknown = sorted(set(block) - set(fields) - {"op", "in"})
    if unknown:
        raise SpecFileError(f"{where}: unknown keys {unknown} for op {op}; known: {sorted(fields)}")
    missing = sorted(
        n for n, f in fields.items() if n not in block and f.default is dataclasses.MISSING
    )
    if missing:
        raise SpecFileError(f"{where}: op {op} needs {missing}")
    values = {n: block[n] for n in fields if n in block}
    for n, v in values.items():
        ok = (
            _number(v) and v > 0
            if n == "expand"
            else _positive_int(v) or (n in ("k_start", "k_mid") and v == 0)
        )
        if not ok:
            raise SpecFileError(f"{where}: {n} must be a positive number, got {v!r}")
    row = cls(**values)
    _check_row(row, where)
    return row


def _check_row(row: Row, where: str) -> None:
    stride = getattr(row, "stride", 1)
    if stride not in (1, 2):
        raise SpecFileError(f"{where}: stride must be 1 or 2, got {stride}")
    if isinstance(row, UIBRow):
        for name in ("k_start", "k_mid"):
            if getattr(row, name) not in DW_KERNELS:
                raise SpecFileError(
                    f"{where}: {name} must be one of {DW_KERNELS} (0: absent), "
                    f"got {getattr(row, name)}"
                )
        if stride == 2 and not (row.k_start or row.k_mid):
            raise SpecFileError(f"{where}: a UIB with neither DW conv (FFN) cannot have stride 2")
    kernel = getattr(row, "kernel", 1)
    if kernel % 2 == 0:
        raise SpecFileError(f"{where}: kernel must be odd, got {kernel}")


def spec_from_dict(data: Any, origin: str = "spec") -> ModelSpec:
    """A checked ``ModelSpec`` from a spec file's mapping; ``origin`` names the file in errors."""
    if not isinstance(data, Mapping):
        raise SpecFileError(
            f"{origin}: expected a mapping of spec fields, got {type(data).__name__}"
        )
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise SpecFileError(f"{origin}: unknown keys {unknown}; known: {sorted(TOP_KEYS)}")
    need = ("name", "resolution", "stem", "act", "stages")
    missing = [k for k in need if k not in data]
    if missing:
        raise SpecFileError(f"{origin}: missing keys {missing}")
    if not isinstance(data["name"], str) or not data["name"]:
        raise SpecFileError(f"{origin}: name must be a non-empty string")
    for key in ("resolution", "stem", "num_features", "head_hidden_size"):
        if key in data and not _positive_int(data[key]):
            raise SpecFileError(f"{origin}: {key} must be a positive integer, got {data[key]!r}")
    if data["act"] not in ACTIVATIONS:
        raise SpecFileError(f"{origin}: act must be one of {sorted(ACTIVATIONS)}")
    num_features = data.get("num_features", 960)
    stages_in = data["stages"]
    if not isinstance(stages_in, list) or not stages_in:
        raise SpecFileError(f"{origin}: stages must be a non-empty list of lists of blocks")
    stages, chans = [], data["stem"]
    for i, stage in enumerate(stages_in):
        if not isinstance(stage, list) or not stage:
            raise SpecFileError(f"{origin}: blocks.{i}: a stage must be a non-empty list of blocks")
        rows = []
        for j, block in enumerate(stage):
            where = f"{origin}: blocks.{i}.{j}"
            row = _row(block, where)
            given = block.get("in")
            if given is not None and given != chans:
                raise SpecFileError(
                    f"{where}: inconsistent channels: 'in' is {given} but the previous block "
                    f"outputs {chans}"
                )
            chans = chans if isinstance(row, MQARow) else row.out
            rows.append(row)
        stages.append(tuple(rows))
    if chans != num_features:
        last = f"blocks.{len(stages) - 1}.{len(stages[-1]) - 1}"
        raise SpecFileError(
            f"{origin}: {last}: inconsistent channels: the last block outputs {chans} but "
            f"num_features (the head's input) is {num_features}"
        )
    layer_scale = data.get("layer_scale")
    drop_rate = data.get("drop_rate", 0.2)
    if layer_scale is not None and not (_number(layer_scale) and layer_scale > 0):
        raise SpecFileError(f"{origin}: layer_scale must be null or a positive number")
    if not (_number(drop_rate) and 0 <= drop_rate < 1):
        raise SpecFileError(f"{origin}: drop_rate must be in [0, 1), got {drop_rate!r}")
    return ModelSpec(
        name=data["name"],
        source=str(data.get("source") or origin),
        resolution=data["resolution"],
        stem=data["stem"],
        act=data["act"],
        stages=tuple(stages),
        layer_scale=layer_scale,
        drop_rate=float(drop_rate),
        num_features=num_features,
        head_hidden_size=data.get("head_hidden_size", 1280),
    )


def spec_to_dict(spec: ModelSpec) -> dict[str, Any]:
    """The spec file mapping of ``spec`` (blocks carry ``in`` for readability)."""
    stages, chans = [], spec.stem
    for stage in spec.stages:
        blocks = []
        for row in stage:
            block = {"op": OP_OF[type(row)], "in": chans, **dataclasses.asdict(row)}
            blocks.append(block)
            chans = chans if isinstance(row, MQARow) else row.out
        stages.append(blocks)
    return {
        "name": spec.name,
        "source": spec.source,
        "resolution": spec.resolution,
        "stem": spec.stem,
        "act": spec.act,
        "layer_scale": spec.layer_scale,
        "drop_rate": spec.drop_rate,
        "num_features": spec.num_features,
        "head_hidden_size": spec.head_hidden_size,
        "stages": stages,
    }


def load_spec_file(path: str | os.PathLike) -> ModelSpec:
    """Read and check a spec file (YAML, read with ``yaml.safe_load``: data only)."""
    path = Path(path)
    if not path.is_file():
        raise SpecFileError(f"spec file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise SpecFileError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
    return spec_from_dict(data, str(path))


def save_spec_file(spec: ModelSpec, path: str | os.PathLike, header: str = "") -> Path:
    """Write ``spec`` as a spec file (temporary name, then rename); ``header`` becomes comments."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = spec_to_dict(spec)
    stages = data.pop("stages")
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip("\n").splitlines()
    lines += text + ["stages:"]
    for i, stage in enumerate(stages):
        lines.append(f"  - # blocks.{i}")
        for block in stage:
            flow = yaml.safe_dump(
                block, sort_keys=False, default_flow_style=True, width=1000, allow_unicode=True
            )
            lines.append(f"    - {flow.strip()}")
    write_text(path, "\n".join(lines) + "\n")
    spec_from_dict(
        yaml.safe_load(path.read_text(encoding="utf-8")), str(path)
    )  # what was written reads back
    return path
