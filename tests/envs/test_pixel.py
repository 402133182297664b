"""The PixelEnv adapter (twm.envs.pixel): to_frame against ``cv2`` and ``np.kron`` references, and the
adapter's stacking, episode ends, action repeat, rewards and state round trip against a scripted
source whose every picture is known.
"""

from __future__ import annotations

import copy
import math
import pickle
from typing import Any

import cv2
import numpy as np
import pytest

from families import run_episode
from twm.config import EnvConfig
from twm.config_files import load_config
from twm.envs import EnvError, newest_frame
from twm.envs.pixel import PixelEnv, to_frame
from twm.replay import ReplayBuffer

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
