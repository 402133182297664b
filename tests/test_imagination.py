"""Imagination: memory path vs a full recompute, discount weights, fresh starts, observe latents."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from builders import FRESH_SEED, NUM_ACTIONS, make_start, random_latents, seeded_rollout, smoke
from twm.agent import Agent
from twm.imagination import ImaginationStart, imagine, observe_latent
from twm.losses import discount_weights
from twm.models.world_model import WorldModelOutput


@pytest.fixture
def agent() -> Agent:
    torch.manual_seed(0)
    cfg = smoke("dynamics.memory_steps=16")  # the rollout fits in the window, as at the paper config
    return Agent(cfg, NUM_ACTIONS)


def test_rollout_memory_path_equals_full_recompute(agent: Agent) -> None:
    """Each imagined h_t equals one pass of the dynamics model over the whole imagined stream."""
    start = make_start(agent.cfg, 6)
    out, _, _ = seeded_rollout(agent, start, threshold=0.5)  # some imagined episode ends inside
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
    out, _, _ = seeded_rollout(agent, start, threshold)
    assert out.dones.any() and (~out.dones).any()
    # Weights are the discount products before each step, restarting after an imagined end.
    torch.testing.assert_close(out.weights, discount_weights(out.discounts, out.dones))
    # An imagined episode ends exactly when the product including this step falls below the threshold.
    product_after = out.weights * out.discounts
    assert torch.equal(out.dones, product_after < threshold)
    # After an end, the next latent is a fresh one from the replay sampler (here: a seeded stub).
    fresh_gen = torch.Generator().manual_seed(FRESH_SEED)
    expected = [
        random_latents(agent.cfg, int(out.dones[:, t].sum()), fresh_gen) for t in range(out.dones.shape[1])
    ]
    for t in range(out.dones.shape[1]):
        if out.dones[:, t].any():
            torch.testing.assert_close(out.z[out.dones[:, t], t + 1], expected[t])


def test_no_threshold_means_no_ends(agent: Agent) -> None:
    out, _, _ = seeded_rollout(agent, make_start(agent.cfg, 4), threshold=0.0)
    assert not out.dones.any()
    assert torch.all(out.discounts > 0) and torch.all(out.discounts < 1)


def test_rollout_leaves_training_mode_alone(agent: Agent) -> None:
    agent.train()
    seeded_rollout(agent, make_start(agent.cfg, 2), threshold=0.1)
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
    start = agent.imagination_starts(out, torch.Generator().manual_seed(0))
    ctx = start.context_z[:, 0].long()
    assert len(set(ctx.tolist())) == cfg.actor_critic.num_starts  # without replacement
    assert torch.equal(start.start_z[:, 0].long(), ctx + 1)  # the next step of the same sequence
    assert torch.all(ctx % (T + 1) < T)  # the context is never the last step
    assert torch.equal(start.context_action, ctx % NUM_ACTIONS)
    assert torch.equal(start.context_reward, ctx.float() / 100)
    assert torch.equal(start.context_done, (ctx % 5 == 0) | (ctx % 7 == 0))


class TableLatents:
    """Fresh latents handed out in a fixed order (row i of the table is the i-th one asked for)."""

    def __init__(self, table: torch.Tensor) -> None:
        self.table, self.taken, self.calls = table, 0, 0

    def __call__(self, n: int) -> torch.Tensor:
        self.calls += 1
        rows = torch.arange(self.taken, self.taken + n) % len(self.table)
        self.taken += n
        return self.table[rows]


def pooled_rollout(agent: Agent, start: ImaginationStart, threshold: float, fresh: TableLatents, pool: int):
    wm = agent.world_model
    gen = torch.Generator().manual_seed(1)
    return imagine(
        wm.dynamics, wm.obs_model, agent.actor, start, 8, threshold, fresh, gen, fresh_pool=pool
    )


@pytest.mark.parametrize("kv_cache", [True, False])
def test_fresh_pool_gives_the_on_demand_rollout(agent: Agent, kv_cache: bool) -> None:
    """With the same fresh latents in the same order, the pool (masks, no host sync) and the
    on-demand path (a count read on the host at every step) imagine the same rollout, bit for bit."""
    agent.world_model.dynamics.cfg.kv_cache = kv_cache
    start = make_start(agent.cfg, 16, seed=3)
    table = random_latents(agent.cfg, 200, torch.Generator().manual_seed(7))
    on_demand = pooled_rollout(agent, start, 0.6, TableLatents(table), pool=0)
    ends = int(on_demand.dones.sum())
    assert ends >= 10 and on_demand.dones[:, :-1].any(dim=0).sum() >= 3, "the test needs ends in several steps"
    assert (on_demand.dones.sum(dim=0) >= 2).any(), "and a step with several ends (their order matters)"
    fresh = TableLatents(table)
    pooled = pooled_rollout(agent, start, 0.6, fresh, pool=len(table))
    assert fresh.calls == 1 and on_demand.fresh_reused is None and int(pooled.fresh_reused) == 0
    for name in ("z", "actions", "rewards", "discounts", "dones", "weights", "h"):
        assert torch.equal(getattr(pooled, name), getattr(on_demand, name)), name


def test_fresh_pool_reuses_its_latents_when_too_small(agent: Agent) -> None:
    start = make_start(agent.cfg, 16, seed=3)
    pool = 4
    small = random_latents(agent.cfg, pool, torch.Generator().manual_seed(7))
    # The on-demand path over a table of 4 rows cycles through them exactly as a pool of 4 does.
    on_demand = pooled_rollout(agent, start, 0.6, TableLatents(small), pool=0)
    pooled = pooled_rollout(agent, start, 0.6, TableLatents(small), pool=pool)
    ends = int(on_demand.dones.sum())
    assert ends > pool
    assert int(pooled.fresh_reused) == ends - pool
    assert torch.equal(pooled.z, on_demand.z) and torch.equal(pooled.h, on_demand.h)


def test_fresh_pool_update_has_no_host_sync() -> None:
    """A whole update with a pool, fused optimisers and no logging reads nothing back from the device."""
    from twm.perf.bench import synthetic_batch, synthetic_obs_sampler
    from twm.perf.op_count import CountOps
    from twm.update import Learner

    torch.manual_seed(0)
    cfg = smoke("actor_critic.fresh_pool=64", "actor_critic.discount_threshold=0.6")
    learner = Learner(Agent(cfg, NUM_ACTIONS))
    batch = synthetic_batch(cfg, NUM_ACTIONS, "cpu", 0)
    sample_obs = synthetic_obs_sampler(cfg, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    learner.update(batch, sample_obs, gen)  # the optimisers' state is created here
    with CountOps() as counter:
        metrics = learner.update(batch, sample_obs, gen)
    assert counter.counts.syncs == 0, counter.counts.sync_ops
    assert metrics["ac/imagined_dones"] > 0, "the test needs imagined episode ends"
