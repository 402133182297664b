"""Environments: the Atari 100k protocol and a tiny built-in pixel game with the same interface.

Every environment returns observations of shape (frame_stack, 64, 64) uint8 with the newest frame
last, and at an episode start pads the stack by repeating the first frame.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from twm.envs.games import BUILTIN_GAME, resolve_game

if TYPE_CHECKING:  # twm.config imports twm.envs.games, so import the config lazily
    from twm.config import EnvConfig


class Env(Protocol):
    """What the agent needs of an environment (see twm.envs.atari.AtariEnv for the semantics)."""

    num_actions: int
    action_meanings: list[str]

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict[str, Any]]: ...

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]: ...

    def get_state(self) -> Any: ...

    def set_state(self, state: Any) -> None: ...

    def close(self) -> None: ...


def make_env(env_cfg: EnvConfig, mode: Literal["train", "eval"], seed: int) -> Env:
    """The environment named by ``env_cfg.game`` in train or eval mode."""
    game = resolve_game(env_cfg.game)
    if game == BUILTIN_GAME:
        from twm.envs.catch import CatchEnv

        return CatchEnv(env_cfg, mode=mode, seed=seed)
    from twm.envs.atari import AtariEnv

    return AtariEnv(env_cfg, mode=mode, seed=seed)
