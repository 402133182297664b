"""twm: Transformer-based World Models for sample-efficient reinforcement learning on Atari 100k.

The Python API (``twm.train``, ``twm.load``; module ``twm.api``) is imported on first use, so that
``import twm`` stays light (no torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twm.version import __version__

__all__ = ["RunEvent", "RunResult", "TrainedAgent", "__version__", "load", "train"]

if TYPE_CHECKING:
    from twm.api import RunEvent, RunResult, TrainedAgent, load, train

_API = frozenset({"RunEvent", "RunResult", "TrainedAgent", "load", "train"})


def __getattr__(name: str) -> Any:
    if name in _API:
        from twm import api  # the top layer, imported lazily: see tests/test_layers.py

        return getattr(api, name)
    raise AttributeError(f"module 'twm' has no attribute {name!r}")
