"""A policy that reads the transformer's state (actor_critic.inputs 'zh'): imagination, the
actor-critic losses, and acting in real games with an ActingMemory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from builders import NUM_ACTIONS, make_start, random_latents, smoke
from twm.acting import ActingMemory
from twm.agent import Agent
from twm.imagination import Rollout, imagine
from twm.training.evaluation import evaluate_agent


def agents() -> tuple[Agent, Agent]:
    """A 'z' agent and a 'zh' agent with the same world model, whose actor and critic read z exactly
    as the 'z' agent's and give h zero weight."""
    torch.manual_seed(0)
    z_agent = Agent(smoke("dynamics.memory_steps=16"), NUM_ACTIONS)
    torch.manual_seed(0)
    zh_agent = Agent(smoke("dynamics.memory_steps=16", "actor_critic.inputs=zh"), NUM_ACTIONS)
    zh_agent.world_model.load_state_dict(z_agent.world_model.state_dict())
    for name in ("actor", "critic"):
        zh_net, z_net = getattr(zh_agent, name).net, getattr(z_agent, name).net
        zh_net.load_state_dict({k: v for k, v in z_net.state_dict().items() if k != "0.weight"}, strict=False)
        with torch.no_grad():
            zh_net[0].weight.zero_()
            zh_net[0].weight[:, : z_agent.cfg.latent_dim] = z_net[0].weight
    return z_agent, zh_agent


def test_zh_losses_equal_the_z_losses_when_h_is_ignored() -> None:
    z_agent, zh_agent = agents()
    gen = torch.Generator().manual_seed(3)
    B, H, d = 6, 5, zh_agent.cfg.dynamics.d_model
    z = random_latents(z_agent.cfg, B * (H + 1), gen).reshape(B, H + 1, -1)
    common = dict(
        actions=torch.randint(NUM_ACTIONS, (B, H), generator=gen),
        rewards=torch.randn(B, H, generator=gen),
        discounts=torch.rand(B, H, generator=gen),
        dones=torch.rand(B, H, generator=gen) < 0.2,
        weights=torch.rand(B, H, generator=gen),
        h=torch.randn(B, H, d, generator=gen),
    )
    plain = Rollout(z=z, **common)
    with_h = Rollout(z=z, h_prev=torch.randn(B, H + 1, d, generator=gen), **common)
    c_z, a_z, m_z = z_agent.actor_critic_losses(plain)
    c_zh, a_zh, m_zh = zh_agent.actor_critic_losses(with_h)
    # The λ-returns (ac/return), values and advantages, then both losses.
    for key in ("ac/return", "ac/value", "ac/advantage_abs", "ac/reinforce"):
        torch.testing.assert_close(m_zh[key], m_z[key], rtol=1e-6, atol=1e-7, msg=key)
    torch.testing.assert_close(c_zh, c_z)
    torch.testing.assert_close(a_zh, a_z)
    # h does count once the weights read it.
    with torch.no_grad():
        zh_agent.critic.net[0].weight.normal_()
    assert not torch.allclose(zh_agent.actor_critic_losses(with_h)[2]["ac/return"], m_z["ac/return"])


def test_imagined_h_prev_is_the_previous_h_and_zero_after_ends() -> None:
    _, agent = agents()
    start = make_start(agent.cfg, 16, seed=2)
    wm = agent.world_model
    fresh_gen = torch.Generator().manual_seed(7)
    out = imagine(
        wm.dynamics, wm.obs_model, agent.actor, start, 8, 0.7,
        lambda n: random_latents(agent.cfg, n, fresh_gen), torch.Generator().manual_seed(1),
        policy_reads_h=True,
    )  # fmt: skip
    assert out.h_prev is not None and out.h_prev.shape == (16, 9, agent.cfg.dynamics.d_model)
    assert out.dones.any() and start.context_done.any()
    assert (out.h_prev[start.context_done, 0] == 0).all()
    assert (out.h_prev[~start.context_done, 0].abs().sum(-1) > 0).all()
    ended = out.dones  # (B, H): z_{t+1} is a fresh start
    torch.testing.assert_close(out.h_prev[:, 1:][~ended], out.h[~ended])
    assert (out.h_prev[:, 1:][ended] == 0).all()


def test_acting_step_by_step_equals_one_pass_over_the_sequence() -> None:
    _, agent = agents()
    agent.eval()
    T, gen = 7, torch.Generator().manual_seed(5)
    z = random_latents(agent.cfg, T, gen)[None]  # (1, T, Z)
    actions = torch.randint(NUM_ACTIONS, (1, T), generator=gen)
    rewards = torch.randn(1, T, generator=gen)
    dones = torch.zeros(1, T, dtype=torch.bool)
    dones[0, 3] = True  # step 3 ends an episode: step 4 starts a new one
    memory = ActingMemory(1, agent.cfg.dynamics.d_model)
    h_prevs = []
    for t in range(T):
        h_prevs.append(memory.h_prev.clone())
        memory.advance(agent.world_model.dynamics, z[:, t], actions[:, t])
        memory.record(rewards[:, t], dones[:, t])
    with torch.no_grad():
        full = agent.world_model.dynamics(z, actions, rewards[:, :-1], dones[:, :-1])
    expected = torch.cat([torch.zeros(1, 1, full.h.shape[-1]), full.h[:, :-1]], dim=1)  # h_{t-1}
    expected[:, 4] = 0.0  # after the end
    torch.testing.assert_close(torch.stack(h_prevs, dim=1), expected, rtol=1e-5, atol=1e-6)
    # Through a checkpoint: the state round-trips.
    copy = ActingMemory(1, agent.cfg.dynamics.d_model)
    copy.load_state_dict(memory.state_dict())
    assert torch.equal(copy.h_prev, memory.h_prev) and copy.memory is not None and memory.memory is not None
    assert all(torch.equal(a, b) for a, b in zip(copy.memory.hiddens, memory.memory.hiddens, strict=True))


def test_acting_needs_a_memory_and_keeps_rows_of_active_slots() -> None:
    _, agent = agents()
    obs = np.zeros((3, agent.cfg.image_channels, 64, 64), dtype=np.uint8)
    with pytest.raises(ValueError, match="ActingMemory"):
        agent.act(obs)
    memory = agent.acting_memory(3)
    assert memory is not None
    agent.act(obs, None, memory)
    memory.record(np.ones(3), np.array([False, True, False]))
    h = memory.h_prev.clone()
    memory.keep([0, 2])
    assert torch.equal(memory.h_prev, h[[0, 2]]) and memory.memory is not None
    assert memory.memory.episode.shape[0] == 2 and memory.rows == 2


def test_acting_runs_its_networks_in_eval_mode_and_restores_every_flag() -> None:
    # act switches only the networks it runs to eval mode (ActingMemory.advance switches the
    # transformer, whose dropout would change h). Acting from training mode equals acting with the
    # whole agent in eval mode, for the same observations, memories and generator, and every
    # module's flag is as it was afterwards.
    _, agent = agents()
    obs = np.random.default_rng(0).integers(0, 256, (2, agent.cfg.image_channels, 64, 64), dtype=np.uint8)
    results = []
    for whole_agent_eval in (False, True):
        agent.train(not whole_agent_eval)
        agent.critic.eval()  # a mixed state, to see that it is restored as it was
        flags = [m.training for m in agent.modules()]
        memory, gen = agent.acting_memory(2), torch.Generator().manual_seed(1)
        assert memory is not None
        steps = []
        for _ in range(4):
            steps.append((agent.act(obs, gen, memory), memory.h_prev.clone()))
            memory.record(np.zeros(2), np.array([False, False]))
        assert [m.training for m in agent.modules()] == flags
        results.append(steps)
    for (a, h), (b, h_eval) in zip(*results, strict=True):
        assert np.array_equal(a, b) and torch.equal(h, h_eval)
    agent.train()
    memory = agent.acting_memory(2)
    assert memory is not None
    agent.act(obs, None, memory)
    assert agent.world_model.dynamics.training and all(m.training for m in agent.modules())


def test_evaluation_of_a_zh_agent_plays_every_episode() -> None:
    _, agent = agents()
    # 5 episodes on 3 slots: slots finish their shares at different times, and the rows follow them.
    result = evaluate_agent(agent, agent.cfg.env, num_episodes=5, seed=0, num_envs=3)
    assert len(result.scores) == 5
