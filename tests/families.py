"""Helpers shared by the environment-family tests (tests/envs/): the command line in a subprocess,
its one-line errors, and an env state through a resume checkpoint."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from typing import Any

import numpy as np
import torch

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
