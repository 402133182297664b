"""Replay buffer against real catch trajectories and brute-force references."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from twm.config import Config, EnvConfig
from twm.config_files import load_config
from twm.envs.catch import CatchEnv
from twm.replay import ReplayBuffer, ReplayFullError, SequenceBatch


class Trajectory(NamedTuple):
    obs: np.ndarray  # (N, stack, 64, 64): the observation in which each action was taken
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray


def record(steps: int, seed: int = 0, frame_stack: int = 4) -> Trajectory:
    """Random play in catch (21-step episodes) where every other episode is truncated after 9 steps."""
    cfg = EnvConfig(game="catch", frame_stack=frame_stack)
    env = CatchEnv(cfg, mode="train", seed=seed, num_balls=3, drift=True)
    rng = np.random.default_rng(seed + 100)
    obs, _ = env.reset()
    rows: list[tuple[np.ndarray, int, float, bool, bool]] = []
    for _ in range(steps):
        action = int(rng.integers(3))
        next_obs, reward, terminated, truncated, _ = env.step(action)
        rows.append((obs, action, reward, terminated, truncated))
        if terminated or truncated:
            env.time_limit = 9 if env.time_limit > 9 else 1000  # alternate the two kinds of episode end
            next_obs, _ = env.reset()
        obs = next_obs
    o, a, r, te, tr = zip(*rows, strict=True)
    return Trajectory(np.stack(o), np.array(a), np.array(r, np.float32), np.array(te), np.array(tr))


def fill(traj: Trajectory, capacity: int | None = None, seed: int = 0, **kwargs: object) -> ReplayBuffer:
    frame_stack = traj.obs.shape[1]
    buf = ReplayBuffer(capacity or len(traj.actions), frame_stack=frame_stack, seed=seed, **kwargs)  # type: ignore[arg-type]
    for o, a, r, te, tr in zip(*traj, strict=True):
        buf.add(o[-1], int(a), float(r), bool(te), bool(tr))
    return buf


def assert_batch_matches(batch: SequenceBatch, traj: Trajectory, seq_len: int) -> None:
    """Each sequence equals the brute-force slice of the recorded trajectory."""
    assert batch.obs.shape == (len(batch.starts), seq_len + 2, *traj.obs.shape[1:])
    for b, start in enumerate(batch.starts):
        steps = slice(start - 1, start + seq_len)
        np.testing.assert_array_equal(batch.obs[b], traj.obs[start - 1 : start + seq_len + 1])
        np.testing.assert_array_equal(batch.actions[b], traj.actions[steps])
        np.testing.assert_array_equal(batch.rewards[b], traj.rewards[steps])
        np.testing.assert_array_equal(batch.terminated[b], traj.terminated[steps])
        np.testing.assert_array_equal(batch.truncated[b], traj.truncated[steps])


@pytest.mark.parametrize("frame_stack", [4, 2])
def test_stacks_equal_the_envs_observations(frame_stack: int) -> None:
    traj = record(300, seed=1, frame_stack=frame_stack)
    assert traj.terminated.sum() >= 3 and traj.truncated.sum() >= 3  # both kinds of episode end occur
    buf = fill(traj)
    np.testing.assert_array_equal(buf.stacked_obs(np.arange(300)), traj.obs)
    # Arbitrary index shapes and orders work too.
    idx = np.array([[5, 0], [299, 21]])
    np.testing.assert_array_equal(buf.stacked_obs(idx), traj.obs[idx])
    starts = np.nonzero(np.r_[True, (traj.terminated | traj.truncated)[:-1]])[0]
    np.testing.assert_array_equal(np.unique(buf.episode_start), starts)
    with pytest.raises(IndexError):
        buf.stacked_obs(np.array([300]))


def test_sequences_stay_inside_the_buffer_and_equal_the_slices() -> None:
    traj = record(40, seed=2)
    buf = fill(traj, capacity=100)
    seq_len, batch_size = 6, 5
    assert buf.num_valid_starts(seq_len) == 40 - seq_len - 1
    seen: set[int] = set()
    for _ in range(200):
        batch = buf.sample_sequences(batch_size, seq_len)
        assert batch.actions.shape == (batch_size, seq_len + 1) and batch.actions.dtype == np.int64
        assert batch.starts.min() >= 1 and batch.starts.max() + seq_len <= len(buf) - 1
        seen.update(batch.starts.tolist())
    assert seen == set(range(1, 40 - seq_len))  # every valid start, and only those, is reachable
    assert_batch_matches(batch, traj, seq_len)
    for _ in range(20):
        assert_batch_matches(buf.sample_sequences(batch_size, seq_len), traj, seq_len)
        assert_batch_matches(buf.sample_sequences_uniform(batch_size, seq_len), traj, seq_len)


def test_a_sequence_over_an_episode_end_continues_with_the_next_episode() -> None:
    traj = record(60, seed=3)
    buf = fill(traj)
    done = int(np.nonzero(traj.terminated | traj.truncated)[0][0])
    batch = buf.sequences(np.array([done]), 3)  # step axis: done - 1 (context), done, done + 1, ...
    assert batch.terminated[0, 1] or batch.truncated[0, 1]
    # The observation after the done step is the padded first observation of the next episode.
    first = batch.obs[0, 2]
    assert all(np.array_equal(first[k], first[-1]) for k in range(4))
    with pytest.raises(IndexError):
        buf.sequences(np.array([0]), 3)  # no context step before index 0
    with pytest.raises(IndexError):
        buf.sequences(np.array([60 - 3]), 3)  # the observation after the last step is not stored


def test_a_full_batch_is_a_permutation_without_replacement() -> None:
    buf = fill(record(30, seed=4))
    seq_len = 4
    count = buf.num_valid_starts(seq_len)
    for _ in range(5):
        starts = buf.draw_starts(count, seq_len)
        assert sorted(starts.tolist()) == list(range(1, count + 1))
    np.testing.assert_array_equal(buf.visits[1 : count + 1], 5)
    assert buf.visits[0] == 0 and (buf.visits[count + 1 :] == 0).all()
    uniform = buf.sample_sequences_uniform(count, seq_len).starts
    assert sorted(uniform.tolist()) == list(range(1, count + 1))
    np.testing.assert_array_equal(buf.visits[1 : count + 1], 5)  # uniform sampling leaves visits alone
    with pytest.raises(ValueError, match="valid starts"):
        buf.draw_starts(count + 1, seq_len)


def test_visit_balanced_sampling_favours_new_data() -> None:
    traj = record(402, seed=5)
    buf = ReplayBuffer(402, seed=5, visit_temperature=20.0)
    for i in range(202):
        buf.add(traj.obs[i, -1], int(traj.actions[i]), float(traj.rewards[i]), False, False)
    for _ in range(800):  # ~40 visits for each of the 200 old starts
        buf.draw_starts(10, 1)
    for i in range(202, 402):
        buf.add(traj.obs[i, -1], int(traj.actions[i]), float(traj.rewards[i]), False, False)
    visits = buf.visits[1:401].astype(float)
    assert visits[:200].mean() == 40.0 and (visits[200:] == 0).all()
    # Single draws follow softmax(-visits / T) exactly: compare the share of new starts to its value.
    weights = np.exp(-visits / 20.0)
    p_new = weights[200:].sum() / weights.sum()
    assert p_new > 0.8
    draws = np.concatenate([buf.draw_starts(1, 1, update_visits=False) for _ in range(3000)])
    share_new = (draws > 200).mean()
    assert abs(share_new - p_new) < 4 * np.sqrt(p_new * (1 - p_new) / 3000)
    np.testing.assert_array_equal(buf.visits[1:401], visits)  # update_visits=False changed nothing


def test_without_replacement_probabilities_on_a_tiny_case() -> None:
    buf = fill(record(6, seed=6))
    assert buf.num_valid_starts(1) == 4  # starts 1..4
    visits = np.array([0, 10, 20, 40])
    buf._visits[1:5] = visits  # white-box: set a known visit profile
    p = np.exp(-visits / 20.0)
    p /= p.sum()
    # Brute force: probability of each unordered pair under successive draws without replacement.
    expected = {
        frozenset((a + 1, b + 1)): p[a] * p[b] / (1 - p[a]) + p[b] * p[a] / (1 - p[b])
        for a, b in itertools.combinations(range(4), 2)
    }
    n = 20_000
    counts = dict.fromkeys(expected, 0)
    for _ in range(n):
        counts[frozenset(buf.draw_starts(2, 1, update_visits=False).tolist())] += 1
    for pair, prob in expected.items():
        assert abs(counts[pair] / n - prob) < 4 * np.sqrt(prob * (1 - prob) / n) + 1e-3, pair
    # With update_visits the drawn starts gain exactly one visit each.
    starts = buf.draw_starts(2, 1)
    np.testing.assert_array_equal(buf.visits[starts], visits[starts - 1] + 1)


def test_expected_visits_by_hand() -> None:
    # A temperature so high that every spread is uniform: each added step credits 2 draws evenly
    # over the starts valid once it was there.
    buf = ReplayBuffer(8, frame_stack=1, frame_shape=(2, 2), visit_temperature=1e12, visit_rate=2.0)
    for _ in range(6):
        buf.add(np.zeros((2, 2), np.uint8), 0, 0.0, False, False)
    buf.draw_starts(1, 1)
    # Starts need a context step before and a stored successor: after step 3 start 1 is valid,
    # after step 4 starts 1-2, after 5 starts 1-3, after 6 starts 1-4 (steps 1 and 2 had none).
    np.testing.assert_allclose(buf.expected_visits, [0, 2 + 1 + 2 / 3 + 0.5, 1 + 2 / 3 + 0.5, 2 / 3 + 0.5, 0.5, 0])
    assert buf.visits.sum() == 1  # the real draw is still counted
    before = buf.expected_visits.copy()
    buf.draw_starts(1, 1)  # nothing added since: nothing credited
    np.testing.assert_array_equal(buf.expected_visits, before)
    # At T = 1 one more step spreads its 2 draws by softmax(-expected visits) over starts 1-5.
    buf.visit_temperature = 1.0
    buf.add(np.zeros((2, 2), np.uint8), 0, 0.0, False, False)
    buf.draw_starts(1, 1)
    weights = np.exp(-np.array([25 / 6, 13 / 6, 7 / 6, 0.5, 0.0]))
    np.testing.assert_allclose(buf.expected_visits[1:6], [25 / 6, 13 / 6, 7 / 6, 0.5, 0] + 2 * weights / weights.sum())


def test_sample_obs_returns_distinct_recorded_observations() -> None:
    traj = record(50, seed=7)
    buf = fill(traj)
    obs = buf.sample_obs(50)  # all of them, without replacement
    assert obs.shape == (50, 4, 64, 64)
    flat_recorded = {o.tobytes() for o in traj.obs}
    assert {o.tobytes() for o in obs} == flat_recorded
    with pytest.raises(ValueError):
        buf.sample_obs(51)


@pytest.mark.parametrize("visit_rate", [0.0, 131.6])
def test_save_load_round_trip_continues_identically(tmp_path: Path, visit_rate: float) -> None:
    traj = record(120, seed=8)
    buf = fill(traj, capacity=150, seed=3, visit_rate=visit_rate)
    for _ in range(7):
        buf.sample_sequences(4, 5)
    path = tmp_path / "replay"
    buf.save(path)
    buf.save(path)  # saving over an earlier save replaces it
    loaded = ReplayBuffer.load(path)
    assert (loaded.size, loaded.capacity, loaded.frame_stack) == (120, 150, 4)
    names = ("frames", "actions", "rewards", "terminated", "truncated", "episode_start", "visits", "expected_visits")
    for name in names:
        np.testing.assert_array_equal(getattr(loaded, name), getattr(buf, name), err_msg=name)
    assert (loaded.expected_visits.sum() > 0) == (visit_rate > 0)
    for _ in range(5):
        a, b = buf.sample_sequences(4, 5), loaded.sample_sequences(4, 5)
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(buf.sample_obs(8), loaded.sample_obs(8))
    # Both keep filling the same way, across an episode boundary at the save point.
    more = record(30, seed=9)
    for target in (buf, loaded):
        for o, act, r, te, tr in zip(*more, strict=True):
            target.add(o[-1], int(act), float(r), bool(te), bool(tr))
    np.testing.assert_array_equal(loaded.episode_start, buf.episode_start)
    # and draw the same starts, crediting the new steps' expected visits alike
    np.testing.assert_array_equal(buf.draw_starts(4, 5), loaded.draw_starts(4, 5))
    np.testing.assert_array_equal(loaded.expected_visits, buf.expected_visits)
    np.testing.assert_array_equal(loaded.stacked_obs(np.arange(150)), buf.stacked_obs(np.arange(150)))


def test_full_buffer_and_bad_frames_raise() -> None:
    traj = record(5, seed=10)
    buf = fill(traj)
    with pytest.raises(ReplayFullError, match="full"):
        buf.add(traj.obs[0, -1], 0, 0.0, False, False)
    small = ReplayBuffer(3)
    with pytest.raises(ValueError, match="uint8"):
        small.add(np.zeros((64, 64), np.float32), 0, 0.0, False, False)
    with pytest.raises(ValueError, match="shape"):
        small.add(traj.obs[0], 0, 0.0, False, False)  # a whole stack instead of its newest frame


def test_memory_and_construction_from_config() -> None:
    cfg = Config()
    buf = ReplayBuffer.from_config(cfg, seed=0)
    assert buf.capacity == 100_000 and buf.visit_temperature == 20.0
    # Frames 4096 B + action 4 + reward 4 + two flags 1 + episode start 8 + visits 8 + expected visits 8.
    assert buf.memory_bytes() == 100_000 * (4096 + 4 + 4 + 1 + 1 + 8 + 8 + 8)
    assert buf.memory_bytes() / 1e9 < 0.45
    assert buf.visit_rate == 0.0 and ReplayBuffer.from_config(load_config("plus", ["replay.visit_rate=131.6"]), 0).visit_rate == 131.6


def test_grid_runs_store_the_games_channels_and_stack_them() -> None:
    cfg = load_config("smoke", ["env.game=minatar/space_invaders", "env.observation=grid"])
    replay = ReplayBuffer.from_config(cfg, seed=0)
    assert replay.frame_shape == (6, 10, 10)
    frames = [np.full((6, 10, 10), 255 * (i % 2), dtype=np.uint8) for i in range(3)]
    frames[2][4, 1, 2] = 7
    for i, frame in enumerate(frames):
        replay.add(frame, 0, 0.0, terminated=False, truncated=i == 2)
    stack = replay.stacked_obs(np.array([2]))[0]  # steps 0, 0, 1, 2: padded with the episode's first
    assert stack.shape == (24, 10, 10)
    np.testing.assert_array_equal(stack, np.concatenate([frames[0], frames[0], frames[1], frames[2]]))


def test_vector_runs_store_float_numbers_and_save_and_checkpoint_them(tmp_path: Path) -> None:
    cfg = load_config("smoke", ["env.game=gym:CartPole-v1", "env.observation=vector", "env.vector_size=3"])
    replay = ReplayBuffer.from_config(cfg, seed=0)
    assert replay.frame_shape == (3, 1, 1) and replay.frames.dtype == np.float32
    frames = [np.array([0.5 + i, -1e-3 * i, 1e6], dtype=np.float32).reshape(3, 1, 1) for i in range(5)]
    for frame in frames:
        replay.add(frame, 1, 0.0, terminated=False, truncated=False)
    with pytest.raises(ValueError, match="float32 of shape"):
        replay.add(frames[0].astype(np.uint8), 1, 0.0, False, False)  # a picture's dtype is refused
    stack = replay.stacked_obs(np.array([1]))[0]  # steps 0, 0, 0, 1 (padded with the episode's first)
    assert stack.shape == (12, 1, 1) and stack.dtype == np.float32
    np.testing.assert_array_equal(stack, np.concatenate([frames[0]] * 3 + [frames[1]]))
    replay.save(tmp_path / "replay")
    loaded = ReplayBuffer.load(tmp_path / "replay")
    assert loaded.frames.dtype == np.float32
    np.testing.assert_array_equal(loaded.frames, replay.frames)  # the numbers exactly, not rounded to bytes
    state = replay.checkpoint_state(frames_from=2)
    rebuilt = ReplayBuffer.from_checkpoint_state(state, [(0, replay.frames[:2])])
    assert rebuilt.frames.dtype == np.float32
    np.testing.assert_array_equal(rebuilt.frames, replay.frames)


def test_a_buffer_saved_by_earlier_versions_loads(tmp_path: Path) -> None:
    traj = record(20, seed=1)
    buf = fill(traj, capacity=30, seed=0)
    for _ in range(3):
        buf.draw_starts(2, 3)
    buf.save(tmp_path / "replay")
    state = buf.checkpoint_state(frames_from=0)
    # What earlier versions wrote: no frame dtype (before vectors), no expected visits.
    meta = tmp_path / "replay" / "meta.json"
    settings = json.loads(meta.read_text())
    for key in ("frame_dtype", "visit_rate", "credited_size"):
        del settings[key], state[key]
    meta.write_text(json.dumps(settings))
    with np.load(tmp_path / "replay" / "steps.npz") as steps:
        arrays = {k: steps[k] for k in steps.files if k != "expected_visits"}
    np.savez(tmp_path / "replay" / "steps.npz", **arrays)
    del state["arrays"]["expected_visits"]
    rng_state = buf.rng.bit_generator.state
    for loaded in (ReplayBuffer.load(tmp_path / "replay"), ReplayBuffer.from_checkpoint_state(state, [])):
        assert loaded.frames.dtype == np.uint8 and loaded.visit_rate == 0
        np.testing.assert_array_equal(loaded.frames, buf.frames)
        np.testing.assert_array_equal(loaded.visits, buf.visits)
        buf.rng.bit_generator.state = rng_state  # the saved generator: both draw the same starts
        np.testing.assert_array_equal(loaded.draw_starts(2, 3), buf.draw_starts(2, 3, update_visits=False))


def sparse_buffer(rewarded_steps: list[int], size: int = 60, seed: int = 0) -> ReplayBuffer:
    buf = ReplayBuffer(size, frame_stack=1, seed=seed)
    for i in range(size):
        buf.add(np.zeros((64, 64), np.uint8), 0, 1.0 if i in rewarded_steps else 0.0, False, False)
    return buf


def test_windows_with_reward_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    buf = ReplayBuffer(200, frame_stack=1)
    rewards = np.where(rng.random(200) < 0.03, rng.choice([-1.0, 0.5], 200), 0.0)
    for r in rewards:
        buf.add(np.zeros((64, 64), np.uint8), 0, float(r), False, False)
    for seq_len in (1, 4, 16):
        expected = [bool(np.any(rewards[i : i + seq_len] != 0)) for i in range(1, buf.num_valid_starts(seq_len) + 1)]
        assert buf.windows_with_reward(seq_len).tolist() == expected


def test_rewarded_starts_come_first_and_hold_the_reward() -> None:
    # One reward, at step 30: with seq_len 4 the windows holding it start at 27, 28, 29 or 30.
    for seed in range(20):
        buf = sparse_buffer([30], seed=seed)
        starts = buf.draw_starts(6, 4, rewarded=2)
        assert len(set(starts.tolist())) == 6
        assert set(starts[:2].tolist()) <= {27, 28, 29, 30}
        assert all(1 <= s <= buf.num_valid_starts(4) for s in starts)
        assert buf.visits[starts].tolist() == [1] * 6
    # Asking for more than there are: all four rewarded windows, then the rest as usual.
    starts = sparse_buffer([30]).draw_starts(8, 4, rewarded=6)
    assert sorted(starts[:4].tolist()) == [27, 28, 29, 30] and len(set(starts.tolist())) == 8
    # Without rewarded windows the draw is the paper's, number for number.
    assert sparse_buffer([]).draw_starts(6, 4, rewarded=2).tolist() == sparse_buffer([]).draw_starts(6, 4).tolist()


def test_rewarded_share_reaches_the_batches_a_run_samples() -> None:
    cfg = load_config("smoke", ["env.game=catch", "replay.rewarded_share=0.5"])
    assert cfg.replay.rewarded_sequences == 2  # of 4 sequences
    assert load_config("atari100k").replay.rewarded_sequences == 0
    buf = sparse_buffer([12, 40])
    batch = buf.sample_sequences(cfg.replay.batch_size, cfg.replay.sequence_length, cfg.replay.rewarded_sequences)
    assert (batch.rewards[:2, 1:] != 0).any(axis=1).all()  # the reward targets of the first two hold one
