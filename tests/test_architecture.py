"""The layers, read statically from the source (module-level and function-level imports alike).

The core (``facenormals/``) sits under ``realtime``, ``training``, ``export``, ``calibration`` and ``benchmarks``
and imports none of them; no two packages import each other. The ``facenormals`` CLI dispatcher sits on top
of everything and is left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
UPPER = ("realtime", "training", "export", "calibration", "benchmarks")
FOLDERS = {"facenormals": "facenormals", **{name: f"facenormals.{name}" for name in UPPER}}
DISPATCHER = "facenormals.cli"
# Core → upper imports still left, each with the reason; the test fails when one disappears (shrink the list)
# or a new one appears. Empty since the inference runtime moved into the core (facenormals.runtime).
KNOWN_CORE_EXCEPTIONS: set[tuple[str, str]] = set()


def _package(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "facenormals":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in UPPER else "core"


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        for path in (REPO / folder).rglob("*.py"):
            parts = path.relative_to(REPO / folder).with_suffix("").parts
            name = ".".join((package, *parts)).removesuffix(".__init__")
            found[name] = path
    return found


def _imports(path: Path) -> set[str]:
    """Every absolute facenormals module a file imports, wherever the import statement sits."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {name for name in names if name.startswith("facenormals")}


def import_edges() -> set[tuple[str, str]]:
    """(importing module, imported module) pairs across the project, the CLI dispatcher left out."""
    return {(module, target) for module, path in _modules().items() if module != DISPATCHER
            for target in _imports(path)}


def test_the_core_imports_no_upper_package():
    upward = {(src, dst) for src, dst in import_edges()
              if _package(src) == "core" and _package(dst) not in (None, "core")}
    assert upward - KNOWN_CORE_EXCEPTIONS == set(), "the core must not import realtime/training/export/calibration/benchmarks"
    assert KNOWN_CORE_EXCEPTIONS - upward == set(), "an exception is gone: remove it from KNOWN_CORE_EXCEPTIONS"


def test_no_two_packages_import_each_other():
    pairs = {(_package(src), _package(dst)) for src, dst in import_edges() - KNOWN_CORE_EXCEPTIONS}
    pairs = {(a, b) for a, b in pairs if a and b and a != b}
    cycles = sorted((a, b) for a, b in pairs if (b, a) in pairs and a < b)
    assert cycles == [], f"package pairs importing each other: {cycles}"


def test_one_face_mesh_construction():
    """Only facenormals.faces builds a MediaPipe face mesh: every landmark shares one pixel convention."""
    builders = sorted(name for name, path in _modules().items()
                      if "face_mesh.FaceMesh(" in path.read_text(encoding="utf-8"))
    assert builders == ["facenormals.faces"]


def test_walker_sees_function_level_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from facenormals.realtime.render import x\n    import facenormals.training\n")
    assert _imports(source) == {"facenormals.realtime.render", "facenormals.training"}


def test_every_package_says_what_it_owns():
    """Each package (subpackages included) opens with a docstring."""
    bare = sorted(name for name, path in _modules().items() if path.name == "__init__.py"
                  and not (ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or "").strip())
    assert bare == []
