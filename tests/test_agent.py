"""The agent's update: every network learns, and the actor-critic step follows its advantages."""

from __future__ import annotations

import numpy as np
import torch

from builders import catch_replay
from twm.agent import Agent
from twm.config_files import load_config
from twm.imagination import Rollout
from twm.models.batch import TorchSequenceBatch
from twm.replay import ReplayBuffer
from twm.update import Learner

NUM_ACTIONS = 3


def filled_replay(steps: int = 200) -> ReplayBuffer:
    return catch_replay(steps)


def test_update_changes_every_network_and_reports_metrics() -> None:
    cfg = load_config("smoke", ["env.game=catch"])
    torch.manual_seed(0)
    agent = Agent(cfg, NUM_ACTIONS)
    replay = filled_replay()
    before = {name: p.clone() for name, p in agent.named_parameters()}
    batch = TorchSequenceBatch.from_numpy(
        replay.sample_sequences(cfg.replay.batch_size, cfg.replay.sequence_length), "cpu"
    )
    metrics = Learner(agent).update(
        batch, lambda n: torch.from_numpy(replay.sample_obs(n)), torch.Generator().manual_seed(0)
    )
    for key in ("obs/decoder_loss", "dyn/loss", "ac/actor_loss", "ac/critic_loss", "ac/return"):
        assert torch.isfinite(metrics[key]), key
    for prefix in (
        "world_model.obs_model.encoder",
        "world_model.obs_model.decoder",
        "world_model.dynamics",
        "actor",
        "critic",
    ):
        changed = [not torch.equal(before[n], p) for n, p in agent.named_parameters() if n.startswith(prefix)]
        assert any(changed), f"{prefix} did not change"


def test_actor_critic_step_prefers_the_rewarded_action() -> None:
    """A bandit in latent space: action 0 pays 1, others 0. The actor's probability of 0 must rise
    and the critic must approach the λ-return of the policy."""
    cfg = load_config(
        "smoke", ["env.game=catch", "actor_critic.actor_lr=1e-3", "actor_critic.critic_lr=1e-3"]
    )
    torch.manual_seed(0)
    agent = Agent(cfg, NUM_ACTIONS)
    learner = Learner(agent)
    B, H = 64, 5
    z = torch.zeros(B, H + 1, cfg.latent_dim)
    z[..., :: cfg.obs_model.classes] = 1.0  # every categorical in class 0: one fixed latent
    gen = torch.Generator().manual_seed(0)

    def p0() -> float:
        with torch.no_grad():
            return float(torch.softmax(agent.actor(z[0, 0]), -1)[0])

    start = p0()
    for _ in range(60):
        actions = agent.actor.sample(z[:, :-1], gen)
        rollout = Rollout(
            z=z,
            actions=actions,
            rewards=(actions == 0).float(),
            discounts=torch.full((B, H), 0.9),
            dones=torch.zeros(B, H, dtype=torch.bool),
            weights=torch.ones(B, H),
            h=torch.zeros(B, H, 1),
        )
        # The actor-critic part of an update (``Learner.update``) on this rollout.
        losses = agent.actor_critic_losses(rollout)
        learner.step([losses.critic_loss, losses.actor_loss], ("critic", "actor"))
        agent.update_slow_critic()
    assert p0() > start + 0.2


def test_pretrain_ac_step_fits_real_returns() -> None:
    cfg = load_config("smoke", ["env.game=catch", "actor_critic.critic_lr=1e-3"])
    torch.manual_seed(0)
    agent = Agent(cfg, NUM_ACTIONS)
    replay = filled_replay()
    replay.rng = np.random.default_rng(1)
    batch = TorchSequenceBatch.from_numpy(
        replay.sample_sequences_uniform(cfg.actor_critic.num_starts, cfg.actor_critic.horizon), "cpu"
    )
    learner = Learner(agent)
    first = learner.pretrain_ac_step(batch)
    for _ in range(50):
        last = learner.pretrain_ac_step(batch)
    assert last["ac/critic_loss"] < first["ac/critic_loss"]
    # The entropy bonus keeps the pretrained policy close to uniform.
    with torch.no_grad():
        probs = torch.softmax(agent.actor(torch.zeros(1, cfg.latent_dim)), -1)
    assert float(probs.min()) > 0.2


def test_replay_value_loss_regresses_the_real_lambda_returns() -> None:
    # Known answer: λ-returns of the real steps by the textbook recursion, one sequence at a time,
    # G_t = r_t + gamma (1 - d_t) ((1 - lam) v(z_{t+1}) + lam G_{t+1}), G_T = v(z_T), against the
    # critic's values of z_0..z_{T-1}; a real episode end (d_t) stops the bootstrap.
    import math

    from twm.models.world_model import WorldModelOutput

    cfg = load_config("smoke", ["env.game=catch", "actor_critic.replay_value_coef=0.3"])
    torch.manual_seed(0)
    agent = Agent(cfg, NUM_ACTIONS)
    B, T = 3, 5
    z = torch.randn(B, T + 1, cfg.latent_dim)
    rewards = torch.tensor([[0, 1, 0, 0, -1, 0], [0, 0, 0, 1, 0, 0], [1, 0, 0, 0, 0, 1]]).float()
    terminated = torch.zeros(B, T + 1, dtype=torch.bool)
    terminated[0, 1] = True  # the first sequence's episode ends after step 1
    truncated = torch.zeros(B, T + 1, dtype=torch.bool)
    truncated[2, 3] = True  # the third's is cut by the time limit after step 3
    real = WorldModelOutput(z, torch.zeros(B, T + 1).long(), rewards, terminated, truncated, {})

    with torch.no_grad():
        v = agent.critic(z).double()
    gamma, lam = cfg.env.discount, cfg.actor_critic.lam
    total = 0.0
    for b in range(B):
        g = float(v[b, T])
        for t in range(T - 1, -1, -1):
            cont = 0.0 if (terminated[b, t] or truncated[b, t]) else gamma
            g = float(rewards[b, t]) + cont * ((1 - lam) * float(v[b, t + 1]) + lam * g)
            total += 0.5 * (g - float(v[b, t])) ** 2 + 0.5 * math.log(2 * math.pi)
    expected = total / (B * T)
    assert abs(float(agent.replay_value_loss(real).detach()) - expected) < 1e-5

    # The update adds it to the critic's loss with its weight, and logs it.
    replay = filled_replay()
    replay.rng = np.random.default_rng(1)
    learner = Learner(agent)
    batch = TorchSequenceBatch.from_numpy(replay.sample_sequences(cfg.replay.batch_size, cfg.replay.sequence_length), "cpu")
    metrics = learner.update(batch, lambda n: torch.from_numpy(replay.sample_obs(n)))
    assert float(metrics["ac/replay_value_loss"]) > 0


def test_replay_value_loss_is_refused_with_zh_inputs() -> None:
    import pytest

    from twm.config import ConfigError

    with pytest.raises(ConfigError, match="replay_value_coef needs actor_critic.inputs=z"):
        load_config("smoke", ["env.game=catch", "actor_critic.replay_value_coef=0.3", "actor_critic.inputs=zh"])


def test_greedy_acting_takes_the_most_likely_action_and_draws_nothing() -> None:
    torch.manual_seed(0)
    cfg = load_config("smoke", ["env.game=catch"])
    agent = Agent(cfg, num_actions=3)
    with torch.no_grad():  # a policy that prefers action 2, then 0, whatever it sees
        last = agent.actor.net[-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.5, -1.0, 0.8]))
    obs = np.random.default_rng(0).integers(0, 256, (64, cfg.env.frame_stack, 64, 64), dtype=np.uint8)
    generator = torch.Generator().manual_seed(1)
    state = generator.get_state()
    assert agent.act(obs, generator, greedy=True).tolist() == [2] * 64
    assert torch.equal(generator.get_state(), state)  # nothing drawn
    sampled = agent.act(obs, generator)
    assert set(sampled.tolist()) == {0, 1, 2} and not torch.equal(generator.get_state(), state)
    probs, _ = agent.policy_view(obs)
    assert probs.argmax(dim=-1).tolist() == [2] * 64  # what act saw: the mode is the likeliest action
