"""A replay batch of sequences on a torch device: what the world model and the update read."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from twm.replay import SequenceBatch


@dataclass
class TorchSequenceBatch:
    """A ``SequenceBatch`` on a torch device. obs (B, T+2, S, 64, 64) uint8; the rest (B, T+1)."""

    obs: Tensor
    actions: Tensor
    rewards: Tensor
    terminated: Tensor
    truncated: Tensor

    @classmethod
    def from_numpy(cls, batch: SequenceBatch, device: torch.device | str) -> TorchSequenceBatch:
        def put(x: np.ndarray) -> Tensor:
            return torch.from_numpy(np.ascontiguousarray(x)).to(device, non_blocking=True)

        return cls(
            obs=put(batch.obs),
            actions=put(batch.actions).long(),
            rewards=put(batch.rewards).float(),
            terminated=put(batch.terminated).bool(),
            truncated=put(batch.truncated).bool(),
        )

    @property
    def dones(self) -> Tensor:
        return self.terminated | self.truncated
