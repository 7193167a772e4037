"""Mobile runtimes a student exports to: name -> adapter (``students.runtimes.base.Runtime``).

Adapters are imported only when asked for, so this registry costs nothing without the
``[mobile]`` extra; ``get_runtime`` names the known runtimes on a typo.
"""

from __future__ import annotations

import importlib

from students.runtimes.base import ExportRejected, MissingRuntime, Runtime

RUNTIMES: dict[str, tuple[str, str]] = {
    "onnx": ("students.runtimes.onnx", "Onnx"),
    "executorch": ("students.runtimes.executorch", "ExecuTorch"),
    "litert": ("students.runtimes.litert", "LiteRT"),
}
"""Runtime name -> (module, adapter class), imported lazily by ``get_runtime``."""


def get_runtime(name: str) -> Runtime:
    """The adapter for ``name``; ``ValueError`` listing the known names on an unknown one."""
    if name not in RUNTIMES:
        raise ValueError(f"unknown runtime {name!r}; choose from {', '.join(RUNTIMES)}")
    module_name, cls = RUNTIMES[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        raise ValueError(
            f"runtime {name!r} is registered but {module_name} is not written yet"
        ) from e
    return getattr(module, cls)()


def parse_runtimes(names: str | list[str] | tuple[str, ...]) -> list[str]:
    """``"onnx,executorch"`` or a list -> checked, de-duplicated names in the given order."""
    items = names.split(",") if isinstance(names, str) else list(names)
    out: list[str] = []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        if item not in RUNTIMES:
            raise ValueError(f"unknown runtime {item!r}; choose from {', '.join(RUNTIMES)}")
        if item not in out:
            out.append(item)
    return out


__all__ = [
    "RUNTIMES",
    "ExportRejected",
    "MissingRuntime",
    "Runtime",
    "get_runtime",
    "parse_runtimes",
]
