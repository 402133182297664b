"""Crafter through the PixelEnv adapter: actions, pictures, episode ends, seeds, state round trip and
the achievement score.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import pytest

from families import run_episode, same, through_checkpoint
from twm.config_files import load_config
from twm.envs import make_env
from twm.envs.crafter import ACHIEVEMENTS, crafter_score, success_rates

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
