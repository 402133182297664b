"""gym:<id> pixel games through the PixelEnv adapter (twm.envs.gym_env): resizing, kwargs, action
offsets, episode ends, seeding, boolean pictures, state round trip and one-line errors for the
unsuitable ones. (Wrappers, MiniGrid and ALE ids: test_gym_env.py.)
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import pytest

from families import reference_picture, run_episode, through_checkpoint
from twm.config_files import load_config
from twm.envs import EnvError, check_env, make_env


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
