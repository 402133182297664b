"""Acting in the real game when the policy reads the transformer's state (``actor_critic.inputs`` 'zh').

The paper's actor reads z_t alone, so a real step needs only the encoder. With 'zh' (beyond the
paper) it reads (z_t, h_{t-1}): h_{t-1} is the dynamics model's output at the previous action
token, as in imagination (``twm.imagination``). So each row of real games (the trainer's one game,
the slots of an evaluation) carries an ``ActingMemory``:

1. ``Agent.act(obs, generator, memory)`` samples a_t from (z_t, h_{t-1}), then feeds the group
   (r_{t-1}, z_t, a_t) to the dynamics model (eval mode, no gradient) with the rows' Transformer-XL
   memory; its output h_t is the next step's h.
2. After the env step, ``record(rewards, dones)`` keeps r_t (the learning reward, as in the replay
   buffer) and d_t for the next call; where a step ended its episode h is reset to zeros and the
   episode-end flag cuts attention, so a new episode starts without history, as an imagined
   fresh start does.

``state_dict``/``load_state_dict`` carry it through a resume checkpoint (the trainer's game), so
a resumed run acts exactly as the uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from twm.models.dynamics import DynamicsMemory, DynamicsModel


class ActingMemory:
    """Per-row state of 'zh' acting: h_{t-1} (N, d), the last outcome, the Transformer-XL memory."""

    def __init__(self, rows: int, d_model: int, device: torch.device | str = "cpu") -> None:
        self.h_prev = torch.zeros(rows, d_model, device=device)  # (N, d)
        self.prev_reward = torch.zeros(rows, device=device)  # (N,) r_{t-1}
        self.prev_done = torch.ones(rows, dtype=torch.bool, device=device)  # (N,) d_{t-1}
        self.memory: DynamicsMemory | None = None  # None until the first step

    @property
    def rows(self) -> int:
        return self.h_prev.shape[0]

    @torch.no_grad()
    def advance(self, dynamics: DynamicsModel, z: Tensor, actions: Tensor) -> None:
        """Feed (r_{t-1}, z_t, a_t) of every row, z (N, Z) and actions (N,): h_prev becomes h_t."""
        was_training = dynamics.training
        dynamics.eval()
        if self.memory is None:  # the stream's first step has no r_{-1}
            empty = self.prev_reward.new_zeros(self.rows, 0)
            out = dynamics(z[:, None], actions[:, None], empty, empty.bool())
        else:
            prev_reward, prev_done = self.prev_reward[:, None], self.prev_done[:, None]
            out = dynamics(z[:, None], actions[:, None], prev_reward, prev_done, self.memory)
        dynamics.train(was_training)
        self.memory = out.memory
        self.h_prev = out.h[:, 0].float()  # (N, d)

    def record(self, rewards: np.ndarray | Tensor | Sequence[float], dones: np.ndarray | Tensor | Sequence[bool]) -> None:
        """The outcome of the step just acted: learning rewards (N,) and episode ends (N,)."""
        device = self.h_prev.device
        self.prev_reward = torch.as_tensor(rewards, dtype=torch.float32, device=device).reshape(self.rows)
        self.prev_done = torch.as_tensor(dones, dtype=torch.bool, device=device).reshape(self.rows)
        self.h_prev = torch.where(self.prev_done[:, None], 0.0, self.h_prev)

    def keep(self, rows: np.ndarray | list[int]) -> None:
        """Keep only these rows, in this order (evaluation slots that finished their episodes leave)."""
        index = torch.as_tensor(np.asarray(rows, dtype=np.int64), device=self.h_prev.device)
        self.h_prev, self.prev_reward, self.prev_done = self.h_prev[index], self.prev_reward[index], self.prev_done[index]
        if self.memory is not None:
            m = self.memory
            self.memory = DynamicsMemory([x[index] for x in m.hiddens], m.episode[index], m.num_tokens)

    def state_dict(self) -> dict[str, Any]:
        m = self.memory
        return {
            "h_prev": self.h_prev.cpu(),
            "prev_reward": self.prev_reward.cpu(),
            "prev_done": self.prev_done.cpu(),
            "memory": None
            if m is None
            else {"hiddens": [x.cpu() for x in m.hiddens], "episode": m.episode.cpu(), "num_tokens": m.num_tokens},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.h_prev.device
        self.h_prev = state["h_prev"].to(device)
        self.prev_reward = state["prev_reward"].to(device)
        self.prev_done = state["prev_done"].to(device)
        m = state["memory"]
        self.memory = (
            None
            if m is None
            else DynamicsMemory([x.to(device) for x in m["hiddens"]], m["episode"].to(device), int(m["num_tokens"]))
        )
