"""Helpers shared by the environment-family tests (tests/envs/): the command line in a subprocess,
its one-line errors, an env state through a resume checkpoint, and the test games registered as
gym:<id> when this module is imported."""

from __future__ import annotations

import io
import math
import os
import subprocess
import sys
import threading
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from twm.envs.minatar import COLORS, GRAY_LEVELS
from twm.envs.pixel import PixelEnv
from twm.training.checkpoint import from_storable, to_storable

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_twm(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "twm.cli", *args], capture_output=True, text=True, timeout=timeout, env=ENV
    )


def one_line_error(out: subprocess.CompletedProcess[str]) -> bool:
    return (
        out.returncode == 2
        and out.stderr.count("\n") == 1
        and out.stderr.startswith("twm: error: ")
        and "Traceback" not in out.stderr
    )


def through_checkpoint(state: Any) -> Any:
    """An env state as a resume checkpoint stores and reads it: to_storable, torch.save, a
    ``weights_only`` torch.load (which refuses pickled objects), from_storable."""
    buffer = io.BytesIO()
    torch.save(to_storable(state), buffer)
    buffer.seek(0)
    return from_storable(torch.load(buffer, weights_only=True))


def run_episode(env: PixelEnv, action: int = 0, max_steps: int = 100) -> list[tuple[Any, ...]]:
    steps = []
    for _ in range(max_steps):
        _, reward, terminated, truncated, info = env.step(action)
        steps.append((reward, terminated, truncated, info))
        if terminated or truncated:
            return steps
    raise AssertionError("the episode did not end")


def same(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> bool:
    if len(a) != len(b):
        return False
    return all(
        len(x) == len(y) and np.array_equal(x[0], y[0]) and x[1:] == y[1:] for x, y in zip(a, b, strict=True)
    )


def reference_picture(state: np.ndarray, color: bool) -> np.ndarray:
    """The documented MinAtar picture, built pixel by pixel."""
    background = (128, 128, 128) if color else 128
    levels = COLORS if color else GRAY_LEVELS
    pic = np.zeros((64, 64, 3) if color else (64, 64), dtype=np.uint8)
    for y in range(64):
        for x in range(64):
            pic[y, x] = background
    for i in range(10):
        for j in range(10):
            value = background
            for k in range(state.shape[2]):
                if state[i, j, k]:
                    value = levels[k]  # a later channel wins
            for y in range(2 + 6 * i, 8 + 6 * i):
                for x in range(2 + 6 * j, 8 + 6 * j):
                    pic[y, x] = value
    return pic


# Test games registered as gym:<id> (the gym:<id> tests and the gym smoke run use them).


class PixelGame(gym.Env):
    """uint8 images (size x size x channels) from the seeded generator; reward = the action received."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self, size: int = 16, start: int = 0, length: int = 20, channels: int = 3, names: bool = False
    ):
        shape = (size, size, channels) if channels else (size, size)
        self.observation_space = spaces.Box(0, 255, shape, np.uint8)
        self.action_space = spaces.Discrete(3, start=start)
        self.size, self.length, self.names = size, length, names
        self.received: list[int] = []
        self.t = 0
        self.base = np.zeros(shape, np.uint8)

    def get_action_meanings(self) -> list[str]:
        return ["STAY", "UP", "DOWN"] if self.names else ["ONLY_ONE"]

    def current(self) -> np.ndarray:
        return (self.base + np.uint8(10 * self.t % 256)).astype(np.uint8)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        self.base = self.np_random.integers(0, 256, self.observation_space.shape, dtype=np.uint8)
        return self.current(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.received.append(int(action))
        self.t += 1
        return self.current(), float(action), self.t >= self.length, False, {}


class BoolGame(gym.Env):
    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, shape: tuple[int, ...] = (10, 10, 4)):
        self.observation_space = spaces.Box(0, 1, tuple(shape), bool)
        self.action_space = spaces.Discrete(2)
        self.state = np.zeros(tuple(shape), bool)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.state = self.np_random.random(self.observation_space.shape) < 0.3
        return self.state.copy(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.state = np.roll(self.state, 1, axis=1)
        return self.state.copy(), 0.0, False, False, {}


class VectorObsGame(PixelGame):
    def __init__(self) -> None:
        super().__init__()
        self.observation_space = spaces.Box(-1.0, 1.0, (4,), np.float32)


class ContinuousGame(PixelGame):
    def __init__(self) -> None:
        super().__init__()
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)


class LockedGame(PixelGame):
    """Cannot be deep-copied (a lock, like a native handle)."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()


class ForeignGlobalGame(PixelGame):
    """Picklable, but its state names a function outside its package (math.sqrt): not rebuilt."""

    def __init__(self) -> None:
        super().__init__()
        self.transform = math.sqrt


GYM_ENVS = {
    "TwmTestPixel-v0": (PixelGame, None),
    "TwmTestPixelLimited-v0": (PixelGame, 4),
    "TwmTestBool-v0": (BoolGame, None),
    "TwmTestVectorObs-v0": (VectorObsGame, None),
    "TwmTestContinuous-v0": (ContinuousGame, None),
    "TwmTestLocked-v0": (LockedGame, None),
    "TwmTestForeignGlobal-v0": (ForeignGlobalGame, None),
}
for _id, (_cls, _limit) in GYM_ENVS.items():
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=_cls, max_episode_steps=_limit)
