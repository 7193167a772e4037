"""Imports flow one way: nas -> distill -> data -> teachers -> students -> common.

Every ``import`` and ``from ... import`` in the six packages, ``testkit``, ``bench`` and
``tests`` is parsed with ``ast``, at module level and inside functions alike, and each edge must
point down the order: a package may import itself and anything below it, never anything above
it. ``common`` imports none of the others. Relative imports (``from .x import y``) are resolved
against the module's own package; one that climbs out of its top-level package is an error.
Above the six packages sit, in this order, ``testkit`` (real fixtures shared by the tests and the
benchmarks), ``bench`` (may import anything but the tests) and ``tests``: no module outside
``tests`` imports from ``tests``, and none of the six packages imports ``testkit`` or ``bench``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ORDER = ("common", "students", "teachers", "data", "distill", "nas")  # lowest first
OUTSIDE = ("testkit", "bench", "tests")  # above the packages, lowest first
LEVELS = ORDER + OUTSIDE


def module_name(path: Path) -> str:
    """The dotted name of a module file under ROOT (``data/__init__.py`` -> ``data.__init__``)."""
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def absolute(node: ast.ImportFrom, module: str) -> str:
    """The absolute name ``from .x import y`` in ``module`` reads (``tests.data.x``)."""
    if node.level == 0:
        return node.module or ""
    package = module.split(".")[:-1]
    if node.level - 1 >= len(package):
        raise ValueError(f"{module}: relative import of level {node.level} leaves its package")
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_packages(source: str, module: str = "") -> set[str]:
    """Top-level project packages a module's source imports, anywhere in the file; ``module``
    (its dotted name) resolves the relative imports."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [absolute(node, module)]
        else:
            continue
        found |= {n.split(".")[0] for n in names if n.split(".")[0] in LEVELS}
    return found


def back_edges(package: str, source: str, module: str = "") -> list[str]:
    """The packages ``source`` (a module of ``package``) imports against the order."""
    rank = LEVELS.index(package)
    return sorted(p for p in imported_packages(source, module) if LEVELS.index(p) > rank)


def test_every_import_follows_the_package_order():
    bad = []
    for package in LEVELS:
        files = sorted((ROOT / package).rglob("*.py"))
        assert files, f"no modules found under {package}/"
        for path in files:
            try:
                targets = back_edges(package, path.read_text(), module_name(path))
            except ValueError as e:
                bad.append(str(e))
                continue
            for target in targets:
                bad.append(f"{path.relative_to(ROOT)} imports {target}")
    assert not bad, (
        "imports against tests -> bench -> testkit -> nas -> distill -> data -> teachers -> "
        "students -> common:\n" + ("\n".join(bad))
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


def test_relative_imports_resolve_to_their_own_package():
    source = "from .conftest import rgb\nfrom . import helpers\nfrom ..servers import X\n"
    assert imported_packages(source, "tests.data.test_build") == {"tests"}
    assert back_edges("common", "from .digits import x\n", "common.folders") == []
    assert back_edges("tests", "from .conftest import x\n", "tests.distill.test_app") == []
    with pytest.raises(ValueError, match="data.build: relative import of level 2 leaves"):
        imported_packages("def f():\n    from ..distill.app import run\n", "data.build")


def test_bench_and_testkit_may_not_import_the_tests_and_the_packages_not_them():
    assert back_edges("bench", "from tests.servers import MotoServer\n") == ["tests"]
    assert back_edges("bench", "import nas.app\nfrom testkit.models import m\n") == []
    assert back_edges("testkit", "from bench.data import make_jpegs\n") == ["bench"]
    for package in ORDER:
        assert back_edges(package, "from testkit.servers import RangeServer\n") == ["testkit"]
        assert back_edges(package, "import bench.common\n") == ["bench"]
