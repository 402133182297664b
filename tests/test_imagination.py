"""Imagination: memory path vs a full recompute, discount weights, fresh starts, observe latents."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from builders import NUM_ACTIONS, make_start, random_latents, smoke
from twm.agent import Agent
from twm.imagination import ImaginationStart, imagine, observe_latent
from twm.losses import discount_weights
from twm.models.world_model import WorldModelOutput


@pytest.fixture
def agent() -> Agent:
    torch.manual_seed(0)
    cfg = smoke("dynamics.memory_steps=16")  # the rollout fits in the window, as at the paper config
    return Agent(cfg, NUM_ACTIONS)


def rollout(agent: Agent, start: ImaginationStart, threshold: float, horizon: int = 8):
    cfg = agent.cfg
    fresh_gen = torch.Generator().manual_seed(7)
    wm = agent.world_model
    return imagine(
        wm.dynamics,
        wm.obs_model,
        agent.actor,
        start,
        horizon,
        threshold,
        lambda n: random_latents(cfg, n, fresh_gen),
        torch.Generator().manual_seed(1),
    )


def test_rollout_memory_path_equals_full_recompute(agent: Agent) -> None:
    """Each imagined h_t equals one pass of the dynamics model over the whole imagined stream."""
    start = make_start(agent.cfg, 6)
    out = rollout(agent, start, threshold=0.5)  # some imagined episode ends inside
    assert out.dones.any(), "the test needs imagined episode ends"
    z = torch.cat([start.context_z[:, None], out.z[:, :-1]], dim=1)  # (B, H+1, Z)
    actions = torch.cat([start.context_action[:, None], out.actions], dim=1)
    rewards = torch.cat([start.context_reward[:, None], out.rewards[:, :-1]], dim=1)  # (B, H)
    dones = torch.cat([start.context_done[:, None], out.dones[:, :-1]], dim=1)
    dyn = agent.world_model.dynamics.eval()
    with torch.no_grad():
        full = dyn(z, actions, rewards, dones)
    torch.testing.assert_close(out.h, full.h[:, 1:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.rewards, full.reward_mean[:, 1:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.discounts, torch.sigmoid(full.discount_logit[:, 1:]), rtol=1e-5, atol=1e-5)


def test_weights_dones_and_fresh_starts(agent: Agent) -> None:
    start = make_start(agent.cfg, 16, seed=3)
    threshold = 0.4
    out = rollout(agent, start, threshold)
    assert out.dones.any() and (~out.dones).any()
    # Weights are the discount products before each step, restarting after an imagined end.
    torch.testing.assert_close(out.weights, discount_weights(out.discounts, out.dones))
    # An imagined episode ends exactly when the product including this step falls below the threshold.
    product_after = out.weights * out.discounts
    assert torch.equal(out.dones, product_after < threshold)
    # After an end, the next latent is a fresh one from the replay sampler (here: a seeded stub).
    fresh_gen = torch.Generator().manual_seed(7)
    expected = [
        random_latents(agent.cfg, int(out.dones[:, t].sum()), fresh_gen) for t in range(out.dones.shape[1])
    ]
    for t in range(out.dones.shape[1]):
        if out.dones[:, t].any():
            torch.testing.assert_close(out.z[out.dones[:, t], t + 1], expected[t])


def test_no_threshold_means_no_ends(agent: Agent) -> None:
    out = rollout(agent, make_start(agent.cfg, 4), threshold=0.0)
    assert not out.dones.any()
    assert torch.all(out.discounts > 0) and torch.all(out.discounts < 1)


def test_rollout_leaves_training_mode_alone(agent: Agent) -> None:
    agent.train()
    rollout(agent, make_start(agent.cfg, 2), threshold=0.1)
    assert agent.world_model.dynamics.training and agent.actor.training


def test_observe_latent_is_the_encoders_argmax(agent: Agent) -> None:
    obs = torch.randint(0, 256, (5, 4, 64, 64), dtype=torch.uint8)
    om = agent.world_model.obs_model.eval()
    z = observe_latent(om, obs)
    with torch.no_grad():
        direct = om.encode(obs).argmax(-1)  # (5, C)
    assert torch.equal(z.reshape(5, agent.cfg.obs_model.categoricals, -1).argmax(-1), direct)
    # Acting samples the actor on exactly that latent.
    actions = agent.act(obs.numpy(), torch.Generator().manual_seed(5))
    expected = agent.actor.sample(z, torch.Generator().manual_seed(5))
    assert np.array_equal(actions, expected.numpy())


def test_imagination_starts_are_consecutive_pairs(agent: Agent) -> None:
    cfg = agent.cfg
    B, T = cfg.replay.batch_size, cfg.replay.sequence_length
    # Latents whose first class index encodes (sequence, step), so pairs can be traced.
    ids = torch.arange(B * (T + 1)).reshape(B, T + 1)
    z = torch.zeros(B, T + 1, cfg.latent_dim)
    z[..., 0] = ids.float()
    out = WorldModelOutput(
        z=z,
        actions=ids % NUM_ACTIONS,
        rewards=ids.float() / 100,
        terminated=ids % 5 == 0,
        truncated=ids % 7 == 0,
        metrics={},
    )
    start = agent._imagination_starts(out, torch.Generator().manual_seed(0))
    ctx = start.context_z[:, 0].long()
    assert len(set(ctx.tolist())) == cfg.actor_critic.num_starts  # without replacement
    assert torch.equal(start.start_z[:, 0].long(), ctx + 1)  # the next step of the same sequence
    assert torch.all(ctx % (T + 1) < T)  # the context is never the last step
    assert torch.equal(start.context_action, ctx % NUM_ACTIONS)
    assert torch.equal(start.context_reward, ctx.float() / 100)
    assert torch.equal(start.context_done, (ctx % 5 == 0) | (ctx % 7 == 0))
