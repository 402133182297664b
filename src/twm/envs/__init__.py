"""Environments: the Atari 100k protocol, the built-in catch game, and any pixel game through one adapter.

Every environment returns observations of shape (frame_stack * c, 64, 64) uint8, c = 1 for grayscale
(always for Atari and catch) and 3 for RGB (``env.color``), the newest frame last, and at an episode
start pads the stack by repeating the first frame. MinAtar with ``env.observation=grid`` returns
(frame_stack * c, 10, 10), c the game's kinds of object (twm.envs.minatar.grid_frame); a gym game
with ``env.observation=vector`` returns (frame_stack * n, 1, 1) float32, n numbers per step.

Families (twm.games): Atari (twm.envs.atari), catch (twm.envs.catch), and through the adapter
twm.envs.pixel: MinAtar (twm.envs.minatar), Crafter (twm.envs.crafter), any Gymnasium id
(twm.envs.gym_env).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from twm.envs.pixel import EnvError, PixelEnv, PixelSource
from twm.games import GYM_PREFIX, MINATAR_PREFIX, game_family, resolve_game

if TYPE_CHECKING:  # twm.config imports twm.games, so import the config lazily
    from twm.config import EnvConfig

__all__ = ["Env", "EnvError", "make_env", "newest_frame"]


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
    """The environment named by ``env_cfg.game`` in train or eval mode (EnvError if it cannot be built)."""
    game = resolve_game(env_cfg.game)
    family = game_family(game)
    if family == "catch":
        from twm.envs.catch import CatchEnv

        return CatchEnv(env_cfg, mode=mode, seed=seed)
    if family == "atari":
        from twm.envs.atari import AtariEnv

        return AtariEnv(env_cfg, mode=mode, seed=seed)

    source: PixelSource
    if family == "minatar":
        from twm.envs.minatar import MinAtarSource

        source = MinAtarSource(game[len(MINATAR_PREFIX) :], env_cfg, seed)
    elif family == "crafter":
        from twm.envs.crafter import CrafterSource

        source = CrafterSource(seed)
    else:
        from twm.envs.gym_env import GymSource

        gym_source = source = GymSource(game[len(GYM_PREFIX) :], env_cfg, seed)
        if env_cfg.observation == "vector" and env_cfg.vector_size != gym_source.vector_size:
            if env_cfg.vector_size:
                gym_source.close()
                raise EnvError(
                    f"env.vector_size={env_cfg.vector_size}, but {env_cfg.game} observations hold "
                    f"{gym_source.vector_size} numbers"
                )
            env_cfg = dataclasses.replace(env_cfg, vector_size=gym_source.vector_size)
    return PixelEnv(source, env_cfg, mode)


_MEANINGS: dict[str, list[str]] = {}


def action_meanings_of(env_cfg: EnvConfig) -> list[str]:
    """The game's action names (e.g. NOOP, FIRE, UPRIGHT), cached per game: an Atari env loads a ROM."""
    if env_cfg.game not in _MEANINGS:
        env = make_env(env_cfg, "eval", 0)
        try:
            _MEANINGS[env_cfg.game] = list(env.action_meanings)
        finally:
            env.close()
    return list(_MEANINGS[env_cfg.game])


def check_env(env_cfg: EnvConfig) -> int:
    """Build the environment once (EnvError if it cannot be built) and return its number of actions.

    With ``env.observation=vector`` and ``env.vector_size`` 0 it sets ``env_cfg.vector_size`` to the
    numbers in the environment's observations (the models' input size).
    """
    env = make_env(env_cfg, "eval", 0)
    try:
        if env_cfg.observation == "vector" and isinstance(env, PixelEnv):
            env_cfg.vector_size = env.frame_channels
        return env.num_actions
    finally:
        env.close()


def newest_frame(obs: np.ndarray, frame_channels: int) -> np.ndarray:
    """The newest frame of an observation: (64, 64) for grayscale, (3, 64, 64) for RGB, (c, 10, 10) for grids."""
    return obs[-1] if frame_channels == 1 else obs[-frame_channels:]
