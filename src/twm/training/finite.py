"""Failing fast on a NaN or infinite loss, without a host sync per update (``FiniteCheck``).

Failures
    A NaN or infinite loss or gradient norm raises ``NonFiniteLossError`` naming the key, the update and
    interaction and the last good checkpoint (checked once per interaction and before every log line and
    checkpoint, so no checkpoint ever holds non-finite weights). A failed checkpoint write (e.g. disk
    full) raises ``CheckpointWriteError``; the previous checkpoint stays intact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from twm.training.checkpoint import CheckpointManager


class NonFiniteLossError(RuntimeError):
    """A loss or gradient norm became NaN or infinite; the message names it, the step and the last
    good checkpoint (which holds finite weights: the check runs before every checkpoint)."""

    def __init__(self, message: str, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint


class FiniteCheck:
    """Collects the metrics of each step on their device and checks them all with one sync later.

    Checking every update with ``.item()`` would stall the GPU queue; the trainer checks once per
    interaction (``act`` synchronises there anyway) and before every log line and checkpoint, so no
    checkpoint ever holds non-finite weights, and the error still names the first bad step.
    """

    def __init__(self, checkpoints: CheckpointManager) -> None:
        self._pending: list[tuple[str, list[str], Tensor]] = []
        self._checkpoints = checkpoints

    def add(self, where: str, metrics: Mapping[str, Any]) -> None:
        keys = [k for k, v in metrics.items() if isinstance(v, Tensor)]
        if keys:
            device = metrics[keys[0]].device
            values = torch.stack([metrics[k].detach().float().mean().to(device) for k in keys])
            self._pending.append((where, keys, values))

    def first_bad(self) -> tuple[str, str, float] | None:
        """(where, key, value) of the first non-finite value since the last call, else None."""
        pending, self._pending = self._pending, []
        if not pending or bool(torch.isfinite(torch.cat([v for _, _, v in pending])).all()):
            return None
        for where, keys, values in pending:
            for key, value in zip(keys, values.tolist(), strict=True):
                if not math.isfinite(value):
                    return where, key, value
        return None  # unreachable: some value was non-finite

    def check(self) -> None:
        """``NonFiniteLossError`` naming the first bad value and the last good checkpoint, if any."""
        bad = self.first_bad()
        if bad is None:
            return
        where, key, value = bad
        checkpoints = self._checkpoints
        last = checkpoints.last_path
        kind = "loss" if "loss" in key else "value"
        good = (
            f"last good checkpoint: {last} (interaction {checkpoints.last_interactions})"
            if last is not None
            else "no checkpoint was written before it"
        )
        raise NonFiniteLossError(f"non-finite {kind} {key}={value} {where}; {good}", last)
