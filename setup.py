"""Package discovery: the repository's top-level folders are the sub-packages of the ``tokenmill``
namespace (engine -> tokenmill.engine, ...), and every folder below them with an ``__init__.py`` is
found here, so a new sub-package can never be left out of the wheel. The version is the one in
engine/__init__.py. Everything else is in pyproject.toml."""
import os
import re

from setuptools import find_packages, setup

ROOTS = {"engine": "engine", "stages": "stages", "cluster": "cluster", "mix": "mix", "languages": "configs/languages"}


def discover() -> dict[str, str]:
    """Package name -> folder for every package under the roots."""
    found = {}
    for name, folder in ROOTS.items():
        found[f"tokenmill.{name}"] = folder
        for sub in find_packages(folder):
            found[f"tokenmill.{name}.{sub}"] = os.path.join(folder, *sub.split("."))
    return found


def version() -> str:
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "engine", "__init__.py")) as fh:
        return re.search(r'^__version__ = "([^"]+)"', fh.read(), re.M).group(1)


PACKAGES = discover()
setup(version=version(), packages=sorted(PACKAGES), package_dir=PACKAGES)
