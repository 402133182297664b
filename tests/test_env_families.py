"""The pixel-game families: MinAtar, Crafter and gym:<id> through the PixelEnv adapter.

Pictures are checked pixel for pixel against references built independently (explicit loops,
``cv2`` calls, ``np.kron`` blocks); the adapter's stacking, episode ends, action repeat, rewards and
state round trip against a scripted source whose every picture is known. The smoke training runs
(marked slow, about 1.5 minutes in all on one CPU thread) go through the command line as a user would.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import cv2
import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from twm import games as games_mod
from twm.config import ConfigError, EnvConfig, load_config
from twm.envs import EnvError, check_env, make_env, newest_frame
from twm.envs.crafter import ACHIEVEMENTS, crafter_score, success_rates
from twm.envs.minatar import COLORS, GRAY_LEVELS, render_state
from twm.envs.pixel import PixelEnv, to_frame
from twm.games import (
    MINATAR_GAMES,
    UnknownGameError,
    game_family,
    random_normalized_score,
    resolve_game,
)
from twm.replay import ReplayBuffer
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


# ============================================================================ MinAtar pictures


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


def hand_state() -> np.ndarray:
    state = np.zeros((10, 10, 4), dtype=bool)
    state[0, 0, 0] = True  # top-left corner, channel 0
    state[9, 9, 1] = True  # bottom-right corner, channel 1
    state[3, 7, 2] = True
    state[5, 2, 1] = state[5, 2, 3] = True  # overlap: channel 3 wins
    state[8, 4, 0] = state[8, 4, 2] = True  # overlap: channel 2 wins
    state[2, :, 3] = True  # a row of bricks
    return state


@pytest.mark.parametrize("color", [False, True])
def test_render_state_pixel_for_pixel(color: bool) -> None:
    state = hand_state()
    pic = render_state(state, color=color)
    assert pic.dtype == np.uint8
    np.testing.assert_array_equal(pic, reference_picture(state, color))
    levels = COLORS if color else GRAY_LEVELS
    bg = np.array((128, 128, 128) if color else 128)
    # A few pixels spelled out: the border, the first cell, an overlap and the cell edges.
    np.testing.assert_array_equal(pic[0, 0], bg)
    np.testing.assert_array_equal(pic[1, 63], bg)
    np.testing.assert_array_equal(pic[63, 63], bg)
    np.testing.assert_array_equal(pic[2, 2], levels[0])
    np.testing.assert_array_equal(pic[7, 7], levels[0])
    np.testing.assert_array_equal(pic[8, 8], bg)  # cell (1, 1) is empty
    np.testing.assert_array_equal(pic[2 + 6 * 5, 2 + 6 * 2], levels[3])  # channel 3 over channel 1
    np.testing.assert_array_equal(pic[2 + 6 * 8 + 5, 2 + 6 * 4 + 5], levels[2])  # channel 2 over 0
    np.testing.assert_array_equal(pic[61, 61], levels[1])
    np.testing.assert_array_equal(pic[62, 62], bg)


def test_render_state_of_every_channel_count_and_empty_state() -> None:
    rng = np.random.default_rng(0)
    for c in range(1, 11):
        state = rng.random((10, 10, c)) < 0.3
        for color in (False, True):
            np.testing.assert_array_equal(render_state(state, color), reference_picture(state, color))
    empty = render_state(np.zeros((10, 10, 4), dtype=bool))
    assert (empty == 128).all()


def test_render_state_levels_contrast_with_the_background() -> None:
    assert len(set(GRAY_LEVELS)) == len(GRAY_LEVELS) == 10 and len(set(COLORS)) == len(COLORS) == 10
    assert min(abs(v - 128) for v in GRAY_LEVELS) >= 48
    assert min(max(abs(c - 128) for c in rgb) for rgb in COLORS) >= 48
    # The first eight colours are the corners of the RGB cube: as far from grey as colours can be.
    assert {tuple(c) for c in COLORS[:8]} == {(r, g, b) for r in (0, 255) for g in (0, 255) for b in (0, 255)}


@pytest.mark.parametrize("shape", [(10, 10), (9, 10, 4), (10, 10, 11), (10, 11, 2)])
def test_render_state_rejects_non_minatar_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="MinAtar state"):
        render_state(np.zeros(shape, dtype=bool))


# ============================================================================ to_frame


def test_to_frame_boolean_and_gray_pictures() -> None:
    rng = np.random.default_rng(1)
    mask = rng.random((64, 64)) < 0.5
    frame = to_frame(mask, color=False)
    assert frame.dtype == np.uint8 and frame.shape == (64, 64)
    np.testing.assert_array_equal(frame, np.where(mask, 255, 0))
    gray = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    np.testing.assert_array_equal(to_frame(gray, False), gray)
    np.testing.assert_array_equal(to_frame(gray[..., None], False), gray)  # HxWx1 is HxW
    # Gray as colour: three equal channels, channels first.
    rgb = to_frame(gray, True)
    assert rgb.shape == (3, 64, 64)
    for c in range(3):
        np.testing.assert_array_equal(rgb[c], gray)


def test_to_frame_rgb_uses_cv2_luma_of_rgb_order() -> None:
    rng = np.random.default_rng(2)
    pic = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_frame(pic, False), cv2.cvtColor(pic, cv2.COLOR_RGB2GRAY))
    red = np.zeros((64, 64, 3), dtype=np.uint8)
    red[..., 0] = 255
    assert (to_frame(red, False) == 76).all()  # 0.299 * 255: red read as R, not as B (29)
    # Non-contiguous input (a channel-reversed view) works too.
    bgr_view = pic[..., ::-1]
    np.testing.assert_array_equal(to_frame(bgr_view, False), cv2.cvtColor(pic, cv2.COLOR_BGR2GRAY))
    # Colour: channels first, values untouched.
    rgb = to_frame(pic, True)
    assert rgb.shape == (3, 64, 64) and rgb.flags.c_contiguous
    np.testing.assert_array_equal(rgb, pic.transpose(2, 0, 1))


def test_to_frame_drops_alpha() -> None:
    rng = np.random.default_rng(3)
    rgba = rng.integers(0, 256, (64, 64, 4), dtype=np.uint8)
    other_alpha = rgba.copy()
    other_alpha[..., 3] = 255 - other_alpha[..., 3]
    for color in (False, True):
        np.testing.assert_array_equal(to_frame(rgba, color), to_frame(rgba[..., :3].copy(), color))
        np.testing.assert_array_equal(to_frame(rgba, color), to_frame(other_alpha, color))


def test_to_frame_enlarges_with_sharp_blocks() -> None:
    board = ((np.arange(16)[:, None] + np.arange(16)[None, :]) % 2 * 255).astype(np.uint8)
    frame = to_frame(board, False)
    np.testing.assert_array_equal(frame, np.kron(board, np.ones((4, 4), dtype=np.uint8)))
    # Colour, non-square and not an integer factor (8 x 32): still nearest-neighbour, only board values.
    rng = np.random.default_rng(4)
    small = rng.integers(0, 256, (8, 32, 3), dtype=np.uint8)
    out = to_frame(small, True)
    expected = cv2.resize(small, (64, 64), interpolation=cv2.INTER_NEAREST).transpose(2, 0, 1)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(out[:, :8, :2], small[0, 0][:, None, None] * np.ones((1, 8, 2), np.uint8))


def test_to_frame_shrinks_by_averaging() -> None:
    fine = ((np.arange(128)[:, None] + np.arange(128)[None, :]) % 2 * 255).astype(np.uint8)
    frame = to_frame(fine, False)
    # INTER_AREA averages each 2x2 block (half 0, half 255); INTER_NEAREST would give 0s or 255s.
    assert np.isin(frame, (127, 128)).all()
    rng = np.random.default_rng(5)
    pic = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    out = to_frame(pic, True)
    block_means = pic.reshape(64, 2, 64, 2, 3).astype(np.float64).mean(axis=(1, 3)).transpose(2, 0, 1)
    assert np.abs(out.astype(np.float64) - block_means).max() <= 0.5 + 1e-9
    big = rng.integers(0, 256, (210, 160, 3), dtype=np.uint8)
    expected = cv2.resize(cv2.cvtColor(big, cv2.COLOR_RGB2GRAY), (64, 64), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(to_frame(big, False), expected)


@pytest.mark.parametrize(
    "picture",
    [
        np.zeros((64, 64), dtype=np.float32),
        np.zeros((64, 64), dtype=np.int64),
        np.zeros((64, 64, 2), dtype=np.uint8),
        np.zeros((64,), dtype=np.uint8),
        np.zeros((2, 64, 64, 3), dtype=np.uint8),
    ],
)
def test_to_frame_rejects_non_images(picture: np.ndarray) -> None:
    with pytest.raises(EnvError) as info:
        to_frame(picture, False)
    assert "\n" not in str(info.value)


# ============================================================================ PixelEnv with a scripted source


def picture_value(episode: int, t: int) -> int:
    return (40 * episode + t) % 256


class ScriptedSource:
    """A PixelSource whose picture after ``t`` steps of episode ``e`` is the constant picture_value(e, t)
    (colour: channels v, 255 - v, 7v mod 256), and whose t-th step gives reward t (+ noise in [0, 1)
    with ``noise``, from a generator that belongs to the state)."""

    num_actions = 3
    action_meanings = ["NOOP", "LEFT", "RIGHT"]

    def __init__(
        self,
        terminate_at: int | None = None,
        truncate_at: int | None = None,
        both_at: int | None = None,
        color: bool = False,
        size: int = 64,
        noise: bool = False,
    ) -> None:
        self.terminate_at, self.truncate_at, self.both_at = terminate_at, truncate_at, both_at
        self.color, self.size, self.noise = color, size, noise
        self.episode, self.t = -1, 0
        self.rng = np.random.default_rng(123)
        self.calls: list[int] = []
        self.closed = False

    def picture(self) -> np.ndarray:
        v = picture_value(self.episode, self.t)
        if not self.color:
            return np.full((self.size, self.size), v, dtype=np.uint8)
        pic = np.empty((self.size, self.size, 3), dtype=np.uint8)
        pic[..., 0], pic[..., 1], pic[..., 2] = v, 255 - v, (7 * v) % 256
        return pic

    def reset(self) -> tuple[np.ndarray, dict[str, Any]]:
        self.episode += 1
        self.t = 0
        return self.picture(), {"episode": self.episode}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.calls.append(action)
        self.t += 1
        reward = float(self.t) + (float(self.rng.random()) if self.noise else 0.0)
        both = self.t == self.both_at
        terminated = both or self.t == self.terminate_at
        truncated = both or self.t == self.truncate_at
        return self.picture(), reward, terminated, truncated, {"source_step": self.t}

    def get_state(self) -> Any:
        return copy.deepcopy({"episode": self.episode, "t": self.t, "rng": self.rng})

    def set_state(self, state: Any) -> None:
        state = copy.deepcopy(state)
        self.episode, self.t, self.rng = state["episode"], state["t"], state["rng"]

    def close(self) -> None:
        self.closed = True


def expected_frame(value: int, color: bool) -> np.ndarray:
    if not color:
        return np.full((1, 64, 64), value, dtype=np.uint8)
    out = np.empty((3, 64, 64), dtype=np.uint8)
    out[0], out[1], out[2] = value, 255 - value, (7 * value) % 256
    return out


def expected_obs(history: list[int], stack: int, color: bool) -> np.ndarray:
    """Slot s of the stack holds history[max(0, n - stack + s)], oldest first."""
    n = len(history)
    return np.concatenate([expected_frame(history[max(0, n - stack + s)], color) for s in range(stack)])


def pixel_env(source: ScriptedSource, **cfg: Any) -> PixelEnv:
    base = {"game": "crafter", "frame_stack": 4, "reward_transform": "none", "time_limit": 1000}
    return PixelEnv(source, EnvConfig(**{**base, **cfg}), "train")


@pytest.mark.parametrize("color", [False, True])
@pytest.mark.parametrize("size", [64, 16])
def test_frame_stack_shifts_and_pads_at_every_episode_start(color: bool, size: int) -> None:
    stack = 3 if color else 4
    source = ScriptedSource(terminate_at=6, color=color, size=size)
    env = pixel_env(source, frame_stack=stack, color=color)
    c = 3 if color else 1
    for episode in range(3):
        obs, info = env.reset()
        assert info == {"episode": episode, "real_reset": True}
        history = [picture_value(episode, 0)]
        assert obs.shape == (stack * c, 64, 64) and obs.dtype == np.uint8
        np.testing.assert_array_equal(obs, expected_obs(history, stack, color))
        for t in range(1, 7):
            prev = obs
            obs, _, terminated, truncated, _ = env.step(t % 3)
            history.append(picture_value(episode, t))
            np.testing.assert_array_equal(obs, expected_obs(history, stack, color))
            np.testing.assert_array_equal(obs[:-c], prev[c:])  # shifted by one frame, newest last
            np.testing.assert_array_equal(
                newest_frame(obs, c).reshape(c, 64, 64), expected_frame(history[-1], color)
            )
            assert terminated == (t == 6) and not truncated
    # The returned observation is a copy: changing it does not change the next one.
    obs, _ = env.reset()
    obs[...] = 0
    assert (env.step(0)[0][0] == picture_value(3, 0)).all()


def run_episode(env: PixelEnv, action: int = 0, max_steps: int = 100) -> list[tuple[Any, ...]]:
    steps = []
    for _ in range(max_steps):
        _, reward, terminated, truncated, info = env.step(action)
        steps.append((reward, terminated, truncated, info))
        if terminated or truncated:
            return steps
    raise AssertionError("the episode did not end")


@pytest.mark.parametrize(
    ("source_kw", "time_limit", "end_step", "kind"),
    [
        ({"terminate_at": 5}, 1000, 5, "terminated"),
        ({"truncate_at": 4}, 1000, 4, "truncated"),  # the game's own time limit
        ({}, 3, 3, "truncated"),  # env.time_limit
        ({"terminate_at": 5}, 5, 5, "terminated"),  # both at once: the game's end wins
        ({"truncate_at": 5}, 5, 5, "truncated"),
        ({"both_at": 2}, 1000, 2, "terminated"),  # a source that says both: never both
        ({"terminate_at": 7}, 4, 4, "truncated"),
    ],
)
def test_terminated_and_truncated_are_kept_apart(
    source_kw: dict[str, int], time_limit: int, end_step: int, kind: str
) -> None:
    env = pixel_env(ScriptedSource(**source_kw), time_limit=time_limit)
    for _ in range(2):  # the step counter restarts at every reset
        env.reset()
        steps = run_episode(env)
        assert len(steps) == end_step
        for t, (_, terminated, truncated, info) in enumerate(steps, 1):
            last = t == end_step
            assert not (terminated and truncated)
            assert terminated == (last and kind == "terminated")
            assert truncated == (last and kind == "truncated")
            assert info["game_over"] == last and ("game_score" in info) == last
            assert info["source_step"] == t  # the source's info passes through
        assert steps[-1][3]["game_score"] == sum(range(1, end_step + 1))
        with pytest.raises(RuntimeError, match="reset"):
            env.step(0)


def test_action_repeat_sums_rewards_and_stops_at_the_episode_end() -> None:
    source = ScriptedSource(terminate_at=5)
    env = pixel_env(source, action_repeat=3)
    env.reset()
    obs, reward, terminated, truncated, info = env.step(2)
    assert source.calls == [2, 2, 2] and reward == 1 + 2 + 3 and info["raw_reward"] == 6
    assert (obs[-1] == picture_value(0, 3)).all() and (obs[-2] == picture_value(0, 0)).all()
    assert not terminated and not truncated
    obs, reward, terminated, truncated, info = env.step(1)
    assert source.calls == [2, 2, 2, 1, 1]  # stopped after the source's episode ended
    assert reward == 4 + 5 and terminated and not truncated and info["game_score"] == 15
    assert (obs[-1] == picture_value(0, 5)).all() and (obs[-2] == picture_value(0, 3)).all()
    # Source truncation inside a repeat, and env.time_limit counting agent steps (not source steps).
    source = ScriptedSource(truncate_at=2)
    env = pixel_env(source, action_repeat=4)
    env.reset()
    _, reward, terminated, truncated, _ = env.step(0)
    assert source.calls == [0, 0] and reward == 3 and truncated and not terminated
    source = ScriptedSource()
    env = pixel_env(source, action_repeat=2, time_limit=3)
    env.reset()
    steps = run_episode(env)
    assert len(steps) == 3 and source.t == 6 and steps[-1][2] and not steps[-1][1]
    assert steps[-1][3]["game_score"] == sum(range(1, 7))


def test_tanh_rewards_keep_the_raw_reward_and_the_raw_game_score() -> None:
    env = pixel_env(ScriptedSource(terminate_at=3), reward_transform="tanh", action_repeat=2)
    env.reset()
    _, reward, _, _, info = env.step(0)
    assert reward == pytest.approx(math.tanh(3.0)) and info["raw_reward"] == 3.0
    _, reward, terminated, _, info = env.step(0)
    assert terminated and reward == pytest.approx(math.tanh(3.0)) and info["raw_reward"] == 3.0
    assert info["game_score"] == 6.0  # 1 + 2 + 3, raw: not tanh(3) + tanh(3)
    env = pixel_env(ScriptedSource(), reward_transform="none")
    env.reset()
    assert env.step(0)[1] == 1.0


@pytest.mark.parametrize(("terminate_at", "time_limit", "length"), [(9, 1000, 6), (None, 8, 5)])
def test_pixel_env_state_round_trip_continues_identically(
    terminate_at: int | None, time_limit: int, length: int
) -> None:
    def new_env() -> PixelEnv:
        source = ScriptedSource(terminate_at=terminate_at, noise=True)
        return pixel_env(source, reward_transform="tanh", time_limit=time_limit)

    env = new_env()
    env.reset()
    for _ in range(3):
        env.step(1)
    state = env.get_state()
    saved_stack = state["stack"].copy()

    def rest(e: PixelEnv) -> list[tuple[Any, ...]]:
        out = []
        for a in (0, 2, 1, 1, 0, 2):
            obs, reward, terminated, truncated, info = e.step(a)
            out.append((obs, reward, terminated, truncated, info))
            if terminated or truncated:
                break
        return out

    first = rest(env)
    np.testing.assert_array_equal(state["stack"], saved_stack)  # the state is not a view of the env
    env.set_state(state)
    second = rest(env)
    fresh = new_env()  # the step count, score and stack travel in the state
    fresh.set_state(pickle.loads(pickle.dumps(state)))
    third = rest(fresh)
    # Ends at step 9: terminated by the source, or truncated by env.time_limit (8 agent steps).
    assert len(first) == length and first[-1][2] == (terminate_at is not None)
    assert first[-1][3] == (terminate_at is None)
    last = 3 + length
    assert first[-1][4]["game_score"] > sum(range(1, last + 1))  # the whole episode, saved steps included
    for a, b, c in zip(first, second, third, strict=True):
        for x in (b, c):
            np.testing.assert_array_equal(a[0], x[0])
            assert a[1:4] == x[1:4] and a[4] == x[4]
    # A state taken at an episode end restores the end: stepping needs a reset.
    end_state = env.get_state()
    env.reset()
    env.set_state(end_state)
    with pytest.raises(RuntimeError):
        env.step(0)
    env.close()
    assert env.source.closed


def test_pixel_env_rejects_bad_calls() -> None:
    with pytest.raises(ValueError, match="mode"):
        PixelEnv(ScriptedSource(), EnvConfig(game="crafter"), "test")  # type: ignore[arg-type]
    env = pixel_env(ScriptedSource())
    with pytest.raises(RuntimeError):
        env.step(0)  # before the first reset
    with pytest.raises(ValueError, match="seed"):
        env.reset(seed=1)
    env.reset()
    for bad in (-1, 3):
        with pytest.raises(ValueError, match="out of range"):
            env.step(bad)
    assert env.num_actions == 3 and env.action_meanings == ["NOOP", "LEFT", "RIGHT"]


def test_replay_colour_frames_restack_to_the_env_observations() -> None:
    stack, n = 4, 40
    env = pixel_env(ScriptedSource(terminate_at=7), color=True, frame_stack=stack, time_limit=5)
    buf = ReplayBuffer(n + 1, frame_stack=stack, frame_shape=(3, 64, 64))
    obs, _ = env.reset()
    seen = []
    for i in range(n):
        action = i % 3
        next_obs, reward, terminated, truncated, _ = env.step(action)
        seen.append(obs)
        buf.add(newest_frame(obs, 3), action, reward, terminated, truncated)
        obs = env.reset()[0] if terminated or truncated else next_obs
    restacked = buf.stacked_obs(np.arange(n))
    assert restacked.shape == (n, stack * 3, 64, 64)
    np.testing.assert_array_equal(restacked, np.stack(seen))
    batch = buf.sequences(np.array([1, 9, 30]), 4)
    assert batch.obs.shape == (3, 6, stack * 3, 64, 64)
    np.testing.assert_array_equal(batch.obs[1], np.stack(seen[8:14]))
    with pytest.raises(ValueError, match="frame must be"):
        buf.add(np.zeros((64, 64), np.uint8), 0, 0.0, False, False)
    cfg = load_config("smoke", ["env.game=crafter", "env.color=true"])
    assert cfg.frame_channels == 3 and ReplayBuffer.from_config(cfg, 0).frame_shape == (3, 64, 64)
    assert ReplayBuffer.from_config(load_config("smoke", ["env.game=crafter"]), 0).frame_shape == (64, 64)


# ============================================================================ MinAtar through make_env


def minatar_env(game: str = "breakout", *overrides: str, seed: int = 0, mode: str = "train") -> Any:
    cfg = load_config("atari100k", [f"env.game=minatar/{game}", *overrides])
    return make_env(cfg.env, mode, seed)  # type: ignore[arg-type]


MINATAR_ACTIONS = {
    "asterix": ["NOOP", "LEFT", "UP", "RIGHT", "DOWN"],
    "breakout": ["NOOP", "LEFT", "RIGHT"],
    "freeway": ["NOOP", "UP", "DOWN"],
    "seaquest": ["NOOP", "LEFT", "UP", "RIGHT", "DOWN", "FIRE"],
    "space_invaders": ["NOOP", "LEFT", "RIGHT", "FIRE"],
}


@pytest.mark.parametrize("game", MINATAR_GAMES)
def test_minatar_games_actions_and_pictures(game: str) -> None:
    env = minatar_env(game)
    assert env.action_meanings == MINATAR_ACTIONS[game] and env.num_actions == len(MINATAR_ACTIONS[game])
    obs, _ = env.reset()
    assert obs.shape == (4, 64, 64)
    state = env.source._env.state()
    for s in range(4):
        np.testing.assert_array_equal(obs[s], reference_picture(state, color=False))
    rng = np.random.default_rng(0)
    for _ in range(5):
        prev = obs
        obs, *_ = env.step(int(rng.integers(env.num_actions)))
        np.testing.assert_array_equal(obs[-1], reference_picture(env.source._env.state(), color=False))
        np.testing.assert_array_equal(obs[:-1], prev[1:])


def test_minatar_colour_observations() -> None:
    env = minatar_env("breakout", "env.color=true")
    obs, _ = env.reset()
    assert obs.shape == (12, 64, 64)
    obs, *_ = env.step(2)
    expected = reference_picture(env.source._env.state(), color=True).transpose(2, 0, 1)
    np.testing.assert_array_equal(obs[-3:], expected)
    np.testing.assert_array_equal(newest_frame(obs, 3), expected)


def play(env: Any, actions: list[int]) -> list[tuple[Any, ...]]:
    obs, _ = env.reset()
    out = [(obs,)]
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        out.append((obs, reward, terminated, truncated, info.get("game_score")))
        if terminated or truncated:
            obs, _ = env.reset()
            out.append((obs,))
    return out


def same(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> bool:
    if len(a) != len(b):
        return False
    return all(
        len(x) == len(y) and np.array_equal(x[0], y[0]) and x[1:] == y[1:] for x, y in zip(a, b, strict=True)
    )


def test_minatar_same_seed_same_trajectory() -> None:
    actions = [int(a) for a in np.random.default_rng(1).integers(0, 3, 300)]
    a = play(minatar_env(seed=7), actions)
    assert sum(len(x) == 1 for x in a) >= 2  # at least one episode ended and restarted
    assert same(a, play(minatar_env(seed=7), actions))
    assert same(a, play(minatar_env(seed=7, mode="eval"), actions))  # train and eval alike
    assert not same(a, play(minatar_env(seed=8), actions))


def test_minatar_state_round_trip_and_pickle() -> None:
    rng = np.random.default_rng(2)
    env = minatar_env(seed=3)
    env.reset()
    for _ in range(15):
        _, _, terminated, truncated, _ = env.step(int(rng.integers(3)))
        if terminated or truncated:
            env.reset()
    state = env.get_state()
    blob = pickle.dumps(state)
    actions = [int(a) for a in rng.integers(0, 3, 60)]

    def rest(e: Any) -> list[tuple[Any, ...]]:
        out = []
        for a in actions:
            obs, reward, terminated, truncated, info = e.step(a)
            out.append((obs, reward, terminated, truncated, info.get("game_score")))
            if terminated or truncated:
                obs, _ = e.reset()
                out.append((obs,))
        return out

    first = rest(env)
    assert pickle.dumps(state) == blob  # stepping did not touch the saved state (a snapshot)
    env.set_state(state)
    second = rest(env)
    other = minatar_env(seed=99)  # another seed: the generator travels in the state
    other.set_state(through_checkpoint(state))  # as a resume reads it
    third = rest(other)
    env.set_state(state)  # setting the same state twice: set_state copies too
    fourth = rest(env)
    assert same(first, second) and same(first, third) and same(first, fourth)


def noop_vs_right(sticky: float, steps: int = 6) -> tuple[list[np.ndarray], list[np.ndarray]]:
    runs = []
    for action in (0, 2):  # NOOP, RIGHT
        env = minatar_env("breakout", f"env.sticky_actions={sticky}", seed=5)
        assert env.source._env.sticky_action_prob == sticky
        obs, _ = env.reset()
        frames = [obs[-1]]
        for _ in range(steps):
            obs, _, terminated, truncated, _ = env.step(action)
            frames.append(obs[-1])
            if terminated or truncated:
                break
        runs.append(frames)
    return runs[0], runs[1]


def test_minatar_sticky_actions() -> None:
    assert minatar_env().source._env.sticky_action_prob == pytest.approx(0.1)  # the paper's default
    noop, right = noop_vs_right(0.0)
    assert np.array_equal(noop[0], right[0]) and not np.array_equal(noop[1], right[1])  # the paddle moved
    noop, right = noop_vs_right(1.0)
    # Always sticky: every chosen action is replaced by the previous one, 0 (NOOP) from the start.
    assert len(noop) == len(right) and all(np.array_equal(a, b) for a, b in zip(noop, right, strict=True))


def test_minatar_time_limit_truncates() -> None:
    env = minatar_env("freeway", "env.time_limit=10")
    env.reset()
    steps = run_episode(env, action=1)
    assert len(steps) == 10 and steps[-1][2] and not steps[-1][1] and steps[-1][3]["game_over"]


# ============================================================================ Crafter through make_env


def crafter_env(*overrides: str, seed: int = 0) -> Any:
    cfg = load_config("atari100k", ["env.game=crafter", *overrides])
    return make_env(cfg.env, "train", seed)


class StepSpy:
    """Wraps crafter's Env.step and keeps the last raw picture."""

    def __init__(self, step: Any) -> None:
        self._step = step
        self.picture: np.ndarray | None = None

    def __call__(self, action: int) -> Any:
        out = self._step(action)
        self.picture = out[0]
        return out


@pytest.mark.parametrize("color", [False, True])
def test_crafter_actions_and_pictures(color: bool) -> None:
    import crafter

    env = crafter_env(f"env.color={str(color).lower()}")
    assert env.num_actions == 17 and len(env.action_meanings) == 17
    assert env.action_meanings == [a.upper() for a in crafter.constants.actions]
    assert env.action_meanings[:3] == ["NOOP", "MOVE_LEFT", "MOVE_RIGHT"]
    obs, _ = env.reset()
    assert obs.shape == ((12 if color else 4), 64, 64)
    spy = StepSpy(env.source._env.step)
    env.source._env.step = spy
    for action in (1, 3, 5):
        obs, *_ = env.step(action)
        raw = spy.picture
        assert raw.shape == (64, 64, 3)
        if color:
            np.testing.assert_array_equal(obs[-3:], raw.transpose(2, 0, 1))
        else:
            np.testing.assert_array_equal(obs[-1], cv2.cvtColor(raw, cv2.COLOR_RGB2GRAY))


def fake_crafter_step(done: bool, discount: float, reward: float = 1.0) -> Any:
    def step(action: int) -> Any:
        info = {
            "discount": discount,
            "achievements": {name: int(name in ("collect_wood", "place_table")) for name in ACHIEVEMENTS},
        }
        info["achievements"]["place_table"] = 2
        return np.full((64, 64, 3), 9, np.uint8), reward, done, info

    return step


@pytest.mark.parametrize(
    ("done", "discount", "terminated", "truncated"),
    [(True, 0.0, True, False), (True, 1.0, False, True), (False, 1.0, False, False)],
)
def test_crafter_death_is_terminated_and_the_length_truncated(
    monkeypatch: pytest.MonkeyPatch, done: bool, discount: float, terminated: bool, truncated: bool
) -> None:
    env = crafter_env()
    env.reset()
    monkeypatch.setattr(env.source._env, "step", fake_crafter_step(done, discount))
    obs, reward, te, tr, info = env.step(0)
    assert (te, tr) == (terminated, truncated) and info["game_over"] == done
    assert reward == pytest.approx(math.tanh(1.0)) and info["raw_reward"] == 1.0
    assert info["achievements"] == ["collect_wood", "place_table"]
    assert (obs[-1] == 9).all()
    if done:
        assert info["game_score"] == 1.0


def test_crafter_real_episode_ends() -> None:
    env = crafter_env()
    env.reset()
    env.source._env._length = 5  # crafter's own length, normally 10,000
    steps = run_episode(env)
    assert len(steps) == 5 and steps[-1][2] and not steps[-1][1]
    assert isinstance(steps[-1][3]["achievements"], list)
    env.reset()
    env.source._env._player.health = 0  # dies on the next step
    _, _, terminated, truncated, info = env.step(0)
    assert terminated and not truncated and info["raw_reward"] < 0 and info["game_over"]
    # env.time_limit ends an episode before crafter does: the achievements are reported all the same.
    env = crafter_env("env.time_limit=3")
    env.reset()
    steps = run_episode(env)
    assert len(steps) == 3 and steps[-1][2] and steps[-1][3]["achievements"] == []


def test_crafter_seed_and_state_round_trip() -> None:
    first_obs = [crafter_env(seed=s).reset()[0] for s in (4, 4, 5)]
    np.testing.assert_array_equal(first_obs[0], first_obs[1])
    assert not np.array_equal(first_obs[0], first_obs[2])
    rng = np.random.default_rng(3)
    env = crafter_env(seed=4)
    env.reset()
    for _ in range(20):
        env.step(int(rng.integers(17)))
    state = env.get_state()
    actions = [int(a) for a in rng.integers(0, 17, 40)]

    def rest(e: Any) -> list[tuple[Any, ...]]:
        return [(o, r, te, tr, i["achievements"]) for o, r, te, tr, i in (e.step(a) for a in actions)]

    first = rest(env)
    env.set_state(state)
    second = rest(env)
    other = crafter_env(seed=11)
    other.set_state(through_checkpoint(state))  # as a resume reads it
    third = rest(other)
    env.set_state(state)  # twice: set_state copies, so the saved state was not stepped
    fourth = rest(env)
    assert same(first, second) and same(first, third) and same(first, fourth)


def test_crafter_runs_are_a_function_of_the_seed() -> None:
    # crafter's chunks are sets ordered by id(); its despawning indexes into that order, so runs of
    # one seed diverged within a few hundred steps (every time, unpatched). Objects allocated in
    # between move the addresses around.
    def run(junk: int) -> list[tuple[Any, ...]]:
        kept = [object() for _ in range(junk)]
        env = crafter_env(seed=5)
        env.reset()
        rng = np.random.default_rng(0)
        out = []
        for _ in range(600):
            obs, reward, terminated, truncated, _ = env.step(int(rng.integers(17)))
            out.append((int(obs.astype(np.int64).sum()), reward, terminated, truncated))
            if terminated or truncated:
                env.reset()
        del kept
        return out

    first = run(0)
    assert run(317) == first and run(1000) == first


def test_crafter_achievement_names_match_the_game() -> None:
    import crafter

    assert len(ACHIEVEMENTS) == 22 and set(ACHIEVEMENTS) == set(crafter.constants.achievements)


def test_success_rates_and_crafter_score_by_hand() -> None:
    episodes = [["collect_wood"], ["collect_wood", "place_table"]]
    rates = success_rates(episodes)
    assert set(rates) == set(ACHIEVEMENTS)
    assert rates["collect_wood"] == 100.0 and rates["place_table"] == 50.0
    assert all(v == 0.0 for k, v in rates.items() if k not in ("collect_wood", "place_table"))
    expected = math.exp((math.log(101.0) + math.log(51.0) + 20 * math.log(1.0)) / 22) - 1
    assert crafter_score(episodes) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.47476, abs=1e-5)  # ln 101 + ln 51 = 8.5469; /22; exp; -1
    # An achievement counted once per episode; all in every episode is 100; none is 0.
    assert success_rates([["eat_cow", "eat_cow"], []])["eat_cow"] == 50.0
    assert crafter_score([list(ACHIEVEMENTS)] * 3) == pytest.approx(100.0)
    assert crafter_score([[], []]) == 0.0
    three = [["wake_up"], ["wake_up", "eat_cow"], []]
    r = success_rates(three)
    assert r["wake_up"] == pytest.approx(200 / 3) and r["eat_cow"] == pytest.approx(100 / 3)
    by_hand = math.exp((math.log1p(200 / 3) + math.log1p(100 / 3)) / 22) - 1
    assert crafter_score(three) == pytest.approx(by_hand, rel=1e-12)
    with pytest.raises(ValueError):
        success_rates([])


def test_achievement_tally_equals_the_score_of_all_its_games() -> None:
    from twm.envs.crafter import AchievementTally

    rng = np.random.default_rng(0)
    games = [list(rng.choice(ACHIEVEMENTS, size=rng.integers(0, 5))) for _ in range(40)]
    tally = AchievementTally()
    for game in games:
        tally.add(game)
    assert tally.games == 40
    assert tally.success_rates() == pytest.approx(success_rates(games))
    assert tally.score() == pytest.approx(crafter_score(games), rel=1e-12)
    copy = AchievementTally()
    copy.load_state_dict(tally.state_dict())
    assert copy.score() == tally.score()
    with pytest.raises(ValueError):
        AchievementTally().score()


# ============================================================================ gym:<id>


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


def gym_env(env_id: str, *overrides: str, seed: int = 0) -> Any:
    cfg = load_config("atari100k", [f"env.game=gym:{env_id}", *overrides])
    return make_env(cfg.env, "train", seed)


def test_gym_pixel_env_is_resized_and_gets_its_kwargs() -> None:
    env = gym_env("TwmTestPixel-v0", "env.kwargs={size: 16}")
    game = env.source._env.unwrapped
    assert game.size == 16 and game.observation_space.shape == (16, 16, 3)
    assert env.num_actions == 3 and env.action_meanings == ["ACTION_0", "ACTION_1", "ACTION_2"]
    obs, _ = env.reset()
    assert obs.shape == (4, 64, 64)
    for _ in range(3):
        gray = cv2.cvtColor(game.current(), cv2.COLOR_RGB2GRAY)
        np.testing.assert_array_equal(obs[-1], np.kron(gray, np.ones((4, 4), np.uint8)))
        obs, reward, *_ = env.step(2)
        assert reward == pytest.approx(math.tanh(2.0))
    # A large picture is shrunk by averaging; colour frames are channels first.
    env = gym_env("TwmTestPixel-v0", "env.kwargs={size: 128}", "env.color=true")
    obs, _ = env.reset()
    assert obs.shape == (12, 64, 64)
    raw = env.source._env.unwrapped.current()
    expected = cv2.resize(raw, (64, 64), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)
    np.testing.assert_array_equal(obs[-3:], expected)
    # The environment's own action names, when it has as many as actions.
    assert gym_env("TwmTestPixel-v0", "env.kwargs={names: true}").action_meanings == ["STAY", "UP", "DOWN"]


def test_gym_discrete_start_offsets_the_actions() -> None:
    env = gym_env("TwmTestPixel-v0", "env.kwargs={start: 1}")
    assert env.num_actions == 3
    env.reset()
    rewards = [env.step(a)[4]["raw_reward"] for a in (0, 2, 1)]
    assert env.source._env.unwrapped.received == [1, 3, 2] and rewards == [1.0, 3.0, 2.0]
    with pytest.raises(ValueError):
        env.step(3)


def test_gym_episode_ends() -> None:
    env = gym_env("TwmTestPixel-v0", "env.kwargs={length: 5}")
    env.reset()
    steps = run_episode(env, action=1)
    assert len(steps) == 5 and steps[-1][1] and not steps[-1][2] and steps[-1][3]["game_score"] == 5.0
    env = gym_env("TwmTestPixelLimited-v0")  # gymnasium's TimeLimit: truncated
    env.reset()
    steps = run_episode(env)
    assert len(steps) == 4 and steps[-1][2] and not steps[-1][1]
    env = gym_env("TwmTestPixel-v0", "env.time_limit=3")
    env.reset()
    steps = run_episode(env)
    assert len(steps) == 3 and steps[-1][2] and not steps[-1][1]


def test_gym_seeded_once_at_the_first_reset() -> None:
    firsts = [gym_env("TwmTestPixel-v0", seed=s).reset()[0] for s in (1, 1, 2)]
    np.testing.assert_array_equal(firsts[0], firsts[1])
    assert not np.array_equal(firsts[0], firsts[2])
    env = gym_env("TwmTestPixel-v0", seed=1)
    a, _ = env.reset()
    b, _ = env.reset()  # the generator goes on: not the same start again
    np.testing.assert_array_equal(a, firsts[0])
    assert not np.array_equal(a, b)


def test_gym_boolean_observations() -> None:
    env = gym_env("TwmTestBool-v0")
    obs, _ = env.reset()
    state = env.source._env.unwrapped.state
    np.testing.assert_array_equal(obs[-1], reference_picture(state, color=False))
    env = gym_env("TwmTestBool-v0", "env.kwargs={shape: [8, 8, 2]}")
    obs, _ = env.reset()
    state = env.source._env.unwrapped.state
    picture = state.max(axis=-1).astype(np.uint8) * 255
    np.testing.assert_array_equal(obs[-1], np.kron(picture, np.ones((8, 8), np.uint8)))


def test_gym_state_round_trip() -> None:
    env = gym_env("TwmTestPixel-v0", "env.kwargs={length: 1000}", seed=3)
    env.reset()
    for a in (0, 1, 2):
        env.step(a)
    state = through_checkpoint(env.get_state())  # as a resume reads it
    actions = [1, 0, 2, 2, 1]
    first = [env.step(a) for a in actions]
    env.set_state(state)
    second = [env.step(a) for a in actions]
    assert env.source._env.unwrapped.received == [0, 1, 2, *actions]  # restored, then stepped again
    env.set_state(state)  # twice: set_state copies, so the saved state was not stepped
    third = [env.step(a) for a in actions]
    for x, y, z in zip(first, second, third, strict=True):
        for w in (y, z):
            np.testing.assert_array_equal(x[0], w[0])
            assert x[1:] == w[1:]


@pytest.mark.parametrize(
    ("env_id", "reason"), [("TwmTestLocked-v0", "pickle"), ("TwmTestForeignGlobal-v0", "math.sqrt")]
)
def test_gym_unsavable_env_restarts_with_a_warning(env_id: str, reason: str) -> None:
    env = gym_env(env_id)
    env.reset()
    env.step(1)
    with pytest.warns(UserWarning, match="cannot be saved") as said:
        state = env.get_state()  # found when the checkpoint is written, not when it is resumed
    assert reason in str(said[0].message)
    assert state["source"]["env"] is None
    state = through_checkpoint(state)  # a checkpoint can still hold it
    with pytest.warns(UserWarning, match="fresh episode"):
        env.set_state(state)
    env.step(0)  # the episode can go on


@pytest.mark.parametrize(
    ("env_id", "words"),
    [
        ("TwmTestVectorObs-v0", ("images",)),
        ("TwmTestContinuous-v0", ("Discrete",)),
        ("TwmDoesNotExist-v0", ("TwmDoesNotExist-v0",)),
    ],
)
def test_gym_unsuitable_envs_are_one_line_env_errors(env_id: str, words: tuple[str, ...]) -> None:
    cfg = load_config("atari100k", [f"env.game=gym:{env_id}"])
    with pytest.raises(EnvError) as info:
        check_env(cfg.env)
    message = str(info.value)
    assert "\n" not in message and f"gym:{env_id}" in message
    for word in words:
        assert word in message


def test_gym_bad_kwargs_are_a_one_line_env_error() -> None:
    cfg = load_config("atari100k", ["env.game=gym:TwmTestPixel-v0", "env.kwargs={colour: 3}"])
    with pytest.raises(EnvError) as info:
        check_env(cfg.env)
    assert "\n" not in str(info.value) and "env.kwargs" in str(info.value)


# ============================================================================ names and config


def test_game_names_resolve() -> None:
    assert resolve_game("MinAtar/SpaceInvaders") == "minatar/space_invaders"
    assert resolve_game("minatar/space-invaders") == "minatar/space_invaders"
    assert resolve_game("MINATAR/BREAKOUT") == "minatar/breakout"
    assert resolve_game("Crafter") == "crafter"
    assert resolve_game("gym:TwmTestPixel-v0") == "gym:TwmTestPixel-v0"  # ids are case-sensitive
    families = {
        "Pong": "atari",
        "catch": "catch",
        "minatar/seaquest": "minatar",
        "crafter": "crafter",
        "gym:Anything-v0": "gym",
    }
    for name, family in families.items():
        assert game_family(name) == family
    for bad in ("gym:", "gym:  "):
        with pytest.raises(UnknownGameError, match="environment id"):
            resolve_game(bad)


@pytest.mark.parametrize("name", ["minatar/pong", "MinAtar/Tetris"])
def test_unknown_minatar_game_lists_the_five(name: str) -> None:
    with pytest.raises(UnknownGameError) as info:
        resolve_game(name)
    message = str(info.value)
    assert "MinAtar" in message and name in message
    for game in MINATAR_GAMES:
        assert f"minatar/{game}" in message
    with pytest.raises(ConfigError, match="minatar/space_invaders"):
        load_config("smoke", [f"env.game={name}"])


def test_random_normalized_score(monkeypatch: pytest.MonkeyPatch) -> None:
    table = {"minatar/breakout": {"mean": 0.5}, "minatar/freeway": {"mean": 0.0}, "crafter": {"mean": 2.0}}
    monkeypatch.setattr(games_mod, "measured_random_scores", lambda: table)
    assert random_normalized_score("minatar/breakout", 3.0) == pytest.approx(6.0)
    assert random_normalized_score("crafter", 1.0) == pytest.approx(0.5)
    assert random_normalized_score("minatar/freeway", 5.0) is None  # random scores 0: no ratio
    assert random_normalized_score("minatar/asterix", 5.0) is None  # not measured
    assert random_normalized_score("Pong", 5.0) is None  # Atari: human-normalized instead
    assert random_normalized_score("gym:TwmTestPixel-v0", 5.0) is None


def test_config_errors_of_the_families() -> None:
    with pytest.raises(ConfigError, match="gym:<id> games only"):
        load_config("smoke", ["env.game=minatar/breakout", "env.kwargs={size: 16}"])
    with pytest.raises(ConfigError, match="gym:<id> games only"):
        load_config("smoke", ["env.game=crafter", "env.kwargs={a: 1}"])
    for game in ("Pong", "catch"):
        with pytest.raises(ConfigError, match="grayscale only"):
            load_config("smoke", [f"env.game={game}", "env.color=true"])
    cfg = load_config("smoke", ["env.game=gym:TwmTestPixel-v0", "env.kwargs={size: 16}", "env.color=true"])
    assert cfg.env.kwargs == {"size": 16} and cfg.frame_channels == 3
    assert load_config("smoke", ["env.game=MinAtar/SpaceInvaders"]).env.game == "minatar/space_invaders"
    for bad in ("env.sticky_actions=1.5", "env.action_repeat=0"):
        with pytest.raises(ConfigError):
            load_config("smoke", ["env.game=minatar/breakout", bad])


# ============================================================================ command line errors


def test_cli_unknown_minatar_game(tmp_path: Path) -> None:
    out = run_twm("config", "--game", "minatar/pong")
    assert one_line_error(out), out.stderr
    assert "minatar/breakout" in out.stderr and "minatar/space_invaders" in out.stderr


def test_cli_unknown_gym_id_makes_no_run_folder(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    out = run_twm("train", "--game", "gym:TwmDoesNotExist-v0", "--preset", "smoke", "--run-dir", str(run_dir))
    assert one_line_error(out), out.stderr
    assert "TwmDoesNotExist-v0" in out.stderr and not run_dir.exists()


@pytest.mark.parametrize(("module", "game"), [("minatar", "minatar/breakout"), ("crafter", "crafter")])
def test_cli_missing_extra_is_one_line(tmp_path: Path, module: str, game: str) -> None:
    run_dir = tmp_path / "run"
    code = (
        f"import sys; sys.modules[{module!r}] = None; from twm.cli import main; "
        f"sys.exit(main(['train', '--game', {game!r}, '--preset', 'smoke', '--run-dir', {str(run_dir)!r}]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=ENV)
    assert one_line_error(out), out.stderr
    assert "twm[envs]" in out.stderr and module in out.stderr and not run_dir.exists()


# ============================================================================ smoke training runs


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("family_runs")
    runs = {
        "minatar/breakout": ("minatar", []),
        "crafter": ("crafter", ["--set", "env.color=true"]),
    }
    result = {}
    for game, (name, extra) in runs.items():
        run_dir = root / name
        out = run_twm(
            "train", "--game", game, "--preset", "smoke", *extra, "--run-dir", str(run_dir), "--no-progress"
        )
        assert out.returncode == 0, out.stderr
        assert "final mean score" in out.stdout
        result[game] = run_dir
    return result


def check_run_folder(run_dir: Path, game: str) -> dict[str, Any]:
    for name in ("config.yaml", "metrics.jsonl", "checkpoints/final.pt", "eval/final.json"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert list((run_dir / "images").glob("recon_*.png")) and list((run_dir / "images").glob("dream_*.png"))
    final = json.loads((run_dir / "eval" / "final.json").read_text())
    cfg = load_config("smoke", [f"env.game={game}"])
    assert final["game"] == game and final["interactions"] == cfg.train.total_steps
    assert len(final["scores"]) == final["episodes"] == cfg.train.final_eval_episodes
    assert final["hns"] is None  # no human scores outside Atari
    return final


@pytest.mark.slow
def test_minatar_smoke_run(smoke_runs: dict[str, Path]) -> None:
    run_dir = smoke_runs["minatar/breakout"]
    final = check_run_folder(run_dir, "minatar/breakout")
    assert "crafter" not in final
    out = run_twm("eval", str(run_dir), "--episodes", "2")
    assert out.returncode == 0, out.stderr
    mean = np.mean(final["scores"])
    assert out.stdout.startswith(f"minatar/breakout: mean {mean:.2f} ") and "(2 episodes" in out.stdout


@pytest.mark.slow
def test_crafter_colour_smoke_run(smoke_runs: dict[str, Path]) -> None:
    run_dir = smoke_runs["crafter"]
    final = check_run_folder(run_dir, "crafter")
    crafter = final["crafter"]
    assert set(crafter) == {"score", "success_rates", "achievements", "train"}
    assert len(crafter["achievements"]) == final["episodes"]
    assert all(isinstance(a, list) for a in crafter["achievements"])
    assert crafter["success_rates"] == success_rates(crafter["achievements"])
    assert crafter["score"] == pytest.approx(crafter_score(crafter["achievements"]))
    cfg = yaml_config(run_dir)
    assert cfg["env"]["color"] is True
    # Training episodes end at env.time_limit (200 in the smoke preset) before crafter's 10,000
    # steps: their achievements are logged all the same.
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("crafter/score" in r for r in lines)
    # The Crafter paper's score: over every training game, i.e. every game logged in crafter/unlocked.
    games = [g for r in lines for g in r.get("crafter/unlocked", [])]
    assert crafter["train"]["games"] == len(games) > 0
    assert crafter["train"]["score"] == pytest.approx(crafter_score(games))
    assert crafter["train"]["success_rates"] == pytest.approx(success_rates(games))
    assert [r["crafter/train_score"] for r in lines if "crafter/train_score" in r][-1] == pytest.approx(
        crafter["train"]["score"]
    )
    assert [r["eval/crafter_score"] for r in lines if "eval/mean_score" in r][-1] == pytest.approx(
        crafter["score"]
    )
    out = run_twm("eval", str(run_dir), "--episodes", "2", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["scores"] == final["scores"] and result["achievements"] == crafter["achievements"]


def yaml_config(run_dir: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((run_dir / "config.yaml").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("game", ["minatar/breakout", "crafter"])
def test_dream_eval_and_report_on_family_runs(smoke_runs: dict[str, Path], game: str) -> None:
    from PIL import Image

    run_dir = smoke_runs[game]
    gif = run_dir / "d.gif"
    out = run_twm("dream", str(run_dir), "--out", str(gif), "--horizon", "3", "--starts", "2")
    assert out.returncode == 0, out.stderr
    with Image.open(gif) as im:
        assert im.n_frames == 4 and im.size[0] == 2 * 64 * 3
    out = run_twm("report", str(run_dir), "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    entry = report["games"][game]
    final = json.loads((run_dir / "eval" / "final.json").read_text())
    assert entry["runs"] == 1 and entry["mean_score"] == pytest.approx(final["mean"])
    if game == "crafter":
        assert entry["crafter_scores"] == [pytest.approx(final["crafter"]["score"])]
        assert entry["crafter_train_scores"] == [pytest.approx(final["crafter"]["train"]["score"])]
    else:
        assert entry["crafter_scores"] is None


@pytest.mark.slow
def test_gym_smoke_run_in_process(tmp_path: Path) -> None:
    from twm import cli

    run_dir = tmp_path / "gym"
    code = cli.main(
        [
            "train",
            "--game",
            "gym:TwmTestPixel-v0",
            "--preset",
            "smoke",
            "--set",
            "env.kwargs={size: 16, length: 30}",
            "--run-dir",
            str(run_dir),
            "--no-progress",
        ]
    )
    assert code == 0
    final = check_run_folder(run_dir, "gym:TwmTestPixel-v0")
    # Reward = the action (0, 1, 2), 30 steps a game: every score is a whole number in [0, 60].
    assert all(float(s).is_integer() and 0 <= s <= 60 for s in final["scores"])
    assert yaml_config(run_dir)["env"]["kwargs"] == {"size": 16, "length": 30}
