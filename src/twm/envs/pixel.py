"""One adapter from any pixel game with discrete actions to what the agent reads.

A *source* is a game that produces raw pictures (``twm.envs.minatar``, ``twm.envs.crafter``,
``twm.envs.gym_env``); ``PixelEnv`` turns it into the interface of ``twm.envs.Env``, with the same
conventions as the Atari environment (twm.envs.atari):

Frames
    Each raw picture (H x W, H x W x 1, H x W x 3 or H x W x 4 uint8, or boolean, which maps to
    0/255) becomes one 64x64 frame: grayscale (``cv2`` luma of RGB) or, with ``env.color``, RGB in
    channels-first order (3, 64, 64). Pictures larger than 64x64 are shrunk with ``INTER_AREA``
    (averaging, no aliasing), smaller ones enlarged with ``INTER_NEAREST`` (sharp blocks).

Observation
    ``(frame_stack * c, 64, 64)`` uint8, c = 3 for colour else 1, frames oldest first, so the newest
    frame is the last c channels. A source of grids (MinAtar with ``env.observation=grid``) hands
    over finished (c, 10, 10) frames, which are stacked as they are; a source of vectors (gym with
    ``env.observation=vector``) hands over (n,) float32 numbers, each frame (n, 1, 1), the observation
    ``(frame_stack * n, 1, 1)`` float32. At an episode start every slot holds the first frame (the
    padding of the Atari environment and of the replay buffer).

Step
    The action is repeated ``env.action_repeat`` times (rewards summed; stops early when the episode
    ends); the newest picture is the frame. ``terminated`` is the game's own end (death, game over),
    ``truncated`` a time limit: the game's own (Crafter's 10,000 steps) or ``env.time_limit`` agent
    steps since the reset, whichever comes first; a step is never both. Every episode end is the end
    of a whole game (there are no lives), so ``info["game_over"]`` is set with ``terminated or
    truncated``, and ``info["game_score"]`` then holds the raw return of the episode.

Rewards
    ``tanh(raw)`` with ``env.reward_transform == "tanh"``, else raw; ``info["raw_reward"]`` is raw.

Train and eval modes behave the same (a source gets a different seed for each env).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal, Protocol

import cv2
import numpy as np

from twm.envs.saved_state import dump_game, load_game

if TYPE_CHECKING:
    from twm.config import EnvConfig

FRAME_SIZE = 64


class EnvError(ValueError):
    """An environment that cannot be built as asked (missing package, unsuitable spaces): one line."""


class PixelSource(Protocol):
    """A game that produces raw pictures; see the module docstring for what PixelEnv adds."""

    num_actions: int
    action_meanings: list[str]

    def reset(self) -> tuple[np.ndarray, dict[str, Any]]: ...

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]: ...

    def get_state(self) -> Any: ...

    def set_state(self, state: Any) -> None: ...

    def close(self) -> None: ...


class PickledGameState:
    """get_state/set_state/close of a source whose game is plain Python/numpy in ``self._env``.

    Such a game (its objects and its numpy generator) continues exactly from a pickled snapshot;
    the snapshot is bytes, so resume checkpoints stay loadable with ``weights_only``, and it is
    rebuilt with the allowlist of ``twm.envs.saved_state`` (classes of ``game_packages`` only).
    """

    _env: Any
    game_packages: tuple[str, ...]

    def get_state(self) -> Any:
        return {"game": dump_game(self._env)}

    def set_state(self, state: Any) -> None:
        self._env = load_game(state["game"], self.game_packages)

    def close(self) -> None:
        self._env = None


def to_frame(picture: np.ndarray, color: bool) -> np.ndarray:
    """A raw picture -> one 64x64 frame: (64, 64) grayscale or (3, 64, 64) RGB, uint8."""
    pic = np.asarray(picture)
    if pic.dtype == bool:
        pic = pic.astype(np.uint8) * 255
    if pic.dtype != np.uint8:
        raise EnvError(f"observations must be uint8 or boolean images, got {pic.dtype}")
    if pic.ndim == 3 and pic.shape[-1] == 1:
        pic = pic[..., 0]
    elif pic.ndim == 3 and pic.shape[-1] == 4:
        pic = pic[..., :3]  # drop alpha
    if pic.ndim == 2:
        if color:
            pic = np.repeat(pic[..., None], 3, axis=-1)
    elif pic.ndim == 3 and pic.shape[-1] == 3:
        if not color:
            pic = cv2.cvtColor(np.ascontiguousarray(pic), cv2.COLOR_RGB2GRAY)
    else:
        raise EnvError(f"observations must be HxW or HxWxC (C in 1, 3, 4) images, got shape {pic.shape}")
    h, w = pic.shape[:2]
    if (h, w) != (FRAME_SIZE, FRAME_SIZE):
        shrink = h * w >= FRAME_SIZE * FRAME_SIZE
        interpolation = cv2.INTER_AREA if shrink else cv2.INTER_NEAREST
        pic = cv2.resize(np.ascontiguousarray(pic), (FRAME_SIZE, FRAME_SIZE), interpolation=interpolation)
    if color:
        return np.ascontiguousarray(pic.transpose(2, 0, 1))  # (3, 64, 64)
    return pic  # (64, 64)


class PixelEnv:
    """A PixelSource as a twm environment (see the module docstring)."""

    def __init__(self, source: PixelSource, env_cfg: EnvConfig, mode: Literal["train", "eval"]) -> None:
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        self.source = source
        self.mode = mode
        self.color = bool(env_cfg.color)
        self.frame_stack = int(env_cfg.frame_stack)
        self.action_repeat = int(env_cfg.action_repeat)
        self.time_limit = int(env_cfg.time_limit)
        self.tanh_rewards = env_cfg.reward_transform == "tanh"
        self.num_actions: int = source.num_actions
        self.action_meanings: list[str] = list(source.action_meanings)
        self.frame_channels = env_cfg.frame_channels  # channels of one frame (numbers of a vector)
        self._as_is = env_cfg.observation in ("grid", "vector")  # the source hands over finished frames
        self._frame_size = env_cfg.frame_size
        self._stack = np.zeros((env_cfg.image_channels, self._frame_size, self._frame_size), dtype=env_cfg.frame_dtype)
        self._steps = 0
        self._score = 0.0
        self._episode_over = True

    def _frame(self, picture: np.ndarray) -> np.ndarray:
        if self._as_is:  # already a frame
            return picture.reshape(self.frame_channels, self._frame_size, self._frame_size)
        return to_frame(picture, self.color).reshape(self.frame_channels, FRAME_SIZE, FRAME_SIZE)

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is not None:
            raise ValueError("seed the source when building the environment (make_env), not at reset")
        picture, info = self.source.reset()
        self._stack[...] = np.tile(self._frame(picture), (self.frame_stack, 1, 1))
        self._steps = 0
        self._score = 0.0
        self._episode_over = False
        return self._stack.copy(), {**info, "real_reset": True}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._episode_over:
            raise RuntimeError("step() called after the episode ended; call reset() first")
        if not 0 <= action < self.num_actions:
            raise ValueError(f"action {action} out of range [0, {self.num_actions})")
        raw_reward = 0.0
        terminated = truncated = False
        info: dict[str, Any] = {}
        for _ in range(self.action_repeat):
            picture, reward, terminated, truncated, info = self.source.step(int(action))
            raw_reward += float(reward)
            if terminated or truncated:
                break
        self._steps += 1
        truncated = (truncated or self._steps >= self.time_limit) and not terminated
        self._score += raw_reward
        self._episode_over = terminated or truncated
        c = self.frame_channels
        self._stack[:-c] = self._stack[c:]
        self._stack[-c:] = self._frame(picture)
        reward_out = math.tanh(raw_reward) if self.tanh_rewards else raw_reward
        info = {**info, "raw_reward": raw_reward, "game_over": self._episode_over}
        if self._episode_over:
            info["game_score"] = self._score
        return self._stack.copy(), reward_out, terminated, truncated, info

    def get_state(self) -> dict[str, Any]:
        return {
            "source": self.source.get_state(),
            "stack": self._stack.copy(),
            "steps": self._steps,
            "score": self._score,
            "episode_over": self._episode_over,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.source.set_state(state["source"])
        self._stack[...] = state["stack"]
        self._steps = int(state["steps"])
        self._score = float(state["score"])
        self._episode_over = bool(state["episode_over"])

    def close(self) -> None:
        self.source.close()
