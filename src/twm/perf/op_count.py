"""Counting what an update dispatches: ATen operators, the ones that launch work, and host syncs.

On a GPU one paper-config update is a few milliseconds of arithmetic; its time goes to kernel
launches, host-device synchronisations and Python. Those are counted here the same way on any
device, with a ``TorchDispatchMode`` that sees every ATen operator call below autograd (forward and
backward alike):

- ``ops``: every operator dispatched;
- ``launching``: the ones that do work on the device, i.e. all but views (``OpOverload.is_view``:
  ``view``, ``t``, ``select``, ``detach``, ...) and bare allocations (``empty``); on CUDA each of
  these is at least one kernel launch;
- ``syncs``: the ones whose result the host must wait for: ``_local_scalar_dense`` (``.item()``,
  ``float(t)``, ``bool(t)``, ``if t:``) and operators with data-dependent output shapes
  (``nonzero``, ``masked_select``, ``unique``, ...).

The counts are of the eager program; a compiled or CUDA-graph-captured region replaces many of them
by one replay, which this mode does not see inside.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

# Views whose schema does not say so (metadata only, no kernel).
_UNMARKED_VIEWS = frozenset({"_unsafe_view", "_reshape_alias", "lift_fresh", "alias"})
# Operators that only allocate (no kernel runs).
_ALLOCATIONS = frozenset({"empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided"})
# Operators the host waits for: a value read back, or an output whose size depends on the data.
_SYNC_OPS = frozenset(
    {
        "_local_scalar_dense",
        "nonzero",
        "masked_select",
        "unique",
        "_unique",
        "_unique2",
        "unique_consecutive",
        "unique_dim",
        "equal",
        "is_nonzero",
    }
)


def op_kind(func: Any) -> str:
    """``sync``, ``view``, ``alloc`` or ``launch`` for an ATen ``OpOverload``."""
    name = func.overloadpacket.__name__
    if name in _SYNC_OPS:
        return "sync"
    if func.is_view or name in _UNMARKED_VIEWS:
        return "view"
    if name in _ALLOCATIONS:
        return "alloc"
    return "launch"


@dataclass
class OpCounts:
    """What a piece of code dispatched (see the module docstring)."""

    ops: int = 0
    launching: int = 0
    syncs: int = 0
    by_op: Counter[str] = field(default_factory=Counter)  # launching operators by name
    sync_ops: Counter[str] = field(default_factory=Counter)

    def add(self, name: str, kind: str) -> None:
        self.ops += 1
        if kind == "launch":
            self.launching += 1
            self.by_op[name] += 1
        elif kind == "sync":
            self.syncs += 1
            self.sync_ops[name] += 1

    def __add__(self, other: OpCounts) -> OpCounts:
        return OpCounts(
            self.ops + other.ops,
            self.launching + other.launching,
            self.syncs + other.syncs,
            self.by_op + other.by_op,
            self.sync_ops + other.sync_ops,
        )

    def summary(self, top: int = 0) -> dict[str, Any]:
        out: dict[str, Any] = {"ops": self.ops, "launching": self.launching, "syncs": self.syncs}
        if top:
            out["top_launching"] = dict(self.by_op.most_common(top))
            out["sync_ops"] = dict(self.sync_ops)
        return out


class CountOps(TorchDispatchMode):
    """``with CountOps() as counter: ...`` then ``counter.counts``."""

    def __init__(self) -> None:
        super().__init__()
        self.counts = OpCounts()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.counts.add(func.overloadpacket.__name__, op_kind(func))
        return func(*args, **(kwargs or {}))
