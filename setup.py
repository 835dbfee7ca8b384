"""Package discovery for the mapped top-level folders (pyproject.toml holds all metadata).

Each top-level folder installs as ``facenormals.<name>`` (see [tool.setuptools.package-dir]);
this walks those folders so new subpackages are picked up without editing a list.
"""

from pathlib import Path

from setuptools import setup

ROOTS = {"facenormals": "facenormals", "facenormals.training": "training", "facenormals.export": "export",
         "facenormals.realtime": "realtime", "facenormals.calibration": "calibration",
         "facenormals.benchmarks": "benchmarks"}


def discover() -> list[str]:
    packages = []
    for package, folder in ROOTS.items():
        for init in sorted(Path(folder).rglob("__init__.py")):
            parts = init.parent.relative_to(folder).parts
            packages.append(".".join((package, *parts)))
    return packages


setup(packages=discover())
