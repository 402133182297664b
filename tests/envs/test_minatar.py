"""MinAtar through the PixelEnv adapter: its pictures pixel for pixel against references built with
explicit loops, and the games through make_env (actions, colour, seeds, state round trip, sticky
actions, time limit).
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest

from families import reference_picture, run_episode, same, through_checkpoint
from twm.config_files import load_config
from twm.envs import make_env, newest_frame
from twm.envs.minatar import COLORS, GRAY_LEVELS, grid_frame, render_state
from twm.games import MINATAR_CHANNELS, MINATAR_GAMES

# ============================================================================ MinAtar pictures



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


def play(env: Any, actions: list[int], reset: bool = True) -> list[tuple[Any, ...]]:
    """Each step's outcome, and the observation after each reset; from a reset, or from where the env is."""
    out: list[tuple[Any, ...]] = []
    if reset:
        obs, _ = env.reset()
        out.append((obs,))
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        out.append((obs, reward, terminated, truncated, info.get("game_score")))
        if terminated or truncated:
            obs, _ = env.reset()
            out.append((obs,))
    return out



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
        return play(e, actions, reset=False)

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


# --------------------------------------------------------------------------------------- grids


def test_grid_frame_puts_each_channel_of_the_state_in_its_own_plane() -> None:
    state = np.zeros((10, 10, 4), dtype=bool)
    state[3, 7, 2] = True  # row 3, column 7, channel 2
    state[0, 0, 0] = state[9, 9, 3] = True
    frame = grid_frame(state)
    assert frame.shape == (4, 10, 10) and frame.dtype == np.uint8
    expected = np.zeros((4, 10, 10), dtype=np.uint8)
    expected[2, 3, 7] = expected[0, 0, 0] = expected[3, 9, 9] = 255
    np.testing.assert_array_equal(frame, expected)
    with pytest.raises(ValueError, match="10, 10, C"):
        grid_frame(np.zeros((8, 10, 4), dtype=bool))


@pytest.mark.parametrize("game", MINATAR_GAMES)
def test_grid_observations_are_the_game_state(game: str) -> None:
    env = minatar_env(game, "env.observation=grid")
    channels = MINATAR_CHANNELS[game]
    obs, _ = env.reset()
    assert obs.shape == (4 * channels, 10, 10) and obs.dtype == np.uint8
    state = env.source._env.state()  # (10, 10, C) bool
    for s in range(4):  # the first frame fills the stack
        np.testing.assert_array_equal(obs[s * channels : (s + 1) * channels], np.moveaxis(state, -1, 0) * 255)
    rng = np.random.default_rng(0)
    for _ in range(5):
        prev = obs
        obs, *_ = env.step(int(rng.integers(env.num_actions)))
        expected = np.moveaxis(env.source._env.state(), -1, 0).astype(np.uint8) * 255
        np.testing.assert_array_equal(newest_frame(obs, channels), expected)
        np.testing.assert_array_equal(obs[:-channels], prev[channels:])
