"""Imports flow one way: nas -> distill -> data -> teachers -> students -> common.

Every ``import`` and ``from ... import`` in the six packages is parsed with ``ast``, at module
level and inside functions alike, and each edge must point down the order: a package may import
itself and anything below it, never anything above it. ``common`` imports none of the others.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ("common", "students", "teachers", "data", "distill", "nas")  # lowest first


def imported_packages(source: str) -> set[str]:
    """Top-level project packages a module's source imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {n.split(".")[0] for n in names if n.split(".")[0] in ORDER}
    return found


def back_edges(package: str, source: str) -> list[str]:
    """The packages ``source`` (a module of ``package``) imports against the order."""
    rank = ORDER.index(package)
    return sorted(p for p in imported_packages(source) if ORDER.index(p) > rank)


def test_every_import_follows_the_package_order():
    bad = []
    for package in ORDER:
        files = sorted((ROOT / package).rglob("*.py"))
        assert files, f"no modules found under {package}/"
        for path in files:
            for target in back_edges(package, path.read_text()):
                bad.append(f"{path.relative_to(ROOT)} imports {target}")
    assert not bad, (
        "imports against nas -> distill -> data -> teachers -> students -> common:\n"
        + ("\n".join(bad))
    )


def test_checker_flags_a_back_edge_inside_a_function():
    source = (
        "import torch\n"
        "from common.norm import IMAGENET_MEAN\n"
        "def load():\n"
        "    from data.sources import ImageFolderSource\n"
        "    import distill.app\n"
    )
    assert back_edges("teachers", source) == ["data", "distill"]
    assert back_edges("data", source) == ["distill"]
    assert back_edges("distill", source) == []
    assert back_edges("distill", "from nas.space import Arch\n") == ["nas"]


def test_common_may_import_none_of_the_packages():
    for package in ORDER[1:]:
        assert back_edges("common", f"import {package}.x\n") == [package]
    assert back_edges("students", "from teachers import create_teacher\n") == ["teachers"]
    assert back_edges("students", "from common.weights import read_state_dict\n") == []
