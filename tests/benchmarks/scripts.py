"""Importing a script outside the package (under benchmarks/ or scripts/; they are files, not a package) for its tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_script(relative: str) -> tuple[Path, ModuleType]:
    """The script ``benchmarks/<relative>`` (its path, for subprocess runs) and the module it defines."""
    path = BENCHMARKS / relative
    return path, load_file(path)


def load_file(path: Path) -> ModuleType:
    """The module that the Python file ``path`` (a script outside the package) defines."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module
