"""The built-in ``catch`` game: format, determinism, reference returns, state round trip, time limit."""

from __future__ import annotations

import numpy as np
import pytest

from twm.config import EnvConfig
from twm.envs import make_env
from twm.envs.catch import FALL_STEPS, CatchEnv


def make(
    seed: int = 0,
    *,
    time_limit: int = 27_000,
    reward_transform: str = "tanh",
    num_balls: int = 10,
    drift: bool = False,
) -> CatchEnv:
    cfg = EnvConfig(game="catch", time_limit=time_limit, reward_transform=reward_transform)  # type: ignore[arg-type]
    return CatchEnv(cfg, mode="train", seed=seed, num_balls=num_balls, drift=drift)


def rollout(env: CatchEnv, actions: np.ndarray) -> tuple[list[np.ndarray], list[float], list[bool]]:
    """Observations (reset included), rewards and done flags of a run through several episodes."""
    obs, _ = env.reset()
    observations, rewards, dones = [obs], [], []
    for a in actions:
        obs, reward, terminated, truncated, _ = env.step(int(a))
        rewards.append(reward)
        dones.append(terminated or truncated)
        if terminated or truncated:
            obs, _ = env.reset()
        observations.append(obs)
    return observations, rewards, dones


def optimal_action(env: CatchEnv) -> int:
    """Walk towards the landing column (read from the env's state: a scripted, not a learned, policy)."""
    target, paddle = env.landing_column(), env.get_state()["paddle"]
    return 0 if target == paddle else (1 if target < paddle else 2)


def test_observation_format_and_interface() -> None:
    env = make()
    assert env.num_actions == 3 and env.action_meanings == ["NOOP", "LEFT", "RIGHT"]
    obs, info = env.reset()
    assert obs.shape == (4, 64, 64) and obs.dtype == np.uint8
    assert info == {"lives": 1, "real_reset": True, "noops": 0}
    # At the start every slot holds the first frame; it shows a ball, a paddle and 10 counter dashes.
    assert all(np.array_equal(obs[k], obs[0]) for k in range(4))
    assert (obs[0] == 255).sum() == 12 * 7 + 16 * 6
    assert (obs[0] == 0).sum() == 10 * 2 * 4
    assert (obs[0] == 128).sum() == 64 * 64 - 12 * 7 - 16 * 6 - 10 * 2 * 4  # the mid-grey background
    # make_env dispatches the built-in game to this class.
    assert isinstance(make_env(EnvConfig(game="catch"), "eval", 0), CatchEnv)
    _, _, _, _, info = env.step(0)
    assert info == {"raw_reward": 0.0, "lives": 1, "game_over": False}  # game_score only at game over


def test_frame_stack_shifts_newest_last() -> None:
    env = make(seed=3)
    obs0, _ = env.reset()
    obs1, *_ = env.step(0)
    obs2, *_ = env.step(2)
    # Each step drops the oldest frame and appends the new one at the end.
    np.testing.assert_array_equal(obs1[:3], obs0[1:])
    np.testing.assert_array_equal(obs2[:3], obs1[1:])
    np.testing.assert_array_equal(obs2[:2], np.stack([obs0[0], obs0[0]]))
    assert not np.array_equal(obs1[3], obs0[3])  # the ball fell one row
    # The ball moves down by one 8-px cell per step.
    ys = [np.nonzero((o[-1][2:58] == 255).any(axis=1))[0].min() for o in (obs0, obs1, obs2)]
    assert np.diff(ys).tolist() == [8, 8]


def test_same_seed_same_episodes_different_seed_differs() -> None:
    actions = np.random.default_rng(0).integers(3, size=300)
    a_obs, a_rew, a_done = rollout(make(seed=7), actions)
    b_obs, b_rew, b_done = rollout(make(seed=7), actions)
    c_obs, _, _ = rollout(make(seed=8), actions)
    assert a_rew == b_rew and a_done == b_done
    assert all(np.array_equal(x, y) for x, y in zip(a_obs, b_obs, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a_obs, c_obs, strict=True))
    # reset(seed) re-seeds: the same seed replays the same first episode.
    env = make(seed=8)
    env.reset(seed=7)
    again = [env.step(int(a))[0] for a in actions[:30]]
    assert all(np.array_equal(x, y) for x, y in zip(again, a_obs[1:31], strict=True))


@pytest.mark.parametrize("drift", [False, True])
def test_scripted_optimal_policy_catches_every_ball(drift: bool) -> None:
    env = make(seed=1, drift=drift, reward_transform="none")
    for _ in range(30):
        env.reset()
        steps, done, info = 0, False, {}
        while not done:
            _, reward, terminated, truncated, info = env.step(optimal_action(env))
            steps += 1
            assert reward in (0.0, 1.0)
            done = terminated or truncated
        assert terminated and not truncated and info["game_over"]
        assert steps == env.episode_length == 70
        assert info["game_score"] == env.optimal_return == 10.0


@pytest.mark.parametrize("drift", [False, True])
def test_random_policy_return_matches_the_exact_expectation(drift: bool) -> None:
    env = make(seed=2, drift=drift)
    action_rng = np.random.default_rng(5)
    scores = []
    for _ in range(500):
        env.reset()
        done, info = False, {}
        while not done:
            _, _, terminated, truncated, info = env.step(int(action_rng.integers(3)))
            done = terminated or truncated
        scores.append(info["game_score"])
    assert env.expected_random_return == -5.0
    # The standard error of the mean of 500 episodes is about 0.12; 0.4 is a 3-sigma band.
    assert abs(np.mean(scores) - env.expected_random_return) < 0.4
    assert np.mean(scores) < env.optimal_return - 12


def test_rewards_are_squashed_and_raw_reward_is_reported() -> None:
    env = make(seed=4)
    env.reset()
    seen = set()
    for _ in range(5 * FALL_STEPS):
        _, reward, _, _, info = env.step(0)
        seen.add(info["raw_reward"])
        assert reward == pytest.approx(np.tanh(info["raw_reward"]), abs=0)
    assert seen <= {0.0, 1.0, -1.0} and len(seen) > 1
    # Rewards arrive exactly at landings: every 7th step.
    env2 = make(seed=4, reward_transform="none")
    env2.reset()
    raw = [env2.step(0)[1] for _ in range(5 * FALL_STEPS)]
    assert [i for i, r in enumerate(raw) if r != 0] == [i for i in range(5 * FALL_STEPS) if i % 7 == 6]


def test_state_round_trip_resumes_exactly() -> None:
    env = make(seed=11, drift=True)
    env.reset()
    for a in [1, 2, 0, 2, 2]:
        env.step(a)
    state = env.get_state()
    actions = np.random.default_rng(1).integers(3, size=200)
    first = rollout_from_here(env, actions)
    # Restore into a fresh env built with another seed: the future must be identical.
    other = make(seed=99, drift=True)
    other.set_state(state)
    second = rollout_from_here(other, actions)
    assert first[1] == second[1]
    assert all(np.array_equal(x, y) for x, y in zip(first[0], second[0], strict=True))
    # get_state is a copy: stepping does not change a saved state.
    assert state["steps"] == 5
    with pytest.raises(ValueError, match="num_balls"):
        make(num_balls=5).set_state(state)


def rollout_from_here(env: CatchEnv, actions: np.ndarray) -> tuple[list[np.ndarray], list[float]]:
    observations, rewards = [], []
    for a in actions:
        obs, reward, terminated, truncated, _ = env.step(int(a))
        if terminated or truncated:
            obs, _ = env.reset()
        observations.append(obs)
        rewards.append(reward)
    return observations, rewards


def test_time_limit_truncates() -> None:
    env = make(seed=0, time_limit=12, reward_transform="none")
    env.reset()
    for t in range(1, 13):
        _, _, terminated, truncated, info = env.step(0)
        assert not terminated
        assert truncated == (t == 12) == info["game_over"]
    # The final score is the raw return so far (one landing at step 7).
    assert info["game_score"] in (-1.0, 1.0)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    env.reset()  # a new episode starts normally
    assert not env.step(0)[3]


def test_invalid_action_raises() -> None:
    env = make()
    env.reset()
    with pytest.raises(ValueError, match="action"):
        env.step(3)
