"""Small inputs shared by several test files: a tiny float64 dynamics model with random token
sequences, random imagination starts and seeded rollouts for the smoke agent, and catch replay buffers.

Fixtures built from these live in ``conftest.py``."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F

from twm.config import Config, DynamicsConfig
from twm.config_files import load_config
from twm.envs import make_env
from twm.imagination import ImaginationStart, Rollout, imagine
from twm.models.dynamics import DynamicsModel
from twm.models.observation import mode_one_hot
from twm.replay import ReplayBuffer

if TYPE_CHECKING:
    from twm.agent import Agent

C, K, A = 3, 4, 5  # categoricals, classes, actions of the tiny dynamics model

# Every switch beyond the paper, on, at the value `plus` uses or used (each default is the paper's
# behaviour); `actor_critic.inputs=zh` is tested on its own.
SWITCHES = {
    "obs_model.unimix": 0.01,
    "obs_model.sampler": "inverse_cdf",
    "dynamics.reward_head": "twohot",
    "actor_critic.critic": "twohot",
    "actor_critic.slow_critic_rate": 0.02,
    "actor_critic.return_norm": "percentile",
    "actor_critic.entropy": "bonus",
    "actor_critic.unimix": 0.01,
    "actor_critic.replay_value_coef": 0.3,
    "dynamics.encoder_grad": 0.5,
    "replay.rewarded_share": 0.5,
    "replay.visit_rate": 131.6,
    # 0.5, not the 0.01 of the Freeway experiment: a floor of 0.01 multiplies advantages by up to
    # 100, and with them the float rounding in which the captured and the eager update differ.
    "actor_critic.return_norm_floor": 0.5,
    "train.eval_policy": "mode",
    "dynamics.reward_bins": "symexp",
    "actor_critic.critic_bins": "symexp",
    "dynamics.imagined_inputs": 0.5,
    "obs_model.moved_weight": 4.0,
}
# Switches that act only beside another: the update with both differs from the update with the other alone.
NEEDS = {
    "actor_critic.return_norm_floor": ["actor_critic.return_norm=percentile"],
    "dynamics.reward_bins": ["dynamics.reward_head=twohot"],
    "actor_critic.critic_bins": ["actor_critic.critic=twohot"],
}
# The ones the `plus` preset turns on: all but uniform mixing in the latents, which hid Breakout's
# ball from the world model (docs/results.md, "The plus agent"), the replay value loss (no gain
# on Space Invaders), the switches measured since without a gain yet (the rewarded share, the
# return floor, the evaluation policy, the expected visits) and those not yet measured (the symexp
# bins, the imagined inputs, the moved-pixel weight).
PLUS_SWITCHES = {
    **{
        key: value
        for key, value in SWITCHES.items()
        if key
        not in (
            "obs_model.unimix", "actor_critic.replay_value_coef", "dynamics.encoder_grad", "replay.rewarded_share",
            "actor_critic.return_norm_floor", "train.eval_policy", "replay.visit_rate",
            "dynamics.reward_bins", "actor_critic.critic_bins", "dynamics.imagined_inputs",
            "obs_model.moved_weight",
        )
    },
    "dynamics.encoder_grad": 1.0,  # the whole gradient (the tests' SWITCHES use a share, 0.5)
}
# Every switch as --set overrides (the resume and captured tests turn them all on at once).
SWITCH_OVERRIDES = [f"{key}={value}" for key, value in SWITCHES.items()]
NUM_ACTIONS = 3  # of the smoke agent (the catch game)


def tiny_cfg(**overrides) -> DynamicsConfig:
    base = dict(
        d_model=16,
        layers=2,
        heads=2,
        head_dim=8,
        ff_dim=24,
        memory_steps=2,
        z_head_hidden=16,
        z_head_layers=2,
        reward_head_hidden=8,
        reward_head_layers=1,
        discount_head_hidden=8,
        discount_head_layers=0,
    )
    return DynamicsConfig(**{**base, **overrides})


def tiny_model(**overrides) -> DynamicsModel:
    torch.manual_seed(0)
    return DynamicsModel(tiny_cfg(**overrides), C * K, C, K, A).double().eval()


def random_batch(B: int, T: int, seed: int, done_at: tuple[int, ...] = ()) -> tuple[torch.Tensor, ...]:
    """Random one-hot latents, actions, rewards and episode ends (plus ends at ``done_at`` in row 0)."""
    g = torch.Generator().manual_seed(seed)
    z = F.one_hot(torch.randint(0, K, (B, T, C), generator=g), K).reshape(B, T, C * K).double()  # (B, T, C*K)
    a = torch.randint(0, A, (B, T), generator=g)
    r = torch.randn(B, T, generator=g, dtype=torch.float64)
    d = torch.rand(B, T, generator=g) < 0.1
    for t in done_at:
        d[0, t] = True
    return z, a, r, d


def smoke(*overrides: str) -> Config:
    return load_config("smoke", ["env.game=catch", *overrides])


def random_latents(cfg: Config, n: int, gen: torch.Generator) -> torch.Tensor:
    logits = torch.randn(n, cfg.obs_model.categoricals, cfg.obs_model.classes, generator=gen)
    return mode_one_hot(logits)


def make_start(cfg: Config, batch: int, seed: int = 0) -> ImaginationStart:
    gen = torch.Generator().manual_seed(seed)
    return ImaginationStart(
        context_z=random_latents(cfg, batch, gen),
        context_action=torch.randint(NUM_ACTIONS, (batch,), generator=gen),
        context_reward=torch.randn(batch, generator=gen),
        context_done=torch.rand(batch, generator=gen) < 0.3,
        start_z=random_latents(cfg, batch, gen),
    )


ROLLOUT_SEED, FRESH_SEED = 1, 7  # the generators of seeded_rollout: actions and latents; fresh starts


def seeded_rollout(
    agent: Agent, start: ImaginationStart, threshold: float, horizon: int = 8, kv_cache: bool | None = None
) -> tuple[Rollout, torch.Tensor, torch.Tensor]:
    """An imagination rollout of ``agent`` with fixed random draws: actions and latent samples from a
    generator seeded ``ROLLOUT_SEED``, fresh starts ``random_latents`` from one seeded ``FRESH_SEED`` (in
    the dtype of ``start``). ``kv_cache`` None follows ``dynamics.kv_cache``. Returns the rollout and the
    two generators' final states (the same draws leave them in the same states)."""
    cfg = agent.cfg
    fresh_gen = torch.Generator().manual_seed(FRESH_SEED)
    gen = torch.Generator().manual_seed(ROLLOUT_SEED)
    wm = agent.world_model
    dtype = start.start_z.dtype
    out = imagine(
        wm.dynamics,
        wm.obs_model,
        agent.actor,
        start,
        horizon,
        threshold,
        lambda n: random_latents(cfg, n, fresh_gen).to(dtype),
        gen,
        kv_cache=kv_cache,
    )
    return out, gen.get_state(), fresh_gen.get_state()


def catch_replay(steps: int, capacity: int | None = None, seed: int = 0, **replay_kwargs) -> ReplayBuffer:
    """``steps`` steps of the catch game with uniformly random actions (several episodes)."""
    cfg = smoke()
    env = make_env(cfg.env, "train", seed)
    buffer = ReplayBuffer(capacity or steps, frame_stack=cfg.env.frame_stack, seed=seed, **replay_kwargs)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset()
    for _ in range(steps):
        action = int(rng.integers(env.num_actions))
        next_obs, reward, terminated, truncated, _ = env.step(action)
        buffer.add(obs[-1], action, reward, terminated, truncated)
        obs = env.reset()[0] if terminated or truncated else next_obs
    return buffer


def preset_smoke_update(preset: str, *overrides: str) -> dict[str, float]:
    """The metrics of one update of ``preset`` (then ``overrides``) with smoke-sized networks and
    batches, on catch.

    Every switch and rate of the preset is kept; only the sizes (the smoke preset's obs_model,
    dynamics, actor_critic and replay values) are replaced, and the update runs eagerly (the CPU
    presets' captured update would compile for minutes; tests/test_captured.py compares the two),
    so it takes well under a second. Deterministic on a CPU: the same code gives the same numbers
    bit for bit.
    """
    from twm.agent import Agent
    from twm.models.batch import TorchSequenceBatch
    from twm.presets import PRESETS
    from twm.update import Learner

    sizes = [
        f"{section}.{key}={value}"
        for section in ("obs_model", "dynamics", "actor_critic", "replay")
        for key, value in PRESETS["smoke"][section].items()
    ]
    cfg = load_config(preset, ["env.game=catch", *sizes, "train.capture=false", *overrides])
    torch.manual_seed(0)
    agent = Agent(cfg, NUM_ACTIONS)
    replay = catch_replay(200)
    batch = TorchSequenceBatch.from_numpy(
        replay.sample_sequences(cfg.replay.batch_size, cfg.replay.sequence_length, cfg.replay.rewarded_sequences), "cpu"
    )
    metrics = Learner(agent).update(
        batch, lambda n: torch.from_numpy(replay.sample_obs(n)), torch.Generator().manual_seed(0)
    )
    return {name: float(value) for name, value in sorted(metrics.items())}


def read_tensorboard(folder: Path) -> Any:
    """The events a run wrote to ``folder`` (its ``tensorboard/``), read back with TensorBoard's own
    reader: ``.Tags()``, ``.Scalars(tag)`` (step, value), ``.Images(tag)`` (step, width, height)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def scalars(events: Any, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in events.Scalars(tag)]


def assert_tensorboard_matches_metrics(run_dir: Path, tags: tuple[str, ...]) -> None:
    """The run's TensorBoard scalars of ``tags`` are its metrics.jsonl values, step for step (to float32),
    and each of them was logged at least once."""
    import pytest

    from twm.training.logger import read_metrics

    records = read_metrics(run_dir / "metrics.jsonl")
    events = read_tensorboard(run_dir / "tensorboard")
    for tag in tags:
        expected = [(r["step"], r[tag]) for r in records if tag in r]
        assert expected, tag
        got = scalars(events, tag)
        assert [s for s, _ in got] == [s for s, _ in expected], tag
        assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-6), tag


def obs_policy(num_actions: int) -> Any:
    """A policy that is a deterministic function of each observation alone (so its actions do not depend
    on how observations are batched), yet plays differently in different games."""

    def policy(obs: np.ndarray) -> np.ndarray:
        flat = obs.reshape(len(obs), -1).astype(np.int64)
        return (flat @ np.arange(1, flat.shape[1] + 1, dtype=np.int64)) % num_actions

    return policy


def sequential_eval_scores(env_cfg: Any, policy: Any, num_episodes: int, num_envs: int, seed: int) -> list[float]:
    """The documented contract of vectorised evaluation (twm.envs.vector), played one env at a time and
    written out independently of it: episode k belongs to slot k % N (N = min(num_envs, num_episodes)),
    slot i's eval env is seeded with the i-th child of ``SeedSequence(seed)`` and plays its episodes one
    after the other, each to its end."""
    n = min(num_envs, num_episodes)
    seeds = [int(c.generate_state(1)[0]) for c in np.random.SeedSequence(seed).spawn(n)]
    scores: list[float] = [math.nan] * num_episodes
    for slot in range(n):
        env = make_env(env_cfg, "eval", seeds[slot])
        for k in range(slot, num_episodes, n):
            obs, _ = env.reset()
            while True:
                obs, _, terminated, truncated, info = env.step(int(policy(obs[None])[0]))
                if terminated or truncated:
                    scores[k] = float(info["game_score"])
                    break
    return scores


@contextlib.contextmanager
def counting_compiled_graphs() -> Iterator[dict[str, int]]:
    """``torch.compile`` with its backend wrapped: counts the graphs Dynamo compiled and how often their
    compiled code ran. An update that fell back to eager (Dynamo off, a region skipped) runs none."""
    real_compile = torch.compile
    stats = {"graphs": 0, "runs": 0}

    def spy_compile(function: Any, **options: Any) -> Any:
        inner_backend = torch._dynamo.lookup_backend(options.pop("backend"))

        def counting_backend(gm: torch.fx.GraphModule, example_inputs: Any) -> Any:
            stats["graphs"] += 1
            inner = inner_backend(gm, example_inputs)

            def run(*args: Any) -> Any:
                stats["runs"] += 1
                return inner(*args)

            run._boxed_call = getattr(inner, "_boxed_call", False)  # type: ignore[attr-defined]
            return run

        return real_compile(function, backend=counting_backend, **options)

    with mock.patch.object(torch, "compile", spy_compile):
        yield stats


def png_pixels(path: Path) -> np.ndarray:
    """The RGB pixels of a PNG file."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def assert_drawn(pixels: np.ndarray) -> None:
    """A figure with something drawn on it: not one flat colour, and more than a few colours (axes,
    text and lines antialiased on a background)."""
    colours = np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)
    background = np.all(pixels == pixels[0, 0], axis=-1).mean()
    assert len(colours) > 20, f"{len(colours)} colours"
    assert background < 0.98, f"{background:.3f} of the pixels are the corner's colour"
