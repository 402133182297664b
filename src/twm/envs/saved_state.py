"""Game objects in resume checkpoints: pickled to bytes, unpickled with an allowlist.

Resume checkpoints are read with ``torch.load(weights_only=True)``, which refuses any object that
is not a tensor or a plain container, so a game whose state is a Python object graph (MinAtar,
Crafter, a Gymnasium env) cannot go into one as that object. It goes in as ``bytes`` (which
``weights_only`` accepts) from ``dump_game``, and ``load_game`` rebuilds it with an unpickler that
only accepts, as globals:

- classes of the game's own packages or modules (``packages``: ``("minatar",)``,
  ``("crafter", "twm.envs.crafter")``, the Gymnasium env's top-level package and ``gymnasium``):
  constructing its objects is the game's code;
- numpy's array, scalar and dtype reconstructors and ``numpy.random``'s bit generators;
- a few builtin and ``collections`` containers.

Anything else (``os.system``, ``builtins.eval``, a function of the game package) is an
``UnsafeGameState`` error naming it, so a checkpoint from elsewhere cannot run code on resume.
"""

from __future__ import annotations

import builtins
import collections
import copyreg
import importlib
import io
import pickle
from collections.abc import Iterable
from typing import Any

_NUMPY_NAMES = {
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.numeric", "_frombuffer"),
}
_BUILTINS = {
    (builtins.__name__, name)
    for name in (
        "set",
        "frozenset",
        "list",
        "dict",
        "tuple",
        "bytearray",
        "complex",
        "slice",
        "range",
        "object",
        "int",
        "float",
        "bool",
        "str",
        "bytes",
    )
}
_COLLECTIONS = {(collections.__name__, n) for n in ("defaultdict", "OrderedDict", "deque", "Counter")}
_COPYREG = {(copyreg.__name__, "_reconstructor")}
_ALLOWED = frozenset(_NUMPY_NAMES | _BUILTINS | _COLLECTIONS | _COPYREG)


class UnsafeGameState(pickle.UnpicklingError):
    """A saved game state asks for a global outside the allowlist (see the module docstring)."""


def dump_game(game: Any) -> bytes:
    """The game's whole state as bytes: a snapshot (later steps of ``game`` do not change it)."""
    return pickle.dumps(game, protocol=pickle.HIGHEST_PROTOCOL)


def _in_packages(module: str, packages: frozenset[str]) -> bool:
    """Whether ``module`` is one of ``packages`` or inside one (``a.b`` is inside ``a``)."""
    parts = module.split(".")
    return any(".".join(parts[:i]) in packages for i in range(1, len(parts) + 1))


class _AllowlistUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, packages: Iterable[str]) -> None:
        super().__init__(io.BytesIO(data))
        self.packages = frozenset(packages)

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        numpy_module = module.startswith("numpy.random.") or module == "numpy.dtypes"
        if numpy_module or _in_packages(module, self.packages):
            obj = getattr(importlib.import_module(module), name, None)
            # Classes only (no function of a package is called), and numpy.random's pickle
            # constructors of its generators.
            if isinstance(obj, type) or (
                numpy_module and (name.endswith("_ctor") or name.startswith("__pyx_unpickle_"))
            ):
                return obj
        raise UnsafeGameState(
            f"the saved game state needs {module}.{name}, which twm does not rebuild from a checkpoint"
        )


def load_game(data: bytes, packages: Iterable[str]) -> Any:
    """The game ``dump_game`` saved, rebuilt with the allowlist; ``UnsafeGameState`` otherwise."""
    return _AllowlistUnpickler(data, packages).load()
