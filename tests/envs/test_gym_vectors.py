"""Gymnasium games read as vectors of numbers (``env.observation=vector``): the frames are the
environment's own observations (a Box flattened, a Discrete as its one-hot), the size comes from the
environment, and every combination that cannot work is a one-line error.

Resume (tests/training/test_resume.py), the captured update (tests/test_captured.py) and the FLOP
count (tests/perf/test_flops.py) of vector runs are tested with their kind.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import yaml
from gymnasium import spaces

from twm.config import ConfigError
from twm.config_files import load_config
from twm.envs import EnvError, check_env, make_env, newest_frame

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
VECTOR = "env.observation=vector"


def vector_cfg(game: str, *overrides: str) -> Any:
    cfg = load_config("smoke", [f"env.game={game}", VECTOR, *overrides])
    check_env(cfg.env)
    return cfg


class GridWorldGame(gym.Env):
    """Observations a (2, 3) Box of int16 (a tiny board) and, with ``discrete``, a Discrete(5, start=2)."""

    def __init__(self, discrete: bool = False) -> None:
        self.discrete = discrete
        if discrete:
            self.observation_space = spaces.Discrete(5, start=2)
        else:
            self.observation_space = spaces.Box(-100, 100, shape=(2, 3), dtype=np.int16)
        self.action_space = spaces.Discrete(2)
        self.t = 0

    def _obs(self) -> Any:
        if self.discrete:
            return 2 + self.t % 5
        return (np.arange(6, dtype=np.int16).reshape(2, 3) - 3) * (self.t + 1)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action: int) -> tuple[Any, float, bool, bool, dict]:
        self.t += 1
        return self._obs(), float(action), self.t >= 7, False, {}


gym.register("TwmTestBoard-v0", entry_point=GridWorldGame)
gym.register("TwmTestCells-v0", entry_point=GridWorldGame, kwargs={"discrete": True})


def test_cartpole_frames_are_its_own_observations_stacked() -> None:
    cfg = vector_cfg("gym:CartPole-v1")
    assert cfg.env.vector_size == 4 and cfg.frame_channels == 4 and cfg.frame_size == 1
    env = make_env(cfg.env, "train", seed=3)
    reference = gym.make("CartPole-v1")
    obs, _ = env.reset()
    # The source seeds its env once from the run's seed; take the same start.
    ref_obs, _ = reference.reset(seed=int(np.random.SeedSequence(3).generate_state(1)[0]) & 0x7FFFFFFF)
    stack = cfg.env.frame_stack
    assert obs.shape == (4 * stack, 1, 1) and obs.dtype == np.float32
    # At a reset every slot of the stack holds the first observation.
    np.testing.assert_array_equal(obs[:, 0, 0], np.tile(ref_obs, stack))
    history = [ref_obs]
    for t in range(6):
        obs, reward, terminated, truncated, _ = env.step(t % 2)
        ref_obs, ref_reward, *_ = reference.step(t % 2)
        history.append(ref_obs)
        assert reward == pytest.approx(np.tanh(ref_reward))
        np.testing.assert_array_equal(newest_frame(obs, 4)[:, 0, 0], ref_obs)
    newest = np.concatenate([history[max(0, i)] for i in range(len(history) - stack, len(history))])
    np.testing.assert_array_equal(obs[:, 0, 0], newest)  # oldest first
    env.close()


def test_a_box_of_any_shape_is_flattened_and_a_discrete_is_its_one_hot() -> None:
    cfg = vector_cfg("gym:TwmTestBoard-v0", "env.frame_stack=1")
    assert cfg.env.vector_size == 6
    env = make_env(cfg.env, "eval", seed=0)
    obs, _ = env.reset()
    np.testing.assert_array_equal(obs[:, 0, 0], [-3, -2, -1, 0, 1, 2])
    obs, *_ = env.step(1)
    np.testing.assert_array_equal(obs[:, 0, 0], [-6, -4, -2, 0, 2, 4])

    cfg = vector_cfg("gym:TwmTestCells-v0", "env.frame_stack=1")
    assert cfg.env.vector_size == 5
    env = make_env(cfg.env, "eval", seed=0)
    seen = [env.reset()[0][:, 0, 0]] + [env.step(0)[0][:, 0, 0] for _ in range(5)]
    # Values 2, 3, 4, 5, 6, 2 (Discrete starting at 2) -> one-hot positions 0..4, 0.
    np.testing.assert_array_equal(np.stack(seen), np.eye(5, dtype=np.float32)[[0, 1, 2, 3, 4, 0]])


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["env.game=minatar/breakout", VECTOR], "for gym:<id> games only"),
        (["env.game=gym:CartPole-v1", VECTOR, "env.color=true"], "env.color is about pictures"),
        (["env.game=gym:CartPole-v1", VECTOR, "env.pixels=render"], "env.pixels=render is about pictures"),
        (["env.game=gym:CartPole-v1", "env.vector_size=4"], "for env.observation=vector only"),
    ],
)
def test_bad_vector_settings_are_config_errors(overrides: list[str], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        load_config("smoke", overrides)


def test_the_size_is_unknown_until_the_environment_is_read() -> None:
    cfg = load_config("smoke", ["env.game=gym:CartPole-v1", VECTOR])
    with pytest.raises(ConfigError, match="env.vector_size is not known yet"):
        _ = cfg.frame_channels
    assert check_env(cfg.env) == 2
    assert cfg.env.vector_size == 4


def test_a_wrong_vector_size_and_a_dict_without_key_are_env_errors() -> None:
    cfg = load_config("smoke", ["env.game=gym:CartPole-v1", VECTOR, "env.vector_size=5"])
    with pytest.raises(EnvError, match="env.vector_size=5, but gym:CartPole-v1 observations hold 4 numbers"):
        check_env(cfg.env)
    cfg = load_config("smoke", ["env.game=gym:MiniGrid-Empty-8x8-v0", VECTOR])
    pytest.importorskip("minigrid")
    with pytest.raises(EnvError, match="set env.obs_key"):
        check_env(cfg.env)
    cfg = load_config("smoke", ["env.game=gym:MiniGrid-Empty-8x8-v0", VECTOR, "env.obs_key=mission"])
    with pytest.raises(EnvError, match="needs a Box of numbers or a Discrete"):
        check_env(cfg.env)


class InfiniteGame(GridWorldGame):
    """The board, with an infinite number after the first step."""

    def step(self, action: int) -> tuple[Any, float, bool, bool, dict]:
        obs, *rest = super().step(action)
        return obs.astype(np.float32) * np.inf, *rest


gym.register("TwmTestInfinite-v0", entry_point=InfiniteGame)


def test_an_observation_that_is_not_finite_is_an_env_error() -> None:
    cfg = vector_cfg("gym:TwmTestInfinite-v0")
    env = make_env(cfg.env, "train", seed=0)
    env.reset()
    with pytest.raises(EnvError, match="gave an observation that is not finite"):
        env.step(0)


def run_twm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "twm.cli", *args], capture_output=True, text=True, timeout=300, env=ENV
    )


def test_numbers_without_the_switch_name_it_in_one_line(tmp_path: Path) -> None:
    out = run_twm("train", "--game", "gym:CartPole-v1", "--preset", "smoke", "--run-dir", str(tmp_path / "r"))
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "--set env.observation=vector reads them as a vector of numbers" in out.stderr
    assert not (tmp_path / "r").exists()


def test_cli_run_on_cartpole_writes_the_size_and_evaluates(tmp_path: Path) -> None:
    run = tmp_path / "cartpole"
    out = run_twm("train", "--game", "gym:CartPole-v1", "--preset", "smoke", "--set", VECTOR, "--run-dir", str(run),
                  "--no-progress")  # fmt: skip
    assert out.returncode == 0, out.stderr
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["env"]["observation"] == "vector" and saved["env"]["vector_size"] == 4
    assert list((run / "images").glob("*.png"))  # the eval images draw vectors as bars
    out = run_twm("eval", str(run), "--episodes", "2")
    assert out.returncode == 0, out.stderr
    out = run_twm("dream", str(run), "--out", str(tmp_path / "dream.gif"), "--horizon", "5")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "dream.gif").stat().st_size > 0
