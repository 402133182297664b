"""benchmarks/reward_refit.py: the windows by hand, readers that find a planted reward,
and a run folder read end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from tests.benchmarks.scripts import load_script

from twm.agent import Agent
from twm.config_files import load_config
from twm.replay import ReplayBuffer
from twm.training.checkpoint import CheckpointManager, agent_from_checkpoint
from twm.training.trainer import Trainer

SCRIPT, refit_mod = load_script("reward_refit.py")


def test_tiling_covers_each_step_once() -> None:
    # 40 steps, windows of 8: a start needs its context step before and its next observation after,
    # so the last valid start is 40 - 8 - 1 = 31: starts 1, 9, 17, 25 cover steps 1..32 once each.
    starts = refit_mod.tiling_starts(40, 8)
    assert starts.tolist() == [1, 9, 17, 25]
    steps = (starts[:, None] + np.arange(8)).reshape(-1)
    assert steps.tolist() == list(range(1, 33))


def test_readers_find_a_planted_reward() -> None:
    """States whose first feature says "reward" (tanh(1) where it exceeds 1, 16 % of the states):
    the further-trained two-hot head learns to predict it and both readers rank it first."""
    cfg = load_config("smoke", ["env.game=catch", "dynamics.reward_head=twohot", "dynamics.lr=1e-3"])
    agent = Agent(cfg, 3)
    gen = torch.Generator().manual_seed(0)
    d = cfg.dynamics.d_model
    h, test_h = torch.randn(4000, d, generator=gen), torch.randn(2000, d, generator=gen)
    reward = lambda x: np.where(x[:, 0].numpy() > 1.0, np.tanh(1.0), 0.0).astype(np.float32)  # noqa: E731
    r, test_r = reward(h), reward(test_h)
    untrained = refit_mod.head_predictions(agent, agent.world_model.dynamics.reward_head, test_h)
    assert np.abs(untrained).max() < 1e-6  # the zero-initialised two-hot head predicts 0 everywhere
    head = refit_mod.train_head(agent, h, r, steps=1500, batch_size=64, seed=0)
    pred = refit_mod.head_predictions(agent, head, test_h)
    assert refit_mod.auc(pred, test_r != 0) > 0.97
    assert pred[test_r != 0].mean() > 0.4 and pred[test_r == 0].mean() < 0.1
    assert refit_mod.auc(refit_mod.linear_probe(h, r != 0, test_h), test_r != 0) > 0.97
    # The run's own head is left as it was.
    again = refit_mod.head_predictions(agent, agent.world_model.dynamics.reward_head, test_h)
    assert np.array_equal(again, untrained)


def test_a_fresh_head_reads_what_pays() -> None:
    """A new two-hot head on inputs whose boolean column 3 says "reward" (the outcome of a step)
    learns it; one on the other columns (noise) cannot."""
    cfg = load_config("smoke", ["env.game=catch", "dynamics.reward_head=twohot", "dynamics.lr=1e-3"])
    agent = Agent(cfg, 3)
    gen = torch.Generator().manual_seed(2)
    x, test_x = (torch.rand(n, 12, generator=gen) < 0.15 for n in (4000, 2000))
    r, test_r = (np.where(v[:, 3].numpy(), np.tanh(1.0), 0.0).astype(np.float32) for v in (x, test_x))
    head = refit_mod.fresh_head(agent, 12, seed=0)
    assert np.abs(refit_mod.head_predictions(agent, head, test_x)).max() < 1e-6  # starts at 0
    trained = refit_mod.train_head(agent, x, r, steps=1500, batch_size=64, seed=0, head=head)
    assert refit_mod.auc(refit_mod.head_predictions(agent, trained, test_x), test_r != 0) > 0.97
    blind = refit_mod.train_head(
        agent, x[:, 4:], r, steps=1500, batch_size=64, seed=0, head=refit_mod.fresh_head(agent, 8, seed=0)
    )
    assert refit_mod.auc(refit_mod.head_predictions(agent, blind, test_x[:, 4:]), test_r != 0) < 0.6


def test_observation_inputs_by_hand() -> None:
    # Vectors of 2 numbers, 2 stacked: step 1 of an episode starting at 0 reads frames 0 and 1,
    # step 0 repeats frame 0 (padding at the episode's start); then the action one-hot of 3.
    replay = ReplayBuffer(4, frame_stack=2, frame_shape=(1, 2), frame_dtype=np.float32)
    for t in range(3):
        replay.add(
            np.array([[t, 10.0 * t]], dtype=np.float32),
            action=t,
            reward=0.0,
            terminated=False,
            truncated=False,
        )
    x = refit_mod.observation_inputs(replay, np.array([0, 1]), num_actions=3)
    assert x.tolist() == [[0, 0, 0, 0, 1, 0, 0], [0, 0, 1, 10, 0, 1, 0]]


def test_observation_probe_finds_a_conjunction() -> None:
    """Rewarded exactly where two binary inputs are both on (a conjunction no linear score of one
    input finds): the MLP classifier ranks those rows first."""
    gen = torch.Generator().manual_seed(1)
    x, test_x = (torch.rand(n, 20, generator=gen).round() for n in (3000, 1000))
    label = lambda v: (v[:, 0] * v[:, 1]).numpy() > 0  # noqa: E731
    scores = refit_mod.observation_probe(x, label(x), test_x, steps=400, seed=0)
    assert refit_mod.auc(scores, label(test_x)) > 0.97


def test_refit_reads_a_run_folder(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    settings = ["train.total_steps=150", "train.budget=5000", "train.checkpoint_interval=50"]
    cfg = load_config("smoke", ["env.game=catch", *settings])
    Trainer(cfg, run_dir, device="cpu", progress=False).run()

    # The features: every step of the tiling once, with the replay's reward, and the run's head
    # read from h_t gives the run's prediction (h is what the head reads).
    state, replay, _ = CheckpointManager(run_dir).load_latest()
    agent = agent_from_checkpoint(state)
    h, pred, rewards, index, z_next = refit_mod.replay_features(
        agent, replay, batch_size=3, next_latents=True
    )
    T = cfg.replay.sequence_length
    assert (
        index.tolist()
        == (refit_mod.tiling_starts(replay.size, T)[:, None] + np.arange(T)).reshape(-1).tolist()
    )
    assert np.array_equal(rewards, replay.rewards[index])
    again = refit_mod.head_predictions(agent, agent.world_model.dynamics.reward_head, h)
    np.testing.assert_allclose(again, pred, atol=1e-6)
    # z_{t+1}: a one-hot sample, one class of each categorical, for every step.
    C, K = cfg.obs_model.categoricals, cfg.obs_model.classes
    assert z_next is not None and z_next.shape == (index.size, C * K)
    assert (z_next.view(-1, C, K).sum(-1) == 1).all()

    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(run_dir), "--steps", "20", "--next-latent", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["interactions"] == 150 and r["refit_steps"] == 20
    assert r["train_steps"] + r["test_steps"] == index.size
    # catch pays at the end of each game (every 9 steps or so): rewarded steps on both sides.
    assert r["train_rewarded"] > 0 and r["test_rewarded"] > 0
    for key in ("run_auc", "head_auc", "linear_auc", "fresh_auc", "outcome_auc"):
        assert 0.0 <= r[key] <= 1.0
    for bad in (["--test", "1.5"], ["--steps", "-1"]):
        err = subprocess.run(
            [sys.executable, str(SCRIPT), str(run_dir), *bad], capture_output=True, text=True
        )
        assert err.returncode == 2 and err.stderr.count("\n") == 1
    # The observation classifier reads grids and vectors; this run saw pictures.
    pictures = subprocess.run(
        [sys.executable, str(SCRIPT), str(run_dir), "--observation-probe"], capture_output=True, text=True
    )
    assert pictures.returncode == 2 and "pictures" in pictures.stderr and pictures.stderr.count("\n") == 1
    missing = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "none")], capture_output=True, text=True
    )
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "Traceback" not in missing.stderr
